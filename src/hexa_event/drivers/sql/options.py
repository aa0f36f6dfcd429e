"""Options of the SQL driver: a frozen dataclass validated at construction; ``repr`` and
every log line show the URL's password as ``***``."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Literal

from ..._sql.names import TableNames, check_channel, check_dialect, table_names
from ..._sql.urls import DATABASE_PARAMETERS, parse
from ...errors import ConfigurationError
from ...numbers import check_number
from ..kit.options import DriverOptions, check_choice, check_count
from ..kit.query import take_query

TABLES = (
    "hexa_log",
    "hexa_channels",
    "hexa_positions",
    "hexa_members",
    "hexa_redeliveries",
    "hexa_acked",
    "hexa_meta",
)
"""The driver's tables (before any ``table_prefix``)."""
DERIVED_NAMES = (
    *TABLES,
    *(f"{table}_pkey" for table in TABLES),
    "hexa_log_id_seq",
    "hexa_log_by_partition",
    "hexa_positions_by_owner",
    "hexa_redeliveries_due",
)
"""Every name PostgreSQL derives from a table name (tables, primary keys, the sequence,
the indexes): all must fit its 63-byte limit once prefixed (a test keeps it in step with
:func:`~hexa_event.drivers.sql.schema.metadata`)."""
NOTIFY_TABLE = "hexa_log"
"""Publishes NOTIFY on the log table's qualified name (``schema.prefixhexa_log``)."""


def names_for(
    schema: str | None, table_prefix: str | None, dialect: str | None, owner: str = "SQL driver"
) -> TableNames:
    """Checked :class:`TableNames` for the driver's tables (``dialect``: refuse a schema on
    SQLite); :class:`ConfigurationError` naming what to change otherwise."""
    names = table_names(schema, table_prefix, owner=owner, derived=DERIVED_NAMES)
    if dialect is not None:
        check_dialect(names, dialect, owner=owner)
    check_channel(names, NOTIFY_TABLE, owner=owner)
    return names


@dataclass(frozen=True, slots=True, repr=False)
class SqlOptions(DriverOptions):
    """How the SQL driver connects and paces itself. Every field has a working default."""

    engine = "SQL driver"
    url_field = "url"
    url_fields = ("url",)
    masked_fields = ("engine_options",)

    url: str
    """SQLAlchemy-style URL: ``sqlite:///path.db`` or ``postgresql://user@host/db``. Options
    of ours in its query (``?lease_ttl=30``) are taken out into their fields, unless a
    keyword set the field (a keyword wins, as in ``from_url``; here a keyword given at the
    field's default cannot be told from none, so the query's value is taken)."""
    create_tables: bool = True
    """Create the tables on first use (:func:`~hexa_event.drivers.sql.migrate`)."""
    partitions: int = 16
    """Virtual partitions per channel (by key hash): at most this many processes of one
    group share a channel. Stored when the tables are created; later processes use that."""
    lease_ttl: float = 10.0
    """Seconds a member keeps its partitions without heartbeats; a crashed member's
    unsettled deliveries are redelivered to the group after this."""
    heartbeat_interval: float = 1.0
    """Seconds between heartbeats (lease renewal, rebalancing, channel discovery)."""
    poll_interval: float = 0.05
    """First poll delay when idle; doubles up to ``max_poll_interval``. Publishes in this
    process (and NOTIFY on PostgreSQL) wake consumers at once."""
    max_poll_interval: float = 0.5
    ack_interval: float = 0.02
    """Settlements are written at most this often: the core's ``settle`` batches arriving
    within it share one transaction (a crash may redeliver what was not written)."""
    publish_batch: int = 2000
    """Most rows one publish transaction carries (concurrent publishes are grouped)."""
    notify: bool = True
    """PostgreSQL: NOTIFY once per publish transaction and LISTEN for wake-ups."""
    busy_timeout: float = 30.0
    """SQLite: seconds a writer waits for the database lock held by another process."""
    sqlite_synchronous: Literal["OFF", "NORMAL", "FULL", "EXTRA"] = "NORMAL"
    """SQLite ``PRAGMA synchronous``. With WAL, NORMAL survives process crashes but may lose
    the last commits on power loss; FULL survives power loss too (slower)."""
    pool_size: int = 5
    engine_options: Mapping[str, Any] = field(default_factory=dict)
    """Passed as is to ``sqlalchemy.ext.asyncio.create_async_engine``."""
    schema: str | None = None
    """PostgreSQL schema holding the tables (None: the connection's ``search_path``),
    created if missing; refused on SQLite (use ``table_prefix``)."""
    table_prefix: str = ""
    """Put before every table, index and NOTIFY channel name (``billing_`` gives
    ``billing_hexa_log``). Both names: lowercase letters, digits and ``_``, within
    PostgreSQL's 63 bytes once derived (``<prefix>hexa_positions_by_owner``)."""

    def __post_init__(self) -> None:
        if not isinstance(self.url, str) or "://" not in self.url:
            raise ConfigurationError("SqlOptions.url must be a URL such as sqlite:///app.db")
        self._take_query_options()
        object.__setattr__(self, "schema", self.schema or None)
        object.__setattr__(self, "table_prefix", self.table_prefix or "")
        # A bad host, port or bracket is named now, not at first use.
        names_for(self.schema, self.table_prefix, parse(self.url).get_backend_name(), "SqlOptions")
        check_count("SqlOptions", "partitions", self.partitions, maximum=1024)
        for f in fields(self):
            if f.type == "float":  # every float field is a duration in seconds
                seconds = getattr(self, f.name)
                check_number(
                    f"SqlOptions.{f.name} (seconds)", seconds, maximum=86_400.0, above=True
                )
        if self.heartbeat_interval * 2 >= self.lease_ttl:
            raise ConfigurationError(
                "SqlOptions.lease_ttl must be more than twice heartbeat_interval, or leases "
                "expire between heartbeats"
            )
        if self.max_poll_interval < self.poll_interval:
            raise ConfigurationError("SqlOptions.max_poll_interval must be >= poll_interval")
        check_count("SqlOptions", "publish_batch", self.publish_batch)
        check_count("SqlOptions", "pool_size", self.pool_size)
        synchronous = ("OFF", "NORMAL", "FULL", "EXTRA")
        check_choice("SqlOptions", "sqlite_synchronous", self.sqlite_synchronous, synchronous)

    @classmethod
    def url_query(cls, url: str) -> tuple[dict[str, Any], str]:
        """The options of ours in ``url``'s query (``?lease_ttl=30``), typed, and ``url``
        without them; the others must be the database driver's parameters."""
        backend = url.split(":", 1)[0].split("+", 1)[0].lower()
        allowed = DATABASE_PARAMETERS.get("postgresql" if backend == "postgres" else backend)
        return take_query(
            cls,
            url,
            engine="SQL",
            exclude=("url",),
            passthrough=(lambda _: True) if allowed is None else allowed.__contains__,
            hint=f"Database driver parameters pass through: {', '.join(sorted(allowed or ()))}",
        )

    def _take_query_options(self) -> None:
        """Move the query options of ours out of :attr:`url` into the fields a keyword left
        at their default (a keyword that changed a field wins, as in ``from_url``)."""
        typed, url = self.url_query(self.url)
        object.__setattr__(self, "url", url)
        for f in fields(self):
            if f.name in typed and getattr(self, f.name) in (None, f.default):
                object.__setattr__(self, f.name, typed[f.name])

    @property
    def names(self) -> TableNames:
        """Where the tables live (schema and prefix), checked."""
        return TableNames(self.schema, self.table_prefix)
