"""The documented path, run as written: every ``sh`` block of README.md and docs/*.md, command by
command, in one shell-like session on a fresh data directory, as a new operator would type them.

The README's own ``cdrflow kafka start`` starts the project's broker (in the data directory, on
a free port, as the integration suite's broker is started) and the database is the embedded
default (SQLite in the data directory): no setting but ports and a namespace is given.
``cdrflow up &`` runs in the background until the end, then gets Ctrl-C (SIGINT).

What the docs leave to the reader is kept here, in the open:
- ``DOC_FILES``: the files the commands name (``gamma.csv``, ``R.csv``, …), made from the
  project's samples and format fixtures under exactly those names;
- ``PLACEHOLDERS``: words that stand for a value (``FILE_ID``, the admin API's address);
  ``FILE_ID`` is made real by the commands an operator would have run to get such a file;
- ``SETUP``: state a block assumes (a carrier it names, a customer's billing email);
- ``NOT_RUN``: the blocks that can't run in a test, each with its reason.

A command that exits non-zero fails the test with the doc and line it came from, the command
as written and as run, and its output.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from cdrflow.client import AdminClient
from cdrflow.localkafka import free_port
from services.invoicer.commands import InvoicesClient
from tests.docs_commands import REPO, Block, Command, commands, sh_blocks

SAMPLES = REPO / "cdrflow" / "samples"
FORMATS = REPO / "tests" / "fixtures" / "formats"

DOC_FILES = {
    "rates-business.csv": SAMPLES / "rates-business.csv",
    "wholesale-gamma.csv": SAMPLES / "wholesale-gamma.csv",
    # a carrier added as gamma reads its files in Gamma's own format (carriers add: "the built-in
    # format of that name"), so the files uploaded for gamma are Gamma files
    "gamma.csv": FORMATS / "gamma-cdr-20261031.csv",
    "gamma-20261001.csv": FORMATS / "gamma-cdr-20261031.csv",
    # offline rating: a retail rate sheet and a file in the default format (generic-cdr)
    "R.csv": SAMPLES / "rates-business.csv",
    "CDR.csv": SAMPLES / "gamma-cdr-20261015.csv",
}

NOT_RUN = {
    ("README.md", "./scripts/demo.sh"):
        "the two set-up scripts: test.sh runs this very suite (it would run itself), demo.sh installs "
        "the virtualenv and runs 'cdrflow demo' on the default ports 9092/8640/8025",
    ("README.md", ".venv/bin/python bench/bench_rate.py"):
        "benchmarks load the machine for minutes on purpose; tests/*/test_bench_smoke.py run them small",
    ("docs/collection.md", "export CDRFLOW_SECRET_KEY=$(cdrflow sources keygen)"):
        "needs the carrier's SFTP server (sftp.gamma.example) and a key passphrase typed at a terminal; "
        "tests/integration/test_collector.py runs sources add/trust and collect against real SFTP servers",
}

SETUP = {
    ("docs/mailgate.md", "cdrflow mail rules gamma"): [
        'cdrflow carriers add btw --name "BT Wholesale"',  # the block's second carrier
    ],
    ("docs/billing.md", "cdrflow invoices deliveries INV-000001"): [
        # 'send' with no --to mails the customer's billing email; the README's customer has none
        'cdrflow customers add ACME --name "Acme Widgets Ltd" --tariff business --email accounts@acme.example',
    ],
}

SETTLED = {"held", "discarded", "rated", "information", "failed", "reversed"}
"""File statuses a file stays in until an operator acts; the others are on the way."""

WAIT_SECONDS = 60.0
COMMAND_SECONDS = 120.0
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def block_key(block: Block) -> tuple[str, str]:
    """A block named by its document and the start of its first command (line numbers drift)."""
    first = commands(block)[0].text
    return str(block.doc.relative_to(REPO)), first


def _keyed(table: dict[tuple[str, str], Any], block: Block) -> Any:
    doc, first = block_key(block)
    return next((v for (d, start), v in table.items() if d == doc and first.startswith(start)), None)


class Session:
    """One operator's shell: a working directory holding the docs' files, the environment of a
    fresh data directory, and the background ``cdrflow up``."""

    def __init__(self, work: Path, env: dict[str, str], admin_url: str) -> None:
        self.work, self.env, self.admin_url = work, env, admin_url
        self.admin_token = Path(env["CDRFLOW_DATA_DIR"]) / "admin.token"  # written by the admin service (docs/access.md)
        self.up: subprocess.Popen[bytes] | None = None
        self.up_log = work / "cdrflow-up.log"
        self.copies = 0
        self.taken: set[str] = set()
        self.ran: list[tuple[str, float]] = []

    # --- running ---------------------------------------------------------------------

    def run(self, text: str, where: str, written: str | None = None) -> str:
        """Run ``text`` with bash; anything but exit 0 fails the test, saying where it came from."""
        started = time.monotonic()
        try:
            done = subprocess.run(["bash", "-c", text], cwd=self.work, env=self.env, capture_output=True,
                                  text=True, timeout=COMMAND_SECONDS)
        except subprocess.TimeoutExpired as exc:
            raise AssertionError(self._report(where, written, text, f"still running after {COMMAND_SECONDS}s",
                                              exc.stdout, exc.stderr)) from None
        self.ran.append((where, time.monotonic() - started))
        if done.returncode != 0:
            raise AssertionError(self._report(where, written, text, f"exit status {done.returncode}",
                                              done.stdout, done.stderr))
        return done.stdout

    def _report(self, where: str, written: str | None, text: str, what: str, out: Any, err: Any) -> str:
        lines = [f"{where}: {what}", f"  as written: {written if written is not None else text}"]
        if written is not None and written != text:
            lines.append(f"  as run:     {text}")
        lines += [f"--- stdout ---\n{out or ''}", f"--- stderr ---\n{err or ''}"]
        if self.up_log.exists():
            lines.append(f"--- cdrflow up (last lines) ---\n{self.up_log.read_text()[-3000:]}")
        return "\n".join(lines)

    def start_up(self, text: str, where: str) -> None:
        """``cdrflow up &``: in the background, ready once the admin API answers."""
        assert self.up is None, f"{where}: a second 'cdrflow up &'"
        log = self.up_log.open("ab")
        self.up = subprocess.Popen(["bash", "-c", f"exec {text}"], cwd=self.work, env=self.env, stdout=log,
                                   stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        client = AdminClient(self.admin_url, token_file=self.admin_token)
        deadline = time.monotonic() + 90
        while not client.health():
            if self.up.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(self._report(where, None, text, "the admin API never answered", "", ""))
            time.sleep(0.3)

    def stop_up(self) -> int | None:
        """Ctrl-C, as the README says; its status (None: nothing was running)."""
        if self.up is None:
            return None
        up, self.up = self.up, None
        if up.poll() is None:
            up.send_signal(signal.SIGINT)
        try:
            return up.wait(45)
        except subprocess.TimeoutExpired:
            os.killpg(up.pid, signal.SIGKILL)  # its own session: cdrflow up and the services it ran
            up.wait()
            return up.returncode

    def wait_for(self, what: str, check: Callable[[], Any], where: str) -> Any:
        deadline = time.monotonic() + WAIT_SECONDS
        while True:
            if found := check():
                return found
            if time.monotonic() > deadline:
                raise AssertionError(self._report(where, None, "", f"timed out after {WAIT_SECONDS}s waiting for "
                                                  f"{what}", orjson.dumps(self.files(), option=orjson.OPT_INDENT_2).decode(), ""))
            time.sleep(0.5)

    def files(self) -> list[dict[str, Any]]:
        """What ``cdrflow files --json`` prints (GET /files), read in-process: polling through the
        command line would cost a Python start-up every half second."""
        return AdminClient(self.admin_url, token_file=self.admin_token).files()

    def wait_for_file(self, file_id: str, statuses: set[str], where: str) -> dict[str, Any]:
        def settled() -> dict[str, Any] | None:
            found = [f for f in self.files() if f["file_id"] == file_id]
            return found[0] if found and found[0]["status"] in statuses else None

        return self.wait_for(f"file {file_id} to be {' or '.join(sorted(statuses))}", settled, where)

    # --- what FILE_ID stands for, made as an operator would ----------------------------

    def held_file(self, where: str, *, taken: bool = True) -> str:
        """A Potential Duplicate: one held already that no command has taken, else gamma.csv's
        bytes sent again, as carriers sometimes resend a file. ``taken``: the command will
        release or discard it, so it is not offered again."""
        held = [f["file_id"] for f in self.files() if f["status"] == "held" and f["file_id"] not in self.taken]
        if held:
            file_id = held[0]
        else:
            self.copies += 1
            name = f"gamma-resent-{self.copies}.csv"
            shutil.copyfile(self.work / "gamma.csv", self.work / name)
            out = self.run(f"cdrflow upload {name} --carrier gamma --kind cdr --period daily --direction outbound",
                           f"{where} (FILE_ID: a resent file)")
            file_id = _UUID.findall(out)[0]
            self.wait_for_file(file_id, {"held"}, where)
        if taken:
            self.taken.add(file_id)
        return file_id

    def shown_file(self, where: str) -> str:
        return self.held_file(where, taken=False)  # a held file shows its candidates and the comparison

    def failed_file(self, where: str) -> str:
        """A failed file whose cause is fixed, so a retry can succeed: a BT file read with the
        wrong format, then the format its error names set (the error's own advice)."""
        setup = f"{where} (FILE_ID: a failed file)"
        self.run('cdrflow carriers add btw --name "BT Wholesale"', setup)
        self.run("cdrflow formats use btw --kind cdr --format gamma", setup)
        self.copies += 1
        name = f"btw-cdr-{self.copies}.csv"
        (self.work / name).write_bytes((SAMPLES / "btw-cdr-20261002.csv").read_bytes()
                                       + f"01632960001,02079460000,2026-10-0{self.copies % 9 + 1}T12:00:00,60\n"
                                       .encode())
        file_id = _UUID.findall(self.run(f"cdrflow upload {name} --carrier btw --direction outbound", setup))[0]
        failed = self.wait_for_file(file_id, {"failed"}, setup)
        assert "cdrflow formats use btw --kind cdr --format generic-cdr" in failed["status_reason"], failed
        self.run("cdrflow formats use btw --kind cdr --format generic-cdr", setup)
        return file_id


FILE_ID_FOR = {
    # files <subcommand> FILE_ID: (how to get such a file, the status the command leads to)
    "show": (Session.shown_file, None),
    "release": (Session.held_file, {"rated"}),
    "discard": (Session.held_file, {"discarded"}),
    "retry": (Session.failed_file, {"rated"}),
}


def substitute(session: Session, command: Command) -> tuple[str, set[str] | None, str | None]:
    """The command as run: placeholders replaced. Also the status its file must reach, and that file."""
    text = command.text.replace("127.0.0.1:8640", session.admin_url.removeprefix("http://"))
    if "FILE_ID" not in text:
        return text, None, None
    verb = re.search(r"\bfiles (\w+) FILE_ID", text)
    assert verb and verb.group(1) in FILE_ID_FOR, f"{command.where}: no value known for FILE_ID in {text!r}"
    make, leads_to = FILE_ID_FOR[verb.group(1)]
    file_id = make(session, command.where)
    return text.replace("FILE_ID", file_id), leads_to, file_id


def run_command(session: Session, command: Command) -> None:
    text, leads_to, file_id = substitute(session, command)
    if command.background:
        assert text == "cdrflow up", f"{command.where}: only 'cdrflow up &' is run in the background, not {text!r}"
        session.start_up(text, command.where)
        return
    out = session.run(text, command.where, written=command.text)
    if file_id and leads_to:
        session.wait_for_file(file_id, leads_to, command.where)
    elif text.startswith("cdrflow upload") or (text.startswith("curl") and "/files" in text):
        session.wait_for_file(_UUID.findall(out)[0], SETTLED, command.where)  # the new file's id is printed
    elif (bill := re.match(r"cdrflow bill --customer (\S+) --period (\d{4}-\d\d)", text)) and "already" not in out:
        customer, period = bill.groups()

        def issued() -> bool:
            found = InvoicesClient(session.admin_url, token_file=session.admin_token).invoice_list(customer=customer)
            return any(i["period_start"].startswith(period) for i in found)

        session.wait_for(f"{customer}'s invoice for {period}", issued, command.where)


@pytest.fixture
def session(tmp_path: Path) -> Iterator[Session]:
    work = tmp_path / "operator"
    work.mkdir()
    for name, source in DOC_FILES.items():
        shutil.copyfile(source, work / name)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CDRFLOW_") or k == "CDRFLOW_KAFKA_LIBS"}
    admin_port = free_port()
    env |= {"CDRFLOW_DATA_DIR": str(tmp_path / "data"), "CDRFLOW_KAFKA_PORT": str(free_port()),
            "CDRFLOW_ADMIN_PORT": str(admin_port), "CDRFLOW_MAILGATE_PORT": str(free_port()),
            "CDRFLOW_NAMESPACE": "docs" + uuid.uuid4().hex[:8],
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"}
    s = Session(work, env, f"http://127.0.0.1:{admin_port}")
    try:
        yield s
    finally:
        s.stop_up()
        subprocess.run([str(Path(sys.executable).parent / "cdrflow"), "kafka", "stop"], cwd=work, env=env,
                       capture_output=True, timeout=60)


def test_not_run_and_setup_name_blocks_that_exist() -> None:
    """An entry for a block that was edited away would hide nothing but still mislead."""
    keys = [block_key(b) for b in sh_blocks()]
    for table in (NOT_RUN, SETUP):
        for doc, start in table:
            assert any(d == doc and first.startswith(start) for d, first in keys), (doc, start)


def test_documented_commands_run_as_written_on_a_fresh_data_directory(session: Session) -> None:
    started = time.monotonic()
    blocks = [b for b in sh_blocks() if _keyed(NOT_RUN, b) is None]
    assert blocks[0].doc.name == "README.md" and commands(blocks[0])[0].text.startswith("cdrflow kafka start"), \
        "the README's 'Using it' goes first: it starts the broker and the services the docs' blocks use"
    for block in blocks:
        for setup in _keyed(SETUP, block) or []:
            session.run(setup, f"{block.where} (setup)")
        for command in commands(block):
            run_command(session, command)
    listed = orjson.loads(session.run("cdrflow files --json", "the end: every file where the docs left it"))
    statuses = sorted((f["original_name"], f["status"]) for f in listed)
    # gamma.csv rated; the resend released and the failed file retried both rated; of the two
    # uploads of docs/collection.md (held as gamma.csv's duplicates) one released, one discarded
    assert ("gamma.csv", "rated") in statuses and {s for _, s in statuses} == {"rated", "discarded"}, statuses
    assert [s for _, s in statuses].count("discarded") == 1, statuses
    assert session.stop_up() == 0, "cdrflow up did not stop cleanly on Ctrl-C"
    slowest = sorted(session.ran, key=lambda r: -r[1])[:5]
    print(f"documented commands: {len(session.ran)} run in {time.monotonic() - started:.1f}s; slowest: "
          + ", ".join(f"{w} {t:.1f}s" for w, t in slowest))
