"""The few calls of Pulsar's HTTP admin API the driver needs (stdlib HTTP).

Methods block (run them in a thread) except the coroutines ``channels``, ``backlog`` and
``delete_subscription``. The bearer token goes in a header, never in a message or log line.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import urllib.error
import urllib.request
from typing import Any
from urllib.parse import quote

from ...errors import DriverError
from ...redaction import redact_url
from .options import PulsarOptions

log = logging.getLogger(__name__)

_TIMEOUT = 15.0
_PARTITION_SUFFIX = re.compile(r"-partition-\d+$")


class PulsarAdmin:
    """Admin API calls for one tenant/namespace."""

    def __init__(self, options: PulsarOptions) -> None:
        root = f"{options.admin_url.rstrip('/')}/admin/v2"
        where = f"{quote(options.tenant)}/{quote(options.namespace)}"
        self._base = f"{root}/persistent/{where}"
        self._namespace = f"{root}/namespaces/{where}"
        self._headers = options.admin_headers()
        self._where = redact_url(options.admin_url)

    def _call(
        self, method: str, path: str, body: Any = None, *, namespace: bool = False
    ) -> tuple[int, Any]:
        data = None if body is None else json.dumps(body).encode()
        headers = dict(self._headers)
        if data is not None:
            headers["Content-Type"] = "application/json"
        base = self._namespace if namespace else self._base
        request = urllib.request.Request(base + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=_TIMEOUT) as response:
                raw = response.read()
                return response.status, (json.loads(raw) if raw else None)
        except urllib.error.HTTPError as exc:
            return exc.code, None
        except (OSError, ValueError) as exc:
            raise DriverError(
                f"Pulsar admin API at {self._where} did not answer {method} {path}: "
                f"{type(exc).__name__}: {exc}; check PulsarOptions.admin_url"
            ) from None

    def _topic_path(self, channel: str) -> str:
        return "/" + quote(channel, safe="")

    def partitions(self, channel: str) -> int | None:
        """None when the topic does not exist, 0 when it is not partitioned."""
        status, body = self._call("GET", self._topic_path(channel) + "/partitions")
        if status == 404:
            return None
        if status != 200 or not isinstance(body, dict):
            raise DriverError(f"Pulsar admin API: reading topic {channel!r} gave HTTP {status}")
        return int(body.get("partitions", 0))

    def create(self, channel: str, partitions: int) -> None:
        """Non-partitioned with ``partitions`` 1; an existing topic is left alone."""
        suffix, body = ("/partitions", partitions) if partitions > 1 else ("", None)
        status, _ = self._call("PUT", self._topic_path(channel) + suffix, body)
        if status not in (200, 204, 409):
            hint = "; the token needs admin rights on the namespace" if status in (401, 403) else ""
            raise DriverError(
                f"Pulsar admin API: creating topic {channel!r} gave HTTP {status}{hint}",
                retriable=status not in (401, 403),
            )

    def retain_forever(self, channel: str) -> bool:
        """Topic-level retention without limits (dead letters wait for a reader)."""
        body = {"retentionTimeInMinutes": -1, "retentionSizeInMB": -1}
        status, _ = self._call("POST", self._topic_path(channel) + "/retention", body)
        return status in (200, 204)

    def namespace_status(self) -> int:
        """HTTP status of reading the namespace's policies (200: it exists and we may read)."""
        status, _ = self._call("GET", "", namespace=True)
        return status

    def subscriptions(self, channel: str) -> list[str]:
        """Subscription names on ``channel`` (empty when the topic does not exist)."""
        status, body = self._call("GET", self._topic_path(channel) + "/subscriptions")
        return [str(s) for s in body] if status == 200 and isinstance(body, list) else []

    def backlog_of(self, channel: str, subscription: str) -> int | None:
        """Pulsar's backlog of ``subscription`` on ``channel`` (None: unknown), in stored
        entries (a batch counts once): a lower bound on the messages not acknowledged."""
        for path in ("/stats", "/partitioned-stats"):
            status, body = self._call("GET", self._topic_path(channel) + path)
            if status == 200 and isinstance(body, dict):
                sub = (body.get("subscriptions") or {}).get(subscription)
                return int(sub.get("msgBacklog", 0)) if isinstance(sub, dict) else None
        return None

    async def delete_subscription(self, channels: list[str], subscription: str) -> None:
        """Delete ``subscription`` from ``channels`` (a throwaway one, closed); a failure is
        logged, never raised."""

        def delete() -> None:
            name = quote(subscription, safe="")
            for channel in channels:
                path = f"{self._topic_path(channel)}/subscription/{name}?force=true"
                try:
                    status: object = self._call("DELETE", path)[0]
                except DriverError as exc:
                    status = exc
                if status not in (200, 204, 404):
                    log.warning(
                        "could not delete throwaway subscription %r of %r: %s (HTTP status or "
                        "error)",
                        subscription,
                        channel,
                        status,
                    )

        await asyncio.to_thread(delete)

    def delete(self, channel: str) -> None:
        """Delete the topic (partitioned or not) and what it holds; a missing one is fine."""
        path = self._topic_path(channel)
        status, _ = self._call("DELETE", path + "/partitions?force=true")
        if status in (404, 409):  # not partitioned (409: a non-partitioned topic of that name)
            status, _ = self._call("DELETE", path + "?force=true")
        if status not in (200, 204, 404):
            raise DriverError(
                f"Pulsar admin API: deleting topic {channel!r} gave HTTP {status}",
                retriable=status not in (401, 403),
            )

    async def channels(self) -> list[str]:
        """Every persistent topic of the namespace, as channel names (partitions folded)."""

        def listing() -> list[str]:
            found: set[str] = set()
            for path in ("", "/partitioned"):
                status, body = self._call("GET", path)
                if status != 200 or not isinstance(body, list):
                    raise DriverError(f"Pulsar admin API: listing topics gave HTTP {status}")
                for topic in body:
                    short = str(topic).rsplit("/", 1)[-1]
                    found.add(_PARTITION_SUFFIX.sub("", short))
            return sorted(found)

        return await asyncio.to_thread(listing)

    async def backlog(self, channels: list[str], subscription: str) -> dict[str, int | None]:
        """The subscription's backlog on each of ``channels`` (None: unknown)."""

        def each() -> dict[str, int | None]:
            return {c: self.backlog_of(c, subscription) for c in dict.fromkeys(channels)}

        return await asyncio.to_thread(each)
