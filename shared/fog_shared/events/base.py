"""The event base class and the catalogue of every event type Fog publishes.

An event type is declared once, as a pydantic model in ``fog_shared.events.<producer>``::

    class UserRegistered(Event):
        TYPE = EventType("auth", "user", "registered", 1)
        AGGREGATE_ID = "user_id"
        user_id: str

Declaring it registers it in :data:`CATALOGUE`, which the consumers decode with, the JSON Schema
generator walks, and the contract test checks against the committed schemas.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Self

from pydantic import BaseModel, ConfigDict, ValidationError

from fog_shared.subjects import event_subject


@dataclass(frozen=True, slots=True)
class EventType:
    """``<service>.<aggregate>.<event>.v<version>``: the CloudEvents type and subject suffix."""

    service: str
    aggregate: str
    event: str
    version: int

    @property
    def subject(self) -> str:
        return event_subject(self.service, self.aggregate, self.event, self.version)

    @property
    def name(self) -> str:
        return f"{self.service}.{self.aggregate}.{self.event}.v{self.version}"

    def __str__(self) -> str:
        return self.name


class EventDecodeError(ValueError):
    """An event body that cannot be decoded into its declared type: poison, dead-letter it."""


class Event(BaseModel):
    """Base of every event body.

    Consumers ignore unknown fields (``extra="ignore"``) because a producer may add optional
    fields within a version; field values are validated strictly enough to reject wrong types.
    """

    model_config = ConfigDict(extra="ignore", frozen=True)

    TYPE: ClassVar[EventType]
    #: name of the field that holds the aggregate id (goes into ``ce-subject``)
    AGGREGATE_ID: ClassVar[str]

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        if "TYPE" in cls.__dict__:
            if cls.AGGREGATE_ID not in cls.model_fields:
                raise TypeError(f"{cls.__name__}.AGGREGATE_ID names no field: {cls.AGGREGATE_ID!r}")
            CATALOGUE.register(cls)

    @property
    def aggregate_id(self) -> str:
        return str(getattr(self, self.AGGREGATE_ID))

    def to_json(self) -> bytes:
        return self.model_dump_json().encode()

    @classmethod
    def from_json(cls, body: bytes) -> Self:
        try:
            return cls.model_validate_json(body)
        except ValidationError as exc:
            raise EventDecodeError(f"{cls.TYPE}: {exc.error_count()} invalid field(s): {exc}") from exc


class Catalogue:
    """Every event type by its type name (``auth.user.registered.v1``)."""

    def __init__(self) -> None:
        self._types: dict[str, type[Event]] = {}

    def register(self, event_cls: type[Event]) -> None:
        name = event_cls.TYPE.name
        existing = self._types.get(name)
        if existing is not None and existing.__qualname__ != event_cls.__qualname__:
            raise TypeError(f"event type {name} declared twice: {existing} and {event_cls}")
        self._types[name] = event_cls

    def get(self, type_name: str) -> type[Event]:
        try:
            return self._types[type_name]
        except KeyError:
            raise EventDecodeError(f"unknown event type {type_name!r}") from None

    def decode(self, type_name: str, body: bytes) -> Event:
        return self.get(type_name).from_json(body)

    def types(self) -> list[type[Event]]:
        return [self._types[name] for name in sorted(self._types)]

    def __contains__(self, type_name: object) -> bool:
        return type_name in self._types


CATALOGUE = Catalogue()
