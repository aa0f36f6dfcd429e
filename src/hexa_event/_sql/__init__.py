"""The private SQL foundation under the SQL driver, the outbox and the inbox.

One place for what the three share, each module with one job:

- :mod:`.urls`: database URL parsing, normalisation to an asyncio or blocking DBAPI, and
  password redaction (for logs, reprs and errors).
- :mod:`.engine`: async engine creation (SQLite WAL, busy timeout, manual ``BEGIN``), the
  write transaction start, and "is this engine ours to dispose of".
- :mod:`.names`: where a table set lives (PostgreSQL schema, table prefix): name checks,
  the ``?schema=``/``?table_prefix=`` URL query, the per-set NOTIFY channel.
- :mod:`.dialects`: dialect-specific statements (upserts, insert-or-ignore) and DDL text.
- :mod:`.schema`: creating tables idempotently from sync or async binds.
- :mod:`.listen`: the PostgreSQL ``LISTEN`` loop (reconnecting, asyncpg only).
- :mod:`.problems`: one-line summaries of database errors, without SQL or passwords.
- :mod:`.clock`: the timestamps stored in the tables.
- :mod:`.cleaner`: deleting expired rows in small batches (outbox and inbox cleaners).
- :mod:`.turns`: pacing a loop's write transactions on SQLite so the application gets the
  one write lock too.

It imports only :mod:`hexa_event.errors` and SQLAlchemy; nothing imports upwards into it.
"""
