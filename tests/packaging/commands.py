"""The command paths a `snapguard` parser registers (`check`, `certs create`, ...),
walked from argparse itself so that a command added later is covered by every test
that iterates over them. Run as a script it prints them, one a line: the wheel test
runs it with the interpreter of the fresh install."""

from __future__ import annotations

import argparse
from collections.abc import Iterator


def command_paths(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                path = (*prefix, name)
                yield path
                yield from command_paths(sub, path)


def registered() -> list[str]:
    from snapguard.cli import build_parser

    return [" ".join(path) for path in command_paths(build_parser())]


if __name__ == "__main__":
    print("\n".join(registered()))
