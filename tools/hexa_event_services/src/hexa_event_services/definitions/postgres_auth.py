"""A PostgreSQL cluster with password authentication, on demand (``up postgres-auth``).

Its own data dir and port (``HEXA_POSTGRES_AUTH_URL``, default
``postgresql://hexa_app@127.0.0.1:5433/hexa_event_auth``). Over TCP, the application role
``hexa_app`` must give its password (SCRAM-SHA-256); only the ``postgres`` superuser, which
the harness uses to probe and set up, is trusted. The database is owned by ``hexa_app``.
The password is in ``PG_USERS``: test credentials only.
"""

from __future__ import annotations

import shutil
import urllib.parse
from pathlib import Path

from ..config import env
from ..probes import pg_query
from .postgres import Postgres

PG_USERS: dict[str, str] = {"hexa_app": "hexa-app-test-secret"}
"""Login roles and their passwords: test credentials."""

_HBA = """# hexa-event postgres-auth: passwords over TCP, except the harness's superuser
local   all   all                    trust
host    all   postgres  127.0.0.1/32 trust
host    all   all       127.0.0.1/32 scram-sha-256
"""


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


class PostgresAuth(Postgres):
    name = "postgres-auth"

    @property
    def url(self) -> str:
        """The application's URL, without the password (see :meth:`url_with_password`)."""
        return env("HEXA_POSTGRES_AUTH_URL")

    @property
    def admin_url(self) -> str:
        parts = urllib.parse.urlsplit(self.url)
        netloc = f"postgres@{parts.hostname}:{parts.port or 5432}"
        return urllib.parse.urlunsplit(parts._replace(netloc=netloc))

    @property
    def user(self) -> str:
        return urllib.parse.unquote(urllib.parse.urlsplit(self.url).username or "hexa_app")

    def url_with_password(self, password: str | None = None) -> str:
        """The application's URL with ``password`` (by default the right one)."""
        parts = urllib.parse.urlsplit(self.url)
        secret = PG_USERS.get(self.user, "") if password is None else password
        netloc = (
            f"{urllib.parse.quote(self.user)}:{urllib.parse.quote(secret, safe='')}"
            f"@{parts.hostname}:{parts.port or 5432}"
        )
        return urllib.parse.urlunsplit(parts._replace(netloc=netloc))

    def _configure(self, data_dir: Path) -> None:
        hba = data_dir / "pg_hba.conf"
        hba.write_text(_HBA)
        if self._os_user is not None:
            shutil.chown(hba, self._os_user, self._os_user)

    def _command(self) -> tuple[list[str], dict[str, str], Path, str | None]:
        argv, extra, cwd, user = super()._command()
        argv += ["-c", "password_encryption=scram-sha-256", "-c", "max_connections=100"]
        return argv, extra, cwd, user

    def _after_ready(self) -> None:
        for role, password in PG_USERS.items():
            exists = pg_query(
                self.admin_url,
                f"select 1 from pg_roles where rolname = {_literal(role)}",
                dbname="postgres",
            )
            verb = "alter" if exists else "create"
            pg_query(
                self.admin_url,
                f'{verb} role "{role}" login password {_literal(password)}',
                dbname="postgres",
            )
        super()._after_ready()
        pg_query(
            self.admin_url,
            f'alter database "{self.dbname}" owner to "{self.user}"',
            dbname="postgres",
        )
