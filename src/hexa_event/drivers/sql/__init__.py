"""The SQL driver: a durable event log in SQLite or PostgreSQL tables (the embedded default).

``hexa_event.connect("sqlite:///data/app.db")`` or
``hexa_event.connect("postgresql://postgres@127.0.0.1:5432/app")``; options are the
fields of :class:`SqlOptions`. :func:`migrate` creates the tables (the driver does it on
first use unless ``create_tables=False``); :func:`ddl` returns the same DDL as text.
"""

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
