"""Limits on parsed input, shared by every reader of objects (state files, manifests,
policy and review files, snapshot Secrets): how deep a value may nest and how long an
integer may be. Past them an object is bad input, reported with the field it is in.

Why: Python converts an integer of more than `sys.get_int_max_str_digits()` (4,300)
digits to or from text only by raising ValueError, and code that walks a value
recursively (copy.deepcopy, the JSON encoder, comparisons of old and new objects) raises
RecursionError somewhere near 1,000 levels; neither may surface as a traceback, or as a
rule error that a `ruleErrors: warn` policy would turn into an admission. A Kubernetes
object nests a few dozen levels at most (a CRD's openAPIV3Schema rarely passes 30) and
its integers are 64-bit.

Pure: stdlib only.
"""

from __future__ import annotations

import sys
from typing import Any

MAX_DEPTH = 100


def max_int_digits() -> int:
    """The interpreter's limit on decimal digits (0, unlimited, reads as 4,300)."""
    return sys.get_int_max_str_digits() or 4300


class OversizedInt(str):
    """Placeholder a parser puts where an integer literal exceeds the limit, so that the
    check below can name its field (the parser itself knows no path)."""


def parse_int(literal: str) -> int | OversizedInt:
    """`json.loads(parse_int=...)`: an int, or the placeholder for an oversized one."""
    digits = len(literal) - (literal[:1] in "+-")
    if digits > max_int_digits():
        return OversizedInt(literal)
    return int(literal)


def _oversized(value: int) -> bool:
    # An int made without a decimal conversion (YAML's 0x... or 1:2:3 forms) can still
    # exceed the limit; bit_length is cheap and log2(10) < 3.33.
    return value.bit_length() > max_int_digits() * 3.32


def _field(path: list[str | int]) -> str:
    text = ""
    shown = path if len(path) <= 12 else path[:6]
    for part in shown:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else part
    if len(shown) < len(path):
        text += f"...({len(path) - len(shown)} levels more)"
    return text or "(top level)"


def _int_problem(value: Any) -> str | None:
    if isinstance(value, OversizedInt):
        digits = len(value) - (value[:1] in "+-")
        return f"an integer of {digits} digits (the limit is {max_int_digits()})"
    if isinstance(value, int) and not isinstance(value, bool) and _oversized(value):
        return f"an integer beyond {max_int_digits()} digits"
    return None


_Entry = tuple[Any, int, Any, "str | int"]  # value, depth, parent entry, key in the parent


def _path_of(entry: _Entry) -> list[str | int]:
    parts: list[str | int] = []
    while entry[2] is not None:
        parts.append(entry[3])
        entry = entry[2]
    return parts[::-1]


def find_problem(value: Any, max_depth: int = MAX_DEPTH) -> str | None:
    """The first value that breaks a limit, as `<field>: <what>`; None when all is well.
    Iterative, so that a value too deep for recursion is still walked; an entry keeps
    its parent's, and the path is spelled out only for a problem."""
    problem = _int_problem(value)
    if problem is not None:
        return f"(top level): {problem}"
    stack: list[_Entry] = [(value, 0, None, "")] if isinstance(value, (dict, list)) else []
    while stack:
        entry = stack.pop()
        current, depth = entry[0], entry[1]
        if depth >= max_depth and current:
            return f"{_field(_path_of(entry))}: nested deeper than {max_depth} levels"
        pairs: Any = current.items() if isinstance(current, dict) else enumerate(current)
        for key, child in pairs:
            if isinstance(current, dict) and not isinstance(key, str):
                problem = _int_problem(key) or (
                    "a mapping key that is not a scalar" if isinstance(key, (dict, list)) else None
                )
                if problem is not None:
                    return f"{_field(_path_of(entry))}: {problem}"
                key = str(key)
            if isinstance(child, (dict, list)):
                stack.append((child, depth + 1, entry, key))
            elif isinstance(child, (int, str)):
                problem = _int_problem(child)
                if problem is not None:
                    return f"{_field([*_path_of(entry), key])}: {problem}"
    return None
