"""The event context: who asked, in which language, under which correlation and trace.

A :class:`Context` travels with an event in its headers (see :mod:`hexa_event.propagation`)
and is handed to every handler, filled with the four dedup keys of Go hexa-event.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Any

import msgspec
import uuid_utils

# The dedup keys of Go hexa-event, as the handler's context exposes them.
HEXA_EVENT_ID = "HEXA_EVENT_ID"
HEXA_EVENT_HANDLER_ACTION_NAME = "HEXA_EVENT_HANDLER_ACTION_NAME"
HEXA_ROOT_EVENT_ID = "HEXA_ROOT_EVENT_ID"
HEXA_ROOT_EVENT_HANDLER_ACTION_NAME = "HEXA_ROOT_EVENT_HANDLER_ACTION_NAME"


class UserType(StrEnum):
    """The user kinds of hexa (their wire values are Go's)."""

    GUEST = "_guest"
    REGULAR = "_regular"
    SERVICE = "_service"


class User(msgspec.Struct, frozen=True):
    """A user in the shape of hexa's ``User`` (the eight ``_user_*`` keys on the wire)."""

    id: str
    type: UserType = UserType.REGULAR
    email: str = ""
    phone: str = ""
    name: str = ""
    username: str = ""
    is_active: bool = True
    roles: tuple[str, ...] = ()

    @classmethod
    def guest(cls) -> User:
        """hexa's guest user: what Go services see when no user was set."""
        return GUEST

    @property
    def is_guest(self) -> bool:
        return self.type is UserType.GUEST

    def to_wire(self) -> dict[str, Any]:
        """The JSON object Go hexa writes under ``_ctx_user``."""
        return {
            "_user_type": self.type.value,
            "_user_identifier": self.id,
            "_user_email": self.email,
            "_user_phone": self.phone,
            "_user_name": self.name,
            "_user_username": self.username,
            "_user_is_active": self.is_active,
            "_user_roles": list(self.roles),
        }

    @classmethod
    def from_wire(cls, data: Mapping[str, Any]) -> User:
        """Rebuild from Go's JSON; missing keys take defaults (Go's zero values: a user
        without ``_user_is_active`` is not active), unknown user types fail, and so do roles
        that are not a list and an ``_user_is_active`` that is not true or false (Go refuses
        them too: read leniently, ``"false"`` was an active user and the roles ``"admin"``
        five one-letter roles)."""
        roles = data.get("_user_roles") or ()
        if not isinstance(roles, list | tuple):
            raise TypeError(f"_user_roles must be a list of strings, got {type(roles).__name__}")
        is_active = data.get("_user_is_active")
        if is_active is None:  # missing or null: Go keeps its zero value
            is_active = False
        elif not isinstance(is_active, bool):
            raise TypeError(f"_user_is_active must be true or false, got {is_active!r:.40}")
        return cls(
            id=str(data.get("_user_identifier", "")),
            type=UserType(data.get("_user_type", UserType.REGULAR.value)),
            email=str(data.get("_user_email", "")),
            phone=str(data.get("_user_phone", "")),
            name=str(data.get("_user_name", "")),
            username=str(data.get("_user_username", "")),
            is_active=is_active,
            roles=tuple(str(r) for r in roles),
        )


GUEST = User(
    id="_guest_id",
    type=UserType.GUEST,
    name="_guest",
    username="_guest_username",
    is_active=False,
)


def new_correlation_id() -> str:
    """A fresh correlation id (a random UUID, as hexa's HTTP layer makes them)."""
    return str(uuid_utils.uuid4())


class Context(msgspec.Struct, frozen=True, gc=False):
    """What travels with an event besides its payload. Immutable; derive with :meth:`with_`.

    ``correlation_id`` is generated when not given. ``baggage`` holds W3C baggage entries;
    ``traceparent``/``tracestate`` hold W3C trace context. ``values`` holds extra string
    values carried by a keys propagator. The dedup fields are filled by the receiver. Not
    tracked by the garbage collector: a context holds text and mappings of text, which
    cannot lead back to it.
    """

    correlation_id: str = msgspec.field(default_factory=new_correlation_id)
    locale: str = ""
    user: User | None = None
    baggage: Mapping[str, str] = msgspec.field(default_factory=dict)
    traceparent: str = ""
    tracestate: str = ""
    values: Mapping[str, str] = msgspec.field(default_factory=dict)
    event_id: str = ""
    handler_action: str = ""
    root_event_id: str = ""
    root_handler_action: str = ""

    def with_(self, **changes: Any) -> Context:
        """A copy with the given fields changed."""
        return msgspec.structs.replace(self, **changes)

    @property
    def dedup_keys(self) -> dict[str, str]:
        """The four keys of Go hexa-event under their Go names."""
        return {
            HEXA_EVENT_ID: self.event_id,
            HEXA_EVENT_HANDLER_ACTION_NAME: self.handler_action,
            HEXA_ROOT_EVENT_ID: self.root_event_id,
            HEXA_ROOT_EVENT_HANDLER_ACTION_NAME: self.root_handler_action,
        }

    def get(self, key: str, default: str | None = None) -> str | None:
        """Look a value up by its Go name (the HEXA_* keys) or by a propagated key."""
        found = self.dedup_keys.get(key)
        if found:
            return found
        return self.values.get(key, default)
