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
from services.rater.ratesheet import RateSheet
from services.rater.schedule import UK_DEFAULT, Schedule

RETAIL, WHOLESALE = "retail", "wholesale"


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
    zone: ZoneInfo
    tariffs: dict[str, Tariff]
    customers: dict[str, str]  # customer → tariff code
    clis: list[CliEntry]
    sheets: dict[SheetKey, RateSheet]
    schedules: dict[str, Schedule] = field(default_factory=dict)
    country_code: str = "44"

    def __post_init__(self) -> None:
        self.schedules = {UK_DEFAULT.name: UK_DEFAULT} | self.schedules
        self.directory = CliDirectory(self.clis)
        self.sheet_ids = {key: n for n, key in enumerate(self.sheets)}
        decks = [s.deck.with_columns(sheet_id=pl.lit(self.sheet_ids[k], dtype=pl.Int32)) for k, s in self.sheets.items()]
        self.deck = pl.concat(decks) if decks else pl.DataFrame(schema={"sheet_id": pl.Int32, "code": pl.String})
        self.has_versions = bool(decks) and self.deck.select(pl.struct("sheet_id", "code").is_duplicated().any()).item()
        prefixes = self.deck.filter(pl.col("is_prefix")) if decks else self.deck
        self.prefix_lengths = sorted(set(prefixes["code"].str.len_chars().to_list()), reverse=True) if decks else []
        self.prefix_decks = {n: prefixes.filter(pl.col("code").str.len_chars() == n) for n in self.prefix_lengths}
        missing = {t.schedule for t in self.tariffs.values()} - set(self.schedules)
        if missing:
            raise ValueError(f"tariffs name unknown schedule(s): {', '.join(sorted(missing))}")
        self.tariff_table = pl.DataFrame(
            [{"customer": c, "tariff": t, **self._params(self.tariffs.get(t, Tariff(t)))}
             for c, t in self.customers.items()],
            schema={"customer": pl.String, "tariff": pl.String, "schedule": pl.String, "split_bands": pl.Boolean,
                    "places": pl.Int64, "rounding": pl.String, "charge_unanswered": pl.Boolean},
        )

    @staticmethod
    def _params(tariff: Tariff) -> dict[str, object]:
        return {"schedule": tariff.schedule, "split_bands": tariff.split_bands, "places": tariff.places,
                "rounding": tariff.rounding, "charge_unanswered": tariff.charge_unanswered}

    def sheet_table(self) -> pl.DataFrame:
        """(kind, owner, direction, carrier) → sheet_id, for joining calls to their sheets."""
        return pl.DataFrame(
            [{"kind": k.kind, "owner": k.owner, "direction": k.direction, "carrier": k.carrier, "sheet_id": i}
             for k, i in self.sheet_ids.items()],
            schema={"kind": pl.String, "owner": pl.String, "direction": pl.String, "carrier": pl.String,
                    "sheet_id": pl.Int32},
        )
