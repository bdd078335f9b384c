"""The event catalogue names every event and its examples are valid."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from services.contracts import EVENT_TYPES, Event

CATALOGUE = Path(__file__).resolve().parents[2] / "docs" / "events.md"
SECTION = re.compile(r"^## (\w+)\n\n`([\w.]+)`(.*?)```json\n(.*?)```", re.M | re.S)


def _sections() -> dict[str, tuple[str, str]]:
    text = CATALOGUE.read_text()
    return {m.group(1): (m.group(2), m.group(4)) for m in SECTION.finditer(text)}


@pytest.mark.parametrize("model", list(EVENT_TYPES.values()), ids=lambda m: m.__name__)
def test_catalogue_example_is_valid(model: type[Event]) -> None:
    sections = _sections()

    assert model.__name__ in sections
    ce_type, example = sections[model.__name__]
    assert ce_type == model.ce_type
    parsed = model.model_validate_json(example)
    assert set(parsed.model_dump()) == set(model.model_fields)
