"""The settings catalogue: every system setting, with its type and bounds."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

SettingValue = bool | int | str

PAT_ENABLED = "pat_enabled"
PAT_MAX_EXPIRE_DAYS = "pat_max_expire_days"


class InvalidValue(ValueError):
    """A value that breaks its setting's type or bounds."""


@dataclass(frozen=True)
class SettingDefinition:
    key: str
    section: str
    label: str
    description: str
    type: Literal["boolean", "integer"]
    default: SettingValue
    minimum: int | None = None
    maximum: int | None = None

    def validate(self, value: object) -> SettingValue:
        """Return ``value`` if it suits this setting, else raise ``InvalidValue``."""
        if self.type == "boolean":
            if not isinstance(value, bool):
                raise InvalidValue(f"{self.key} takes true or false")
            return value
        if isinstance(value, bool) or not isinstance(value, int):
            raise InvalidValue(f"{self.key} takes a whole number")
        if self.minimum is not None and value < self.minimum:
            raise InvalidValue(f"{self.key} must be at least {self.minimum}")
        if self.maximum is not None and value > self.maximum:
            raise InvalidValue(f"{self.key} must be at most {self.maximum}")
        return value

    def matches(self, query: str) -> bool:
        text = " ".join((self.key, self.section, self.label, self.description))
        return query.casefold() in text.casefold()


CATALOGUE: dict[str, SettingDefinition] = {
    definition.key: definition
    for definition in (
        SettingDefinition(
            key=PAT_ENABLED,
            section="Web",
            label="Creation and Authentication of Personal Access Tokens",
            description=(
                "Allows people to create personal access tokens (PAT) and "
                "third-party applications to authenticate with them. While off, "
                "no token can be created and no existing token authenticates; "
                "tokens are kept and work again when it is switched back on."
            ),
            type="boolean",
            default=False,
        ),
        SettingDefinition(
            key=PAT_MAX_EXPIRE_DAYS,
            section="Web",
            label="Maximum Expiry of Personal Access Tokens, in Days",
            description=(
                "The largest 'expire in days' a person may choose when creating "
                "a personal access token (PAT)."
            ),
            type="integer",
            default=180,
            minimum=1,
            maximum=180,
        ),
    )
}
