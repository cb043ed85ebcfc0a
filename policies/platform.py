"""Platform versions: which release of the Deckhouse Virtualization Platform a decision
is made for, and the version gates of the rules.

The platform's behaviour changed between releases (the reference's "Version timeline"):
a rule that is right on one release is a false deny or a silent pass on another. So
every decision is made for one stated version (`platformVersion` in the policy file,
`--platform-version` on the CLI, or what `cluster/` detected), the newest known one
when nothing is stated.

Pure: parsing and comparison only, no I/O.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True, order=True)
class PlatformVersion:
    """A platform release line, `major.minor` (patch releases do not change rules)."""

    major: int
    minor: int

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}"

    @property
    def label(self) -> str:
        """As people write it: `v1.10`."""
        return f"v{self}"


_VERSION = re.compile(r"v?(\d{1,3})\.(\d{1,3})(?:\.\d{1,4})?(?:[-+][0-9A-Za-z.-]*)?")

# The first release with snapshots and restores (VirtualMachineSnapshot and
# VirtualMachineRestore came in v0.14.0).
OLDEST = PlatformVersion(0, 14)
# The newest release this product knows; the default when nothing is stated.
NEWEST = PlatformVersion(1, 10)
DEFAULT = NEWEST

# The boundaries the rules depend on (reference, "Version timeline").
V0_24_CLASS_FIELDS_REMOVED = PlatformVersion(0, 24)
V1_1_OPERATIONS = PlatformVersion(1, 1)  # vmop Restore/Clone; no restart-awaiting wait
V1_2_SNAPSHOT_OPERATIONS = PlatformVersion(1, 2)  # vmsop; VirtualMachineRestore deprecated
V1_3_FAILED_NOT_PENDING = PlatformVersion(1, 3)  # "cannot take snapshot now" -> Failed
V1_9_RESTORE_REMOVED = PlatformVersion(1, 9)  # VirtualMachineRestore no longer served


class PlatformVersionError(ValueError):
    """A version that cannot be used; the message says what is accepted."""


def parse_platform_version(text: object) -> PlatformVersion:
    """`1.10`, `v1.10`, `1.10.3` or `v1.10.3-rc.5` (what the module reports) as a
    version. Versions before v0.14 have no snapshots at all and are refused; a version
    newer than the newest known one is decided as the newest known one's rules, which
    is the caller's to say (see `known`)."""
    if isinstance(text, float):
        # YAML reads `platformVersion: 1.10` as the float 1.1: refuse rather than guess.
        raise PlatformVersionError(
            f"{text!r} was read as a number; quote it (platformVersion: \"{text}\") so "
            "that 1.10 and 1.1 stay different versions"
        )
    if not isinstance(text, str) or not _VERSION.fullmatch(text.strip()):
        raise PlatformVersionError(
            f"{text!r} is not a platform version; write major.minor, e.g. {NEWEST} or {NEWEST.label}"
        )
    match = _VERSION.fullmatch(text.strip())
    assert match is not None
    version = PlatformVersion(int(match.group(1)), int(match.group(2)))
    if version < OLDEST:
        raise PlatformVersionError(
            f"{text!r}: the platform has no snapshots before {OLDEST.label}; the oldest version "
            f"dvp-snapguard decides for is {OLDEST}"
        )
    return version


def known(version: PlatformVersion) -> bool:
    """False for a release newer than the product knows (its rules are the newest's)."""
    return version <= NEWEST


@dataclass(frozen=True)
class VersionRange:
    """The releases a rule applies to: `since` included, `until` excluded."""

    since: PlatformVersion | None = None
    until: PlatformVersion | None = None

    def __contains__(self, version: PlatformVersion) -> bool:
        if self.since is not None and version < self.since:
            return False
        return not (self.until is not None and version >= self.until)

    def describe(self) -> str:
        if self.since and self.until:
            return f"{self.since.label} - before {self.until.label}"
        if self.since:
            return f"from {self.since.label}"
        if self.until:
            return f"before {self.until.label}"
        return "all versions"


ALL_VERSIONS = VersionRange()


def unfinished_outcome(version: PlatformVersion, what: str) -> str:
    """What the platform does with a `what` (e.g. "snapshot") whose preconditions do not
    hold: since v1.3.0 it fails it, before that it kept it Pending and retried forever."""
    if version >= V1_3_FAILED_NOT_PENDING:
        return f"without this check DVP {version.label} would fail the {what}"
    return f"without this check DVP {version.label} would leave the {what} Pending forever"
