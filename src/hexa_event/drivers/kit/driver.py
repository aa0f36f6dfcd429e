"""The driver every driver of ours builds on: the publish template (closed check, record
checks, :meth:`KitDriver.validate`, one-time provisioning, then the engine's
:meth:`KitDriver.send`), the close sequence and the one shape of ``from_url``
(docs/driver-contract.md, "Shared plumbing")."""

from __future__ import annotations

import abc
import asyncio
import logging
import re
from collections.abc import Callable, Mapping, MutableSet, Sequence
from typing import Any, ClassVar, Self, final

from ...driver import Driver, RawRecord, SubscriptionSpec, check_records
from ...errors import ClosedError, ConfigurationError

logger = logging.getLogger(__name__)


def channel_pattern(spec: SubscriptionSpec) -> re.Pattern[str] | None:
    """The subscription's channel pattern compiled (None without one); ConfigurationError
    when it is not a regular expression."""
    if not spec.pattern:
        return None
    try:
        return re.compile(spec.pattern)
    except re.error as exc:
        raise ConfigurationError(
            f"subscription pattern {spec.pattern!r} is not a valid regular expression: {exc}"
        ) from exc


class KitDriver(Driver):
    """A driver with the publish template; subclasses implement :meth:`send`."""

    options_type: ClassVar[Any]
    """The options class: ``options_type.from_url(url, **options)`` parses a URL."""
    handed_over: ClassVar[tuple[str, ...]] = ()
    """Keywords of ``from_url`` for the constructor, not options (a connection to share)."""

    def __init__(self) -> None:
        self.closed = False
        """Set by ``close``: publish, provision and subscribe raise ClosedError after it."""
        self.channels: dict[str, int] = {}
        """The one cache of channels provisioned by this driver -> their partition count
        (0: one, or not told)."""
        self._provisioning = asyncio.Lock()
        self._closing: asyncio.Future[None] | None = None
        self.subscriptions: MutableSet[Any] = set()
        """The subscriptions this driver made and has not closed: :meth:`close` closes them
        (a driver may keep them in a ``weakref.WeakSet`` instead)."""

    def __repr__(self) -> str:
        """The class and its options (their repr hides secrets)."""
        options = getattr(self, "options", None)
        return f"{type(self).__name__}({'' if options is None else repr(options)})"

    @classmethod
    def from_url(cls, url: str, **options: Any) -> Self:
        """A driver for ``url``: keyword options win over the URL's query options;
        ``options=`` takes a ready options object instead (no other keyword with it)."""
        handed = {name: options.pop(name) for name in cls.handed_over if name in options}
        if "options" in options:
            given = options.pop("options")
            if options:
                raise ConfigurationError(
                    f"pass either options={cls.options_type.__name__}(...) or keyword options, "
                    "not both"
                )
            return cls.from_options(given, **handed)
        return cls.from_options(cls.options_type.from_url(url, **options), **handed)

    @classmethod
    def from_options(cls, options: Any, **handed: Any) -> Self:
        """The driver for parsed options (and the objects in :attr:`handed_over`)."""
        make: Callable[..., Self] = cls
        return make(options, **handed)

    @classmethod
    def options_of(cls, options: Any, keywords: Mapping[str, Any]) -> Any:
        """``options``, or an ``options_type`` made of the ``keywords`` (not both)."""
        if options is not None and keywords:
            raise ConfigurationError(
                f"pass either {cls.options_type.__name__} or keyword options, not both"
            )
        return options if options is not None else cls.options_type(**keywords)

    def subscription_options(self, spec: SubscriptionSpec, kind: type) -> Any:
        """``spec.options`` when it is None or a ``kind`` (the driver's subscription options
        class); ConfigurationError naming ``kind`` otherwise."""
        given = spec.options
        if given is not None and not isinstance(given, kind):
            raise ConfigurationError(
                f"{self.features.name} subscriptions take {kind.__name__}, got "
                f"{type(given).__name__}"
            )
        return given

    def check_open(self) -> None:
        """Raise :class:`~hexa_event.errors.ClosedError` once the driver is closed."""
        if self.closed:
            raise ClosedError(f"the {self.features.name} driver was closed; connect() again")

    async def keep(self, subscription: Any) -> None:
        """Remember a subscription that just started, for :meth:`close`; when the driver was
        closed while it started (that close did not see it), close it and raise ClosedError."""
        if self.closed:
            await subscription.close()
            self.check_open()
        self.subscriptions.add(subscription)

    @final
    async def publish(self, records: Sequence[RawRecord]) -> None:
        """Store every record; return only once the engine has durably accepted all (the
        template above: closed check, record checks, provisioning once, then send)."""
        self.check_open()
        check_records(records, self)
        self.validate(records)
        if not records:
            return
        known = self.channels
        for record in records:
            if record.channel not in known:
                await self.ensure_channels([r.channel for r in records])
                break
        await self.send(records)

    def validate(self, records: Sequence[RawRecord]) -> None:
        """The engine's refusals of records the contract accepts, before anything is sent
        (:class:`~hexa_event.errors.InvalidEventError`, :func:`~hexa_event.driver.refuse`)."""
        del records

    async def provision(self, channels: Sequence[str]) -> None:
        """Make sure the channels exist, once per driver (:meth:`ensure_channels`)."""
        self.check_open()
        await self.ensure_channels(channels)

    async def ensure_channels(self, channels: Sequence[str]) -> None:
        """Hand the channels not provisioned yet to :meth:`create_channels` and remember
        what it made sure of; one pass at a time, so concurrent first publishes share it."""
        known = self.channels
        if all(channel in known for channel in channels):
            return
        async with self._provisioning:
            missing = [c for c in dict.fromkeys(channels) if c not in known]
            if missing:
                known.update(await self.create_channels(missing))

    async def discard(self, channels: Sequence[str]) -> None:
        """Forget ``channels`` and hand them to :meth:`delete_channels` (no-op once closed)."""
        if self.closed:
            return
        for channel in channels:
            self.channels.pop(channel, None)
        await self.delete_channels(channels)

    async def delete_channels(self, channels: Sequence[str]) -> None:
        """Delete ``channels`` and what they hold (:meth:`Driver.discard`). The default
        keeps them: nothing is paid for a channel on this engine."""
        del channels

    async def create_channels(self, channels: Sequence[str]) -> Mapping[str, int]:
        """Make sure ``channels`` (none provisioned yet) exist, or raise
        :class:`~hexa_event.errors.ChannelNotFoundError` when provisioning is off; the
        partition count of each (0: not partitioned, or not told). Default: nothing to do."""
        return dict.fromkeys(channels, 0)

    async def close(self) -> None:
        """Close the subscriptions this driver made, then the engine's own clients
        (:meth:`close_engine`), to the end also when the caller is cancelled; a second call
        waits for the first."""
        if self._closing is None:
            self.closed = True
            self._closing = asyncio.ensure_future(self._close())
        await asyncio.shield(self._closing)

    async def _close(self) -> None:
        """Every subscription's close, then the engine's, even when one raises (the first
        error is raised at the end)."""
        subscriptions = list(self.subscriptions)
        self.subscriptions.clear()
        failed: list[Exception] = []
        for subscription in subscriptions:
            try:
                await subscription.close()
            except Exception as exc:
                logger.warning("closing a subscription failed: %s: %s", type(exc).__name__, exc)
                failed.append(exc)
        await self.close_engine()
        if failed:
            raise failed[0]

    async def close_engine(self) -> None:
        """The engine's own close, after the subscriptions: flush or fail the producer,
        close clients and connections. Nothing by default."""

    @abc.abstractmethod
    async def send(self, records: Sequence[RawRecord]) -> None:
        """The engine's own send of checked records (at least one) whose channels are
        provisioned; returns once all are durably stored, raises DriverError otherwise."""
