"""A rating plan: all reference data the engine needs, compiled for batch lookups.

Built from plain objects (tariffs, schedules, rate sheets, CLI entries), by the rater
service from the database and by ``cdrflow rate`` from CSV files alike.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from zoneinfo import ZoneInfo

import polars as pl

from services.rater.clis import CliDirectory, CliEntry
from services.rater.pricing import ROUNDING_MODES, divisor
from services.rater.ratesheet import DECK_SCHEMA, RateSheet
from services.rater.schedule import UK_DEFAULT, Schedule

RETAIL, WHOLESALE = "retail", "wholesale"
DEFAULT_CURRENCY = "GBP"
"""A customer's currency when the plan is not told it (as ``customers.currency`` defaults)."""


@dataclass(frozen=True)
class Tariff:
    code: str
    schedule: str = UK_DEFAULT.name
    split_bands: bool = False
    places: int = 4
    rounding: str = "half-up"
    charge_unanswered: bool = False  # price unanswered and 0 s calls (set-up, minimum) instead of 0

    def __post_init__(self) -> None:
        divisor(self.places)  # raises on places outside 0..6
        if self.rounding not in ROUNDING_MODES:
            raise ValueError(f"tariff {self.code}: rounding {self.rounding!r} is not one of {', '.join(ROUNDING_MODES)}")


WHOLESALE_TARIFF = Tariff("wholesale")
"""How carrier cost is priced from a wholesale sheet: UK schedule, 4 places half-up."""


@dataclass(frozen=True)
class SheetKey:
    """Whose sheet: a tariff's retail sheet (optionally for one carrier) or a carrier's wholesale sheet."""

    kind: str  # retail | wholesale
    owner: str  # tariff code (retail) or carrier code (wholesale)
    direction: str  # outbound | inbound
    carrier: str = ""  # retail only: the carrier this sheet overrides the tariff for


@dataclass
class RatingPlan:
    """The reference data, compiled once into tables the engine indexes by integer:

    - ``deck``: every sheet's rows with ``sheet_id`` and ``_r`` (the row's index); a call's rate
      is found as an ``_r``, and its columns are then gathered by it;
    - ``prefix_decks[(sheet_id, length)]``: the dial-prefix codes of one sheet and length;
    - ``rate_by_band`` / ``setup_by_band``: each row's peak, offpeak, weekend rate (set-up) at
      ``band·len(deck) + _r`` (band: index into ``BANDS``), see ``band_row``;
    - ``band_table``: every schedule's band per minute of the week, schedule ``k`` at ``k·WEEK``;
    - ``customer_table``: per customer of ``directory.customers`` (same order), its tariff's terms
      and its currency (``currencies``, else ``DEFAULT_CURRENCY``), gathered per call by the
      call's customer index: a matched call says the currency of its charge, an unmatched one null.
    """

    zone: ZoneInfo
    tariffs: dict[str, Tariff]
    customers: dict[str, str]  # customer → tariff code
    clis: list[CliEntry] | pl.DataFrame  # entries, or a table as ``clis.cli_table`` reads a customers file
    sheets: dict[SheetKey, RateSheet]
    schedules: dict[str, Schedule] = field(default_factory=dict)
    country_code: str = "44"
    currencies: dict[str, str] = field(default_factory=dict)  # customer → ISO 4217 code of its charges

    def __post_init__(self) -> None:
        self.schedules = {UK_DEFAULT.name: UK_DEFAULT} | self.schedules
        missing = {t.schedule for t in self.tariffs.values()} - set(self.schedules)
        if missing:
            raise ValueError(f"tariffs name unknown schedule(s): {', '.join(sorted(missing))}")
        self.directory = CliDirectory.from_table(self.clis) if isinstance(self.clis, pl.DataFrame) \
            else CliDirectory(self.clis)
        self.sheet_ids = {key: n for n, key in enumerate(self.sheets)}
        decks = [s.deck.with_columns(sheet_id=pl.lit(self.sheet_ids[k], dtype=pl.Int32)) for k, s in self.sheets.items()]
        self.deck = (pl.concat(decks) if decks else pl.DataFrame(schema={**DECK_SCHEMA, "sheet_id": pl.Int32})) \
            .with_row_index("_r")
        self.has_versions = self.deck.select(pl.struct("sheet_id", "code").is_duplicated().any()).item() or False
        prefixes = self.deck.filter(pl.col("is_prefix")).with_columns(length=pl.col("code").str.len_chars())
        self.prefix_lengths = sorted(set(prefixes["length"].to_list()), reverse=True)
        self.prefix_decks = {(sheet_id, length): part.select("code", "_r", "effective_from")
                             for (sheet_id, length), part in prefixes.partition_by(["sheet_id", "length"],
                                                                                  as_dict=True).items()}
        self.rate_by_band = self._by_band("peak", "offpeak", "weekend")
        self.setup_by_band = self._by_band("peak_setup", "offpeak_setup", "weekend_setup")
        self.schedule_names = list(self.schedules)
        self.band_table = pl.Series("band", [b for name in self.schedule_names for b in self.schedules[name].table],
                                    dtype=pl.UInt32)
        self.customer_table = self._customer_table()
        self._sheets_by_carrier: dict[str, pl.DataFrame] = {}

    def _by_band(self, *columns: str) -> pl.Series:
        return pl.concat([self.deck[c] for c in columns]).rechunk()

    def _customer_table(self) -> pl.DataFrame:
        """Per directory customer (in its order): tariff, schedule (index into ``schedule_names``),
        split_bands, places, rounding, charge_unanswered (all null for a customer without a
        tariff), and currency (never null: a customer without a tariff still has one)."""
        rows = []
        for customer in self.directory.customers.to_list():
            code = self.customers.get(customer)
            tariff = None if code is None else self.tariffs.get(code, Tariff(code))
            rows.append((code, *((None,) * 5 if tariff is None else (
                self.schedule_names.index(tariff.schedule), tariff.split_bands, tariff.places, tariff.rounding,
                tariff.charge_unanswered))))
        customers = self.directory.customers
        return pl.DataFrame(rows, orient="row", schema={
            "tariff": pl.String, "schedule": pl.UInt32, "split_bands": pl.Boolean, "places": pl.Int64,
            "rounding": pl.String, "charge_unanswered": pl.Boolean}).with_columns(
            customer=customers,
            currency=customers.replace_strict(self.currencies, default=DEFAULT_CURRENCY, return_dtype=pl.String))

    def customer_sheets(self, carrier: str) -> pl.DataFrame:
        """Per directory customer: the sheet ids of its tariff, ``{carrier,base}_sheet_{outbound,inbound}``:
        the tariff's sheet for ``carrier``'s calls and its own sheet (null where there is none)."""
        if carrier not in self._sheets_by_carrier:
            def sheet(tariff: str | None, direction: str, for_carrier: str) -> int | None:
                return self.sheet_ids.get(SheetKey(RETAIL, tariff, direction, for_carrier)) if tariff else None

            tariffs = self.customer_table["tariff"].to_list()
            self._sheets_by_carrier[carrier] = pl.DataFrame(
                {f"{kind}_sheet_{direction}": [sheet(t, direction, for_carrier) for t in tariffs]
                 for kind, for_carrier in (("carrier", carrier), ("base", "")) for direction in ("outbound", "inbound")},
                schema={f"{k}_sheet_{d}": pl.Int32 for k in ("carrier", "base") for d in ("outbound", "inbound")})
        return self._sheets_by_carrier[carrier]

    def band_row(self, band: pl.Expr, row: pl.Expr) -> pl.Expr:
        """Index into ``rate_by_band`` / ``setup_by_band`` of rate row ``row`` in ``band``."""
        return band.cast(pl.Int64) * self.deck.height + row

    def wholesale_sheet(self, carrier: str, direction: str) -> int | None:
        return self.sheet_ids.get(SheetKey(WHOLESALE, carrier, direction))
