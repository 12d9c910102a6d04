"""Every command the documentation shows is one the command line has: each ``sh`` block is valid
shell, and every ``cdrflow`` line of any block (commands and synopses alike) names a real
subcommand with options it really takes. No servers: ``--help`` through click's CliRunner."""

from __future__ import annotations

import shlex
import subprocess

import click
import pytest
from click.testing import CliRunner

from cdrflow_app.cli import main
from tests.docs_commands import (REPO, Block, Invocation, all_blocks, blocks, commands, inline_invocations, invocations,
                                  sh_blocks)

ALL_INVOCATIONS = [inv for b in all_blocks() for inv in invocations(b)]


def resolve(inv: Invocation, whole: bool = True) -> tuple[list[str], click.Command]:
    """The subcommand path ``inv`` names and its click command; an error says which word is not one.
    ``whole``: the invocation is a whole command (a group alone must be one that runs alone)."""
    path: list[str] = []
    command: click.Command = main
    for word in inv.words:
        if not isinstance(command, click.Group) or word.startswith("-"):
            break
        sub = command.commands.get(word)
        if sub is None:
            if command.invoke_without_command:
                break  # an argument of a group that also runs alone (cdrflow files …)
            raise AssertionError(f"{inv.where}: 'cdrflow {' '.join(path + [word])}' is not a command; "
                                 f"'cdrflow {' '.join(path)}' has: {', '.join(sorted(command.commands))}")
        path.append(word)
        command = sub
    if whole and isinstance(command, click.Group) and not command.invoke_without_command:
        raise AssertionError(f"{inv.where}: 'cdrflow {' '.join(path)}' needs a subcommand: "
                             f"{', '.join(sorted(command.commands))}")
    return path, command


def option_names(command: click.Command) -> set[str]:
    names = {"--help"}
    for param in command.params:
        if isinstance(param, click.Option):
            names.update(param.opts)
            names.update(param.secondary_opts)
    return names


def test_the_readme_using_it_block_is_found_with_its_background_up() -> None:
    readme = [b for b in blocks(REPO / "README.md") if b.lang == "sh"]
    using_it = [b for b in readme if any(c.text.startswith("cdrflow kafka start") for c in commands(b))]
    assert len(using_it) == 1, [b.where for b in readme]
    cmds = commands(using_it[0])
    assert [c.text for c in cmds if c.background] == ["cdrflow up"]
    release = next(c for c in cmds if c.text.startswith("cdrflow files release"))
    assert release.text == 'cdrflow files release FILE_ID --reason "checked: new calls"'  # comment dropped
    assert release.line == using_it[0].line + 1 + cmds.index(release)


def test_continuations_comments_and_subshells_are_read_as_the_shell_reads_them(tmp_path) -> None:
    doc = tmp_path / "x.md"
    doc.write_text("text\n```sh\nexport K=$(cdrflow sources keygen)   # once\n"
                   "cdrflow sources add s --rule 'a#b=cdr' \\\n    --interval 300\n```\n"
                   "```\ncdrflow bill --customer ACME [--all] | --schedule monthly:15\n"
                   "             [--period 2026-11]\nPOST /billing-runs\n```\n")
    sh, plain = blocks(doc)
    assert [(c.line, c.text) for c in commands(sh)] == [
        (3, "export K=$(cdrflow sources keygen)"),
        (4, "cdrflow sources add s --rule 'a#b=cdr' --interval 300")]
    assert [(i.words, i.options) for i in invocations(sh)] == [
        (("sources", "keygen"), ()),
        (("sources", "add", "s", "--rule", "a#b=cdr", "--interval", "300"), ("--rule", "--interval"))]
    assert [(i.where, i.options) for i in invocations(plain)] == [
        (f"{doc}:8", ("--customer", "--all", "--schedule", "--period"))]


@pytest.mark.parametrize("block", sh_blocks(), ids=lambda b: b.where)
def test_sh_block_is_valid_shell(block: Block) -> None:
    checked = subprocess.run(["bash", "-n"], input=block.text, capture_output=True, text=True)
    assert checked.returncode == 0, f"{block.where}: bash -n says:\n{checked.stderr}"
    for command in commands(block):
        shlex.split(command.text)  # raises on an unbalanced quote


@pytest.mark.parametrize("inv", ALL_INVOCATIONS, ids=lambda i: f"{i.where} {' '.join(i.words[:2])}")
def test_documented_cdrflow_command_exists_with_its_options(inv: Invocation) -> None:
    path, command = resolve(inv)
    unknown = [o for o in inv.options if o not in option_names(command)]
    assert not unknown, (f"{inv.where}: 'cdrflow {' '.join(path)}' has no option {', '.join(unknown)}; "
                         f"it takes {', '.join(sorted(option_names(command)))}")
    missing = [p.opts[-1] for p in command.params
               if isinstance(p, click.Option) and p.required and not set(p.opts) & set(inv.options)]
    assert not missing, f"{inv.where}: 'cdrflow {' '.join(path)}' needs {', '.join(missing)}, which the doc leaves out"
    result = CliRunner().invoke(main, [*path, "--help"])
    assert result.exit_code == 0, f"{inv.where}: cdrflow {' '.join(path)} --help:\n{result.output}"


INLINE = inline_invocations()


@pytest.mark.parametrize("inv", INLINE, ids=lambda i: f"{i.where} {' '.join(i.words[:2])}")
def test_command_named_in_the_prose_exists_with_the_options_it_names(inv: Invocation) -> None:
    path, command = resolve(inv, whole=False)
    unknown = [o for o in inv.options if o not in option_names(command)]
    assert not unknown, (f"{inv.where}: 'cdrflow {' '.join(path)}' has no option {', '.join(unknown)}; "
                         f"it takes {', '.join(sorted(option_names(command)))}")


def test_the_docs_name_many_commands() -> None:
    """The extractor finding (almost) nothing would make the tests above pass for nothing."""
    assert len(ALL_INVOCATIONS) >= 40 and len(INLINE) >= 50
    assert {inv.words[0] for inv in ALL_INVOCATIONS} >= {"kafka", "files", "upload", "invoices", "bill", "formats"}


def test_the_readme_lists_every_file_status_in_its_order():
    from cdrflow.filestatus import FILE_STATUSES

    line = next(line for line in (REPO / "README.md").read_text().splitlines()
                if line.startswith("cdrflow files ") and "# statuses:" in line)
    assert [word.strip() for word in line.split("# statuses:")[1].split(",")] == list(FILE_STATUSES)
