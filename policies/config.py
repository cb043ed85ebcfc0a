"""The policy configuration: each rule's action, exempt namespaces, and what a rule
error does. Validated strictly: an unknown key, rule id or action is an error naming
the key, never ignored (a typo must not silently switch a rule back to its default).

Pure: the caller reads the file and passes the parsed data and the file's name.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .catalogue import CATALOGUE, Action
from .platform import DEFAULT, PlatformVersion, PlatformVersionError, parse_platform_version


class PolicyError(ValueError):
    """A policy file that cannot be used; the message names the file and the key."""


def _action_value(value: Any) -> Any:
    # YAML 1.1 reads a bare `off` as the boolean false; a user writing `rule: off`
    # means the action.
    if value is False:
        return Action.OFF.value
    return value


class PolicyConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)

    api_version: str | None = Field(default=None, alias="apiVersion")
    kind: str | None = None
    rules: dict[str, Action] = Field(default_factory=dict)
    exempt_namespaces: tuple[str, ...] = Field(default=(), alias="exemptNamespaces")
    # What a rule that raised does to the request. `deny` mirrors the webhook's
    # failurePolicy: Fail (a check that cannot run must not let an object through).
    rule_errors: Action = Field(default=Action.DENY, alias="ruleErrors")
    # The platform release decisions are made for (SPEC, "Platform versions").
    platform_version: PlatformVersion = Field(default=DEFAULT, alias="platformVersion")

    @field_validator("platform_version", mode="before")
    @classmethod
    def _platform_version(cls, value: Any) -> Any:
        if isinstance(value, PlatformVersion):
            return value
        try:
            return parse_platform_version(value)
        except PlatformVersionError as error:
            raise ValueError(str(error)) from None

    @field_validator("rules", mode="before")
    @classmethod
    def _known_rules(cls, value: Any) -> Any:
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise ValueError("must be a mapping of rule id to action")
        unknown = [key for key in value if key not in CATALOGUE]
        if unknown:
            raise ValueError(
                f"unknown rule id {unknown[0]!r} (see `snapguard rules` for the catalogue)"
            )
        return {key: _action_value(action) for key, action in value.items()}

    @field_validator("rule_errors", mode="before")
    @classmethod
    def _error_action(cls, value: Any) -> Any:
        value = _action_value(value)
        if value not in (Action.DENY.value, Action.WARN.value, Action.DENY, Action.WARN):
            raise ValueError("must be deny or warn")
        return value

    def action_for(self, rule_id: str) -> Action:
        """The configured action, else the rule's default on the platform version."""
        configured = self.rules.get(rule_id)
        return configured if configured is not None else CATALOGUE[rule_id].default_for(self.platform_version)

    def for_platform(self, version: PlatformVersion | None) -> PolicyConfig:
        """This policy decided for another platform version (a CLI flag or what was
        detected from a cluster wins over the file); itself when `version` is None."""
        if version is None or version == self.platform_version:
            return self
        return self.model_copy(update={"platform_version": version})


def load_policy(data: Any, source: str) -> PolicyConfig:
    """Validate parsed policy data; errors name `source` and the offending key."""
    if data is None:
        return PolicyConfig()
    if not isinstance(data, dict):
        raise PolicyError(f"{source}: a policy must be a mapping, got {type(data).__name__}")
    rules = data.get("rules")
    if isinstance(rules, dict):
        for key in rules:
            if key not in CATALOGUE:
                raise PolicyError(
                    f"{source}: rules.{key}: unknown rule id (see `snapguard rules` for the catalogue)"
                )
    try:
        return PolicyConfig.model_validate(data)
    except ValidationError as error:
        first = error.errors()[0]
        location = ".".join(str(part) for part in first["loc"])
        message = first["msg"]
        if first["type"] == "enum":
            message = f"unknown action {first.get('input')!r} (use deny, warn, audit or off)"
        elif first["type"] == "extra_forbidden":
            message = "unknown key (known: rules, exemptNamespaces, ruleErrors, platformVersion)"
        message = message.removeprefix("Value error, ")
        raise PolicyError(f"{source}: {location}: {message}") from None
