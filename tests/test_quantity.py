"""Kubernetes resource quantities as exact Decimals (policies.quantity.parse_quantity):
binary and decimal suffixes, plain integers, exponents, and None for anything that is
not a quantity. vd-snapshot-size compares sizes written in different units with it."""

from __future__ import annotations

from decimal import Decimal

import pytest

from policies.quantity import parse_quantity

KI = 2**10
MI = 2**20
GI = 2**30
TI = 2**40


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1Ki", KI),
        ("1Mi", MI),
        ("10Gi", 10 * GI),
        ("2Ti", 2 * TI),
        ("1Pi", 2**50),
        ("1Ei", 2**60),
        ("1.5Gi", 3 * GI // 2),
        ("0.5Mi", MI // 2),
        ("10240Mi", 10 * GI),
    ],
)
def test_binary_suffixes(text: str, expected: int) -> None:
    """Ki, Mi, Gi, Ti, Pi and Ei are powers of 1024, fractions included."""
    assert parse_quantity(text) == Decimal(expected)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1k", Decimal(1000)),
        ("500M", Decimal(500 * 10**6)),
        ("11G", Decimal(11 * 10**9)),
        ("1.5G", Decimal(15 * 10**8)),
        ("2T", Decimal(2 * 10**12)),
        ("1P", Decimal(10**15)),
        ("1E", Decimal(10**18)),
        ("100m", Decimal("0.1")),
    ],
)
def test_decimal_suffixes(text: str, expected: Decimal) -> None:
    """k, M, G, T, P, E are powers of 1000; m is a thousandth."""
    assert parse_quantity(text) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("10737418240", 10 * GI),
        (10737418240, 10 * GI),
        ("0", 0),
        (0, 0),
        ("+5", 5),
        ("-5", -5),
        (" 10Gi ", 10 * GI),
    ],
)
def test_plain_numbers(value: str | int, expected: int) -> None:
    """Plain integers, as strings (kubectl prints restoreSize so) or as YAML ints,
    are bytes; surrounding blanks are ignored."""
    assert parse_quantity(value) == Decimal(expected)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1e3", Decimal(1000)),
        ("1E3", Decimal(1000)),
        ("12e6", Decimal(12 * 10**6)),
        ("1.5e9", Decimal(15 * 10**8)),
        ("1e-3", Decimal("0.001")),
        ("1e+3", Decimal(1000)),
    ],
)
def test_exponents(text: str, expected: Decimal) -> None:
    """Decimal exponents (e or E, with an optional sign) scale the number."""
    assert parse_quantity(text) == expected


def test_units_compare_as_vd_snapshot_size_needs() -> None:
    """The comparisons the vd-snapshot-size cases rely on: 10Gi is exactly
    10737418240 bytes and 10240Mi; 10G is less than 10Gi; 11G is more."""
    ten_gi = parse_quantity("10Gi")
    assert ten_gi == parse_quantity(10737418240) == parse_quantity("10240Mi")
    assert parse_quantity("10G") < ten_gi < parse_quantity("11G")  # type: ignore[operator]


@pytest.mark.parametrize(
    "value",
    [
        None,
        True,
        False,
        "",
        " ",
        "Gi",
        "abc",
        "10 Gi",
        "10gi",
        "10GB",
        "10Gib",
        "10iG",
        "1_000",
        "0x10",
        "1.2.3",
        "...",
        "--1",
        "1e",
        "e3",
        "\uff11\uff10Gi",  # fullwidth digits
        "NaN",
        "Infinity",
    ],
)
def test_garbage_is_none(value: object) -> None:
    """Anything that is not a quantity, including booleans (a YAML `yes`) and None, is
    None: the rules then treat the size as unknown instead of failing."""
    assert parse_quantity(value) is None  # type: ignore[arg-type]


@pytest.mark.parametrize("text", ["1e9999999", "1e999999999Gi"])
def test_overflowing_exponent_is_none(text: str) -> None:
    """An exponent beyond what a Decimal holds is not a usable quantity (it used to
    raise decimal.Overflow and turn vd-snapshot-size into an error outcome)."""
    assert parse_quantity(text) is None
