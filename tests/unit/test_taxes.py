"""Tax of a line: per line, half up, compound rates on the line plus earlier taxes."""

from __future__ import annotations

from decimal import Decimal

import pytest

from clinicbridge.core.errors import InvalidInputError
from clinicbridge.payments.models import TaxRate
from clinicbridge.payments.taxes import line_taxes, parse_percent, round_half_up


def rate(name: str, percent: str, *, compound: bool = False) -> TaxRate:
    return TaxRate(id=f"txr_{name}", name=name, percent=percent, compound=compound)


def test_quebec_gst_and_qst_on_100_dollars() -> None:
    taxes = line_taxes(10_000, [rate("GST", "5"), rate("QST", "9.975")])
    assert [(t["name"], t["amount"]) for t in taxes] == [("GST", 500), ("QST", 998)]


def test_half_up_per_line_not_bankers_rounding() -> None:
    assert round_half_up(Decimal("0.5")) == 1
    assert round_half_up(Decimal("2.5")) == 3  # banker's rounding would give 2
    assert round_half_up(Decimal("2.4999")) == 2
    # 10 cents at 5 % is half a cent: rounded up on the line
    assert line_taxes(10, [rate("GST", "5")])[0]["amount"] == 1
    # HST 13 % of $0.50 = 6.5 cents -> 7
    assert line_taxes(50, [rate("HST", "13")])[0]["amount"] == 7


def test_compound_rate_is_charged_on_the_line_plus_earlier_taxes() -> None:
    # Québec before 2013: QST 9.5 % on (price + GST)
    taxes = line_taxes(10_000, [rate("GST", "5"), rate("QST", "9.5", compound=True)])
    assert [t["amount"] for t in taxes] == [500, 998]  # 9.5 % of 10,500 = 997.5 -> 998
    plain = line_taxes(10_000, [rate("GST", "5"), rate("QST", "9.5")])
    assert [t["amount"] for t in plain] == [500, 950]


def test_no_rates_no_tax() -> None:
    assert line_taxes(12_345, []) == []


@pytest.mark.parametrize("bad", ["abc", "101", "-1", "1.23456", "NaN"])
def test_bad_percentages_name_the_field(bad: str) -> None:
    with pytest.raises(InvalidInputError) as refused:
        parse_percent(bad)
    assert refused.value.errors[0].field == "percent"


def test_exact_decimals_are_kept() -> None:
    assert str(parse_percent("9.975")) == "9.975"
    assert parse_percent("13") == Decimal(13)
