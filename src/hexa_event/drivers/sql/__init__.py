"""The SQL driver: a durable event log in SQLite or PostgreSQL tables (the embedded default):
``hexa_event.connect("sqlite:///data/app.db")``, options the fields of :class:`SqlOptions`;
:func:`migrate` creates the tables (done on first use unless ``create_tables=False``),
:func:`ddl` returns the same DDL as text."""

from .consumer import SqlSubscription
from .driver import SqlDriver
from .options import SqlOptions
from .partitions import SqlDelivery
from .schema import ddl, metadata, migrate

__all__ = [
    "SqlDelivery",
    "SqlDriver",
    "SqlOptions",
    "SqlSubscription",
    "ddl",
    "metadata",
    "migrate",
]
