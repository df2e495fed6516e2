"""What every config section shares: strict validation, and one-line error messages."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict


class Section(BaseModel):
    # strict: YAML already gives typed values, so "10" for an int is a mistake worth reporting.
    model_config = ConfigDict(extra="forbid", strict=True, validate_assignment=True)


def describe_error(error: dict[str, Any]) -> str:
    where = ".".join(str(part) for part in error["loc"])
    if error["type"] == "extra_forbidden":
        return f"unknown key '{where}'"
    message = error["msg"].removeprefix("Value error, ")
    if error["type"] in {"value_error", "assertion_error"}:
        return message
    value = error.get("input")
    if isinstance(value, dict | list) and len(repr(value)) > 60:
        return f"{where}: {message.lower()}"
    return f"{where}: {message.lower()}, but got {value!r}"


def expected_keys(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """The keys allowed where an unknown key was found, to show in the message."""
    for part in loc[:-1]:
        field = model.model_fields.get(str(part))
        annotation = field.annotation if field else None
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return []
        model = annotation
    return sorted(model.model_fields)
