"""One construction path: ``connect(url, **options)`` returns a :class:`Connection`.

A connection is the driver for the URL (it is a :class:`~hexa_event.driver.Driver` itself,
delegating to it) plus the factories of the public face: ``emitter()`` and ``receiver()``.
It sits above the contract, the emitter and the receiver, so none of them imports it.
"""

from __future__ import annotations

import importlib
import weakref
from collections.abc import Callable, Sequence
from typing import Any

from .codecs import Codec
from .driver import Driver, Features, Finding, RawRecord, Subscription, SubscriptionSpec
from .emitter import EmitMiddleware, Emitter
from .errors import ConfigurationError, UnknownSchemeError, install_hint
from .middleware import Middleware
from .propagation import Propagator
from .publishing import PublishMiddleware
from .receiver import Receiver

DriverFactory = Callable[..., Driver]

# scheme -> "module:attribute", imported on first use so unused extras need not be installed.
_BUILTIN: dict[str, str] = {
    "memory": "hexa_event.drivers.memory:MemoryDriver.from_url",
    "sqlite": "hexa_event.drivers.sql:SqlDriver.from_url",
    "postgresql": "hexa_event.drivers.sql:SqlDriver.from_url",
    "postgres": "hexa_event.drivers.sql:SqlDriver.from_url",
    "kafka": "hexa_event.drivers.kafka:KafkaDriver.from_url",
    "pulsar": "hexa_event.drivers.pulsar:PulsarDriver.from_url",
    "nats": "hexa_event.drivers.nats:NatsDriver.from_url",
    "stan": "hexa_event.drivers.stan:StanDriver.from_url",
}
_EXTRA_FOR = {
    "sqlite": "sql",
    "postgresql": "sql",
    "postgres": "sql",
    "kafka": "kafka",
    "pulsar": "pulsar",
    "nats": "nats",
    "stan": "nats",
}
_REGISTERED: dict[str, DriverFactory] = {}


def register_driver(scheme: str, factory: DriverFactory) -> None:
    """Let ``connect`` build ``scheme://`` URLs with ``factory(url, **options)``."""
    _REGISTERED[scheme.lower()] = factory


def known_schemes() -> list[str]:
    return sorted({*_BUILTIN, *_REGISTERED})


def _load(target: str, scheme: str) -> DriverFactory:
    module_name, _, attr_path = target.partition(":")
    try:
        obj: Any = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.startswith("hexa_event"):
            raise ConfigurationError(
                f"the {scheme!r} driver is not available in this version of hexa-event"
            ) from exc
        raise ConfigurationError(
            f"the {scheme!r} driver needs {exc.name!r}: "
            f"{install_hint(_EXTRA_FOR.get(scheme, scheme))}"
        ) from exc
    for part in attr_path.split("."):
        obj = getattr(obj, part)
    return obj  # type: ignore[no-any-return]


class Connection(Driver):
    """A driver with the public face on top: make emitters and receivers from it.

    Publishing, subscribing, provisioning, discarding and closing go to :attr:`driver`, the
    engine's own driver.
    """

    def __init__(self, driver: Driver) -> None:
        self.driver = driver
        self.features: Features = driver.features
        self._emitters: weakref.WeakSet[Emitter] = weakref.WeakSet()

    def __repr__(self) -> str:
        return f"Connection({self.driver!r})"

    async def publish(self, records: Sequence[RawRecord]) -> None:
        await self.driver.publish(records)

    async def subscribe(self, spec: SubscriptionSpec) -> Subscription:
        return await self.driver.subscribe(spec)

    async def provision(self, channels: Sequence[str]) -> None:
        await self.driver.provision(channels)

    async def discard(self, channels: Sequence[str]) -> None:
        await self.driver.discard(channels)

    async def check(self, within: float = 10.0) -> str:
        return await self.driver.check(within)

    async def diagnose(
        self, channels: Sequence[str], groups: Sequence[str], within: float = 10.0
    ) -> list[Finding]:
        return await self.driver.diagnose(channels, groups, within)

    async def close(self) -> None:
        """Close the emitters made here (their reply channels), then the driver."""
        for emitter in list(self._emitters):
            await emitter.close()
        await self.driver.close()

    async def __aenter__(self) -> Connection:
        return self

    def emitter(
        self,
        *,
        codec: str | Codec = "json",
        propagator: Propagator | None = None,
        source: str | None = None,
        middlewares: Sequence[EmitMiddleware] = (),
        publish_middlewares: Sequence[PublishMiddleware] = (),
    ) -> Emitter:
        """An emitter that encodes with ``codec`` and propagates context into headers."""
        emitter = Emitter(
            self.driver,
            codec=codec,
            propagator=propagator,
            source=source,
            middlewares=middlewares,
            publish_middlewares=publish_middlewares,
        )
        self._emitters.add(emitter)
        return emitter

    def receiver(
        self,
        name: str,
        *,
        middlewares: Sequence[Middleware] = (),
        propagator: Propagator | None = None,
        drain_timeout: float = 30.0,
        concurrency: int = 64,
        stall_timeout: float = 300.0,
        lag_interval: float = 5.0,
        publish_middlewares: Sequence[PublishMiddleware] = (),
    ) -> Receiver:
        """A receiver for the service ``name``; subscribe handlers to it, then start it."""
        return Receiver(
            self.driver,
            name=name,
            middlewares=middlewares,
            propagator=propagator,
            drain_timeout=drain_timeout,
            concurrency=concurrency,
            stall_timeout=stall_timeout,
            lag_interval=lag_interval,
            publish_middlewares=publish_middlewares,
        )


def wrap(driver: Driver) -> Connection:
    """``driver`` with the public face on top (a connection is returned as it is)."""
    return driver if isinstance(driver, Connection) else Connection(driver)


def connect(url: str, **options: Any) -> Connection:
    """The connection for ``url``; nothing connects until the first publish or subscribe.

    ``memory://``, ``sqlite:///path.db``, ``postgresql://user@host/db``,
    ``kafka://host:9092``, ``pulsar://host:6650``, ``nats://host:4222``,
    ``stan://host:4222/cluster``. ``options`` are the driver's own keyword options.
    """
    if not isinstance(url, str) or "://" not in url:
        # What precedes an "@" may be a password (``user:secret@host:9092``): never shown.
        shown = f"***@{url.rsplit('@', 1)[1]}" if isinstance(url, str) and "@" in url else url
        raise ConfigurationError(
            f"connect() needs a URL such as 'memory://' or 'kafka://127.0.0.1:9092', got {shown!r}"
        )
    # Not urlsplit: it raises a bare ValueError on a bad host (``[::1`` without its bracket)
    # before the driver could name what to change.
    scheme = url.split("://", 1)[0].lower()
    base = scheme.split("+", 1)[0]
    factory = _REGISTERED.get(scheme) or _REGISTERED.get(base)
    if factory is None:
        target = _BUILTIN.get(scheme) or _BUILTIN.get(base)
        if target is None:
            raise UnknownSchemeError(scheme, known_schemes())
        factory = _load(target, base)
    return wrap(factory(url, **options))
