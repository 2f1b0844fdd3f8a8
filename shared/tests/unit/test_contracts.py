"""Event contracts: the committed schemas hold every version to additive, optional change."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import ClassVar

import pytest

from fog_shared.contracts import breaking_changes, check_compatibility, current_schemas, read_schemas, schema_of
from fog_shared.events import CATALOGUE, Catalogue, Event, EventDecodeError, EventType

COMMITTED = Path(__file__).parents[3] / "contracts" / "schemas"


def test_every_event_type_is_committed_and_compatible() -> None:
    committed = read_schemas(COMMITTED)
    assert committed, f"no schemas in {COMMITTED}: run `make contracts`"
    assert check_compatibility(committed, current_schemas()) == {}
    assert set(current_schemas()) == set(committed), "schemas out of date: run `make contracts`"


def _variant(**fields: object) -> type[Event]:
    """A stand-in for auth.user.registered.v1 as someone might edit it (kept out of the catalogue)."""
    namespace: dict[str, object] = {"__annotations__": fields, "AGGREGATE_ID": "user_id"}
    cls = type("UserRegistered", (_Unregistered,), namespace)
    cls.TYPE = EventType("auth", "user", "registered", 1)  # type: ignore[attr-defined]
    return cls


class _Unregistered(Event):
    AGGREGATE_ID: ClassVar[str] = "user_id"
    user_id: str


def test_removing_a_field_within_a_version_fails_the_contract() -> None:
    committed = read_schemas(COMMITTED)["auth.user.registered.v1"]
    edited = schema_of(_variant(user_id=str, roles=list[str], registered_at=datetime))  # email removed
    assert breaking_changes(committed, edited) == ["property 'email' removed"]


def test_changing_a_type_or_adding_a_required_field_fails_but_an_optional_one_does_not() -> None:
    committed = read_schemas(COMMITTED)["auth.user.registered.v1"]
    retyped = schema_of(_variant(user_id=int, email=str, roles=list[str], registered_at=datetime))
    assert any("'user_id' changed" in p for p in breaking_changes(committed, retyped))
    required = schema_of(_variant(user_id=str, email=str, roles=list[str], registered_at=datetime, name=str))
    assert breaking_changes(committed, required) == ["property 'name' is newly required"]
    optional = schema_of(_variant(user_id=str, email=str, roles=list[str], registered_at=datetime, name=str | None))
    optional["required"] = [r for r in optional["required"] if r != "name"]
    assert breaking_changes(committed, optional) == []


def test_removing_an_event_type_fails_the_contract() -> None:
    committed = read_schemas(COMMITTED)
    assert check_compatibility(committed, {}) == {
        name: ["event type removed (publish a new version beside it instead)"] for name in committed
    }


def test_catalogue_decodes_by_type_and_refuses_unknown_types() -> None:
    assert "auth.user.registered.v1" in CATALOGUE
    with pytest.raises(EventDecodeError, match="unknown event type"):
        Catalogue().get("auth.user.registered.v1")
