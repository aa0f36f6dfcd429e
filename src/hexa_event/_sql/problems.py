"""One-line summaries of database errors: no SQL statement, no parameters, no password."""

from __future__ import annotations

from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from ..errors import DriverError


def escaped(text: str) -> str:
    """``text`` with a NUL and lone surrogates escaped (``\\x00``, ``\\udcff``): what
    any log, any database text column and any UTF-8 encoder takes. An error's text is the
    driver's or the database's, which may echo anything (a key, a header, a name)."""
    if text.isascii() and "\x00" not in text:
        return text
    return text.encode("utf-8", "backslashreplace").decode("utf-8").replace("\x00", "\\x00")


def brief(exc: BaseException) -> str:
    """An error's first line (SQLAlchemy appends the SQL and its parameters below it),
    :func:`escaped`, at most 500 characters."""
    text = str(exc).strip()
    return escaped(text.splitlines()[0])[:500] if text else type(exc).__name__


def driver_error(where: str, operation: str, exc: BaseException) -> DriverError:
    """A :class:`DriverError` for ``exc`` naming ``where`` (a redacted URL) and the operation.

    Database and network failures are retriable; SQLAlchemy usage errors are not.
    """
    if isinstance(exc, DriverError):
        return exc
    orig: BaseException = exc
    if isinstance(exc, DBAPIError) and exc.orig is not None:
        orig = exc.orig
    detail = escaped(str(orig).strip().splitlines()[0])[:300] if str(orig).strip() else ""
    retriable = isinstance(exc, DBAPIError | OSError | TimeoutError) or not isinstance(
        exc, SQLAlchemyError
    )
    return DriverError(
        f"{where}: {operation} failed: {type(orig).__name__}: {detail}",
        retriable=retriable,
    )
