"""Reading the `--policy` file: YAML parsed here, validated by the engine's model."""

from __future__ import annotations

from pathlib import Path

import yaml

from policies.config import PolicyConfig, PolicyError, load_policy

from .errors import UsageError


def read_policy(path: str | None) -> PolicyConfig:
    if not path:
        return PolicyConfig()
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as error:
        raise UsageError(f"{path}: cannot read policy file: {error.strerror or error}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise UsageError(f"{path}:{where}: invalid YAML in policy file") from None
    try:
        return load_policy(data, path)
    except PolicyError as error:
        raise UsageError(str(error)) from None
