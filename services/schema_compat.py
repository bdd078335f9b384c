"""Find changes to an event's JSON schema that would break its consumers.

Within a version an event may gain optional fields. Removing a field,
changing its type or format, narrowing its allowed values, or adding a
required field breaks consumers, and needs a new ``ce_type`` version.
"""

from __future__ import annotations

from typing import Any

Schema = dict[str, Any]


def _resolve(schema: Schema, root: Schema) -> Schema:
    reference = schema.get("$ref")
    if not reference:
        return schema
    name = reference.rsplit("/", 1)[-1]
    resolved: Schema = root.get("$defs", {}).get(name, {})
    return resolved


def _shape(schema: Schema, root: Schema) -> Any:
    """Return what a field's values look like, ignoring titles and texts."""
    schema = _resolve(schema, root)
    if "anyOf" in schema:
        return ("anyOf", sorted(repr(_shape(part, root)) for part in schema["anyOf"]))
    if schema.get("type") == "object" and "properties" in schema:
        return ("object", sorted(schema["properties"]))
    return (
        schema.get("type"),
        schema.get("format"),
        schema.get("items", {}).get("type"),
    )


def _allowed(schema: Schema, root: Schema) -> set[Any] | None:
    schema = _resolve(schema, root)
    if "enum" in schema:
        return set(schema["enum"])
    if "const" in schema:
        return {schema["const"]}
    return None


def breaking_changes(old: Schema, new: Schema) -> list[str]:
    """List the ways ``new`` breaks consumers written against ``old``."""
    problems: list[str] = []
    old_fields: dict[str, Schema] = old.get("properties", {})
    new_fields: dict[str, Schema] = new.get("properties", {})
    for name, old_field in old_fields.items():
        if name not in new_fields:
            problems.append(f"field {name!r} was removed")
            continue
        new_field = new_fields[name]
        old_values = _allowed(old_field, old)
        new_values = _allowed(new_field, new)
        if old_values is not None and new_values is not None:
            if not old_values <= new_values:
                lost = sorted(map(str, old_values - new_values))
                problems.append(f"field {name!r} no longer allows {', '.join(lost)}")
            continue
        if _shape(old_field, old) != _shape(new_field, new):
            problems.append(f"field {name!r} changed type")
    added_required = set(new.get("required", [])) - set(old_fields)
    problems.extend(
        f"new field {name!r} is required; new fields must be optional"
        for name in sorted(added_required)
    )
    return problems
