"""Invoice arithmetic: lines in minor units, VAT per rate, totals (pure functions, no database).

The rules, in the order they apply (docs/billing.md works an example through them):

1. An invoice line's amount is an integer number of the currency's *minor units* (pennies
   for GBP). Nothing finer than a minor unit is ever printed or added up on an invoice.
2. The "Call Charges" line is the exact sum of its calls' charges (integer micros,
   millionths of the currency unit, as rated) rounded ONCE, half up (away from zero at
   exactly half a minor unit), to the minor unit: ``call_charges_minor``. Calls are never
   rounded one by one, so the line differs from the exact sum by less than half a penny.
3. The net is the sum of the lines' amounts.
4. VAT is computed per tax rate on the net of that rate's lines, and rounded once, half
   up, to the minor unit: not per line, so the VAT is within half a penny of the exact
   VAT on each rate's net.
5. The total is the net plus the VAT of every rate.

Money stays exact throughout: ``int`` minor units and ``Decimal`` rates, never float.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from types import MappingProxyType

from cdrflow.errors import ConfigurationError, InputError
from cdrflow.money import MoneyError, to_money

CALL_CHARGES = "Call Charges"
MICROS_EXPONENT = 6  # rated charges are integer millionths of the currency unit (cdrflow.money)


class UnknownTaxCodeError(ConfigurationError):
    """A line names a tax code that the customer's tax rates don't define."""

    def __init__(self, code: str, known: Iterable[str]) -> None:
        self.code = code
        super().__init__(f"tax code {code!r} is not one of the customer's tax rates "
                         f"({', '.join(sorted(known))}): add the rate or correct the line")


class UnknownCurrencyError(ConfigurationError):
    """A customer's currency is not in the table of currencies cdrflow invoices in."""

    def __init__(self, code: str) -> None:
        self.code = code
        super().__init__(f"currency {code!r} is not supported: use one of {', '.join(CURRENCIES)}")


# --- currencies --------------------------------------------------------------------------


@dataclass(frozen=True)
class Currency:
    """A currency an invoice is issued in; ``exponent`` is the number of minor-unit places."""

    code: str  # ISO 4217
    symbol: str
    exponent: int


# Deliberately small and explicit: a currency is added here, with its exponent, when a
# customer needs it, rather than guessed from a locale database.
CURRENCIES: Mapping[str, Currency] = MappingProxyType({
    "GBP": Currency("GBP", "£", 2),
    "EUR": Currency("EUR", "€", 2),
    "USD": Currency("USD", "$", 2),
})
GBP = CURRENCIES["GBP"]


def currency(code: str) -> Currency:
    """The currency called ``code`` ("GBP"); a customer's currency defaults to GBP."""
    try:
        return CURRENCIES[code.strip().upper()]
    except KeyError:
        raise UnknownCurrencyError(code) from None


# --- tax rates ---------------------------------------------------------------------------


@dataclass(frozen=True)
class TaxRate:
    """A VAT rate lines can be taxed at; ``rate`` is a fraction (0.20 is 20%).

    Zero-rated and exempt lines both carry no VAT, but an invoice must tell them apart:
    an exempt supply is outside VAT, a zero-rated one is taxed at 0%.
    """

    code: str
    rate: Decimal
    exempt: bool = False

    def __post_init__(self) -> None:
        rate = to_money(self.rate)  # refuses float: a rate must be exact
        if not Decimal(0) <= rate < Decimal(1):
            raise MoneyError(f"tax rate {self.code!r}: {rate} is not a fraction from 0 up to 1 (0.20 is 20%)")
        if self.exempt and rate != 0:
            raise MoneyError(f"tax rate {self.code!r} is exempt, so its rate must be 0, not {rate}")
        object.__setattr__(self, "rate", rate)

    @property
    def label(self) -> str:
        """How the rate is shown on an invoice: "20%", "0%", "Exempt"."""
        if self.exempt:
            return "Exempt"
        return f"{(self.rate * 100).normalize():f}%"


STANDARD = TaxRate("standard", Decimal("0.20"))  # UK standard-rate VAT
ZERO_RATED = TaxRate("zero", Decimal("0"))
EXEMPT = TaxRate("exempt", Decimal("0"), exempt=True)

# A customer's tax rates unless it has its own: UK VAT.
UK_RATES: Mapping[str, TaxRate] = MappingProxyType({r.code: r for r in (STANDARD, ZERO_RATED, EXEMPT)})


def tax_rates(*rates: TaxRate) -> Mapping[str, TaxRate]:
    """A customer's rate table from its rates, in the order its invoices list them."""
    table: dict[str, TaxRate] = {}
    for rate in rates:
        if rate.code in table:
            raise InputError(f"tax rate {rate.code!r} is given twice")
        table[rate.code] = rate
    return MappingProxyType(table)


# --- lines and totals --------------------------------------------------------------------


def _require_int(name: str, value: object) -> None:
    if not isinstance(value, int) or isinstance(value, bool):
        raise MoneyError(f"{name} must be an int of minor units, not {value!r}")


@dataclass(frozen=True)
class InvoiceLine:
    """One line of an invoice; ``amount_minor`` is the line's whole amount in minor units."""

    description: str
    quantity: int
    amount_minor: int
    tax_code: str = STANDARD.code

    def __post_init__(self) -> None:
        if not self.description.strip():
            raise InputError("an invoice line needs a description")
        if not isinstance(self.quantity, int) or isinstance(self.quantity, bool):
            raise InputError(f"line {self.description!r}: quantity must be an int, not {self.quantity!r}")
        _require_int(f"line {self.description!r}: amount", self.amount_minor)


@dataclass(frozen=True)
class InvoiceTotals:
    """An invoice's figures in minor units; ``tax_by_rate`` maps tax code to (net, tax)."""

    net_minor: int
    tax_by_rate: Mapping[str, tuple[int, int]]
    tax_minor: int
    total_minor: int


def _round_half_up(amount: Decimal) -> int:
    """To a whole number, half away from zero: 0.5 → 1 and -0.5 → -1."""
    return int(amount.quantize(Decimal(1), rounding=ROUND_HALF_UP))


def call_charges_minor(micros_sum: int, currency: Currency = GBP) -> int:
    """The Call Charges line: the calls' exact charge (integer micros) rounded once, half up."""
    _require_int("the calls' charge in micros", micros_sum)
    return _round_half_up(Decimal(micros_sum).scaleb(currency.exponent - MICROS_EXPONENT))


def call_charges_line(call_count: int, micros_sum: int, tax_code: str = STANDARD.code,
                      currency: Currency = GBP) -> InvoiceLine:
    """The "Call Charges" line for ``call_count`` calls whose charges add up to ``micros_sum``."""
    return InvoiceLine(CALL_CHARGES, call_count, call_charges_minor(micros_sum, currency), tax_code)


def totals(lines: Iterable[InvoiceLine], rates: Mapping[str, TaxRate] = UK_RATES) -> InvoiceTotals:
    """Net, VAT per rate (each rounded once, half up) and total of an invoice's lines.

    ``tax_by_rate`` lists only the rates that lines use, in the order of ``rates``.
    """
    net_by_code: dict[str, int] = {}
    for line in lines:
        if line.tax_code not in rates:
            raise UnknownTaxCodeError(line.tax_code, rates)
        net_by_code[line.tax_code] = net_by_code.get(line.tax_code, 0) + line.amount_minor
    tax_by_rate = {
        code: (net_by_code[code], _round_half_up(Decimal(net_by_code[code]) * rate.rate))
        for code, rate in rates.items() if code in net_by_code
    }
    net = sum(net for net, _ in tax_by_rate.values())
    tax = sum(tax for _, tax in tax_by_rate.values())
    return InvoiceTotals(net, MappingProxyType(tax_by_rate), tax, net + tax)
