"""Kubernetes resource quantities ("10Gi", "1.5G", "500M", "1e9") as exact Decimals.

Pure: no I/O here.
"""

from __future__ import annotations

import re
from decimal import Decimal

_SUFFIXES = {
    "": Decimal(1),
    "k": Decimal(10) ** 3,
    "M": Decimal(10) ** 6,
    "G": Decimal(10) ** 9,
    "T": Decimal(10) ** 12,
    "P": Decimal(10) ** 15,
    "E": Decimal(10) ** 18,
    "m": Decimal(10) ** -3,
    "Ki": Decimal(2) ** 10,
    "Mi": Decimal(2) ** 20,
    "Gi": Decimal(2) ** 30,
    "Ti": Decimal(2) ** 40,
    "Pi": Decimal(2) ** 50,
    "Ei": Decimal(2) ** 60,
}
_QUANTITY = re.compile(r"^([+-]?[0-9.]+(?:[eE][+-]?[0-9]+)?)(Ki|Mi|Gi|Ti|Pi|Ei|[kMGTPEm]?)$")


def parse_quantity(value: str | int | float | None) -> Decimal | None:
    """The quantity in base units, or None when absent or not a quantity."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        number = Decimal(str(value))
        return number if number.is_finite() else None
    match = _QUANTITY.match(value.strip())
    if not match:
        return None
    try:
        number = Decimal(match.group(1)) * _SUFFIXES[match.group(2)]
    except ArithmeticError:  # InvalidOperation, and Overflow for exponents like 1e9999999
        return None
    return number if number.is_finite() else None
