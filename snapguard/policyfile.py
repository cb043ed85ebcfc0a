"""Reading the `--policy` file (parsed as every input file is, by cluster.statefiles:
UTF-8, duplicate keys, the limits; validated by the engine's model) and
`--platform-version`, which every deciding command takes and which wins over the
file's `platformVersion`."""

from __future__ import annotations

import argparse

from cluster.statefiles import InputError, read_data
from policies.config import PolicyConfig, PolicyError, load_policy
from policies.platform import DEFAULT, PlatformVersion, PlatformVersionError, parse_platform_version

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


def add_policy_arguments(parser: argparse.ArgumentParser, policy_help: str = "policy file setting rule actions") -> None:
    """`--policy FILE` and `--platform-version X.Y`, alike on every deciding command."""
    parser.add_argument("--policy", metavar="FILE", help=policy_help)
    parser.add_argument(
        "--platform-version",
        metavar="X.Y",
        help=f"decide for this DVP release (default: the policy file's platformVersion, "
        f"else what a cluster reports, else {DEFAULT})",
    )


def platform_version_arg(args: argparse.Namespace) -> PlatformVersion | None:
    """The --platform-version given, or None."""
    text = getattr(args, "platform_version", None)
    if not text:
        return None
    try:
        return parse_platform_version(text)
    except PlatformVersionError as error:
        raise UsageError(f"--platform-version: {error}") from None


def policy_from_args(args: argparse.Namespace) -> PolicyConfig:
    """The policy file's settings, decided for --platform-version when it is given."""
    return read_policy(args.policy).for_platform(platform_version_arg(args))
