"""Reading the `--policy` file (parsed as every input file is, by cluster.statefiles:
UTF-8, duplicate keys, the limits; validated by the engine's model) and
`--platform-version`, which every deciding command takes and which wins over the
file's `platformVersion`; with a cluster, both win over what the cluster says
(`policy_for_cluster`), and that over the default."""

from __future__ import annotations

import argparse
from collections.abc import Callable

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


def policy_for_cluster(
    args: argparse.Namespace, detect: Callable[[], tuple[PlatformVersion, str]] | None
) -> tuple[PolicyConfig, str]:
    """The policy decided for the platform version, and the one log line saying which
    and why. Precedence: --platform-version, then the policy file's platformVersion,
    then `detect()` (the cluster's answer: version and description; None when there is
    no cluster), then the default. `detect` runs only when nothing is stated."""
    return platform_for(args, read_policy(args.policy), detect)


def platform_for(
    args: argparse.Namespace,
    policy: PolicyConfig,
    detect: Callable[[], tuple[PlatformVersion, str]] | None,
) -> tuple[PolicyConfig, str]:
    """`policy_for_cluster` for a policy file already read."""
    flag = platform_version_arg(args)
    if flag is not None:
        return policy.for_platform(flag), f"platform: {flag.label} (from --platform-version)"
    if "platform_version" in policy.model_fields_set:
        stated = policy.platform_version
        return policy, f"platform: {stated.label} (from the policy file's platformVersion)"
    if detect is None:
        return policy.for_platform(DEFAULT), f"platform: {DEFAULT.label} (the default; no cluster to detect it from)"
    version, line = detect()
    return policy.for_platform(version), line
