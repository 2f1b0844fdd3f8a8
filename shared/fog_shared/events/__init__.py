"""Event contracts: one module per producing service, all registered in :data:`CATALOGUE`.

Importing this package imports every producer's module so the catalogue is complete.
"""

from fog_shared.events import auth, messaging, registry, scheduler
from fog_shared.events.base import CATALOGUE, Catalogue, Event, EventDecodeError, EventType

__all__ = [
    "CATALOGUE",
    "Catalogue",
    "Event",
    "EventDecodeError",
    "EventType",
    "auth",
    "messaging",
    "registry",
    "scheduler",
]
