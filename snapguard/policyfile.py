"""Reading the `--policy` file: parsed as every input file is (cluster.statefiles: UTF-8,
duplicate keys, the limits), validated by the engine's model."""

from __future__ import annotations

from cluster.statefiles import InputError, read_data
from policies.config import PolicyConfig, PolicyError, load_policy

from .errors import UsageError


def read_policy(path: str | None) -> PolicyConfig:
    if not path:
        return PolicyConfig()
    try:
        data = read_data(path)
    except InputError as error:
        raise UsageError(f"policy file {error}") from None
    try:
        return load_policy(data, path)
    except PolicyError as error:
        raise UsageError(str(error)) from None
