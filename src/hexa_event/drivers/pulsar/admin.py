"""The few calls of Pulsar's HTTP admin API the driver needs (stdlib HTTP). Every method
blocks: the driver runs them in a worker thread. The bearer token goes in a header, never in
a message or log line."""

from __future__ import annotations

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
PARTITION_SUFFIX = re.compile(r"-partition-\d+$")
"""What Pulsar appends to a partitioned topic's name for each partition."""


class PulsarAdmin:
    """Admin API calls for one tenant/namespace."""

    def __init__(self, options: PulsarOptions) -> None:
        root = f"{options.admin_url.rstrip('/')}/admin/v2"
        where = f"{quote(options.tenant)}/{quote(options.namespace)}"
        self._topics = f"{root}/persistent/{where}"
        self._namespace = f"{root}/namespaces/{where}"
        self._headers = options.admin_headers()
        self._where = redact_url(options.admin_url)

    def _call(
        self, method: str, channel: str | None, path: str = "", body: Any = None
    ) -> tuple[int, Any]:
        """HTTP status and JSON answer of ``method`` on ``channel``'s topic + ``path`` (the
        namespace's topics with ``channel`` ""; the namespace itself with None)."""
        if channel is None:
            url = self._namespace + path
        else:
            url = self._topics + (f"/{quote(channel, safe='')}" if channel else "") + path
        data = None if body is None else json.dumps(body).encode()
        headers = {**self._headers, **({"Content-Type": "application/json"} if data else {})}
        request = urllib.request.Request(url, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=_TIMEOUT) as response:
                raw = response.read()
                return response.status, (json.loads(raw) if raw else None)
        except urllib.error.HTTPError as exc:
            return exc.code, None
        except (OSError, ValueError) as exc:
            raise DriverError(
                f"Pulsar admin API at {self._where} did not answer {method} "
                f"/{channel or ''}{path}: {type(exc).__name__}: {exc}; check "
                "PulsarOptions.admin_url"
            ) from None

    def partitions(self, channel: str) -> int | None:
        """None when the topic does not exist, 0 when it is not partitioned."""
        status, body = self._call("GET", channel, "/partitions")
        if status == 404:
            return None
        if status != 200 or not isinstance(body, dict):
            raise DriverError(f"Pulsar admin API: reading topic {channel!r} gave HTTP {status}")
        return int(body.get("partitions", 0))

    def create(self, channel: str, partitions: int) -> None:
        """Non-partitioned with ``partitions`` 1; an existing topic is left alone."""
        suffix, body = ("/partitions", partitions) if partitions > 1 else ("", None)
        status, _ = self._call("PUT", channel, suffix, body)
        self._check(status, f"creating topic {channel!r}", (200, 204, 409))

    def _check(self, status: int, doing: str, fine: tuple[int, ...]) -> None:
        if status not in fine:
            hint = "; the token needs admin rights on the namespace" if status in (401, 403) else ""
            raise DriverError(
                f"Pulsar admin API: {doing} gave HTTP {status}{hint}",
                retriable=status not in (401, 403),
            )

    def retain_forever(self, channel: str) -> bool:
        """Topic-level retention without limits (dead letters wait for a reader)."""
        body = {"retentionTimeInMinutes": -1, "retentionSizeInMB": -1}
        return self._call("POST", channel, "/retention", body)[0] in (200, 204)

    def namespace_status(self) -> int:
        """HTTP status of reading the namespace's policies (200: it exists and we may read)."""
        return self._call("GET", None)[0]

    def subscription_stats(self, channels: list[str], subscription: str) -> dict[str, Any]:
        """The topic stats of ``subscription`` on each of ``channels`` that has it (a
        partitioned topic's summed over its partitions, one entry per consumer): its
        ``consumers`` and its ``msgBacklog``, among others."""
        found: dict[str, Any] = {}
        for channel in dict.fromkeys(channels):
            for path in ("/stats", "/partitioned-stats"):
                status, body = self._call("GET", channel, path)
                if status == 200 and isinstance(body, dict):
                    sub = (body.get("subscriptions") or {}).get(subscription)
                    if isinstance(sub, dict):
                        found[channel] = sub
                    break
        return found

    def backlog(self, channels: list[str], subscription: str) -> dict[str, int | None]:
        """Pulsar's backlog of ``subscription`` on each of ``channels`` (None: unknown), in
        stored entries (a batch counts once): a lower bound on the messages not acknowledged."""
        found = self.subscription_stats(channels, subscription)
        return {channel: backlog_of(found.get(channel)) for channel in dict.fromkeys(channels)}

    def delete_subscription(self, channels: list[str], subscription: str) -> None:
        """Delete ``subscription`` from ``channels`` (a throwaway one, closed); a failure is
        logged, never raised."""
        path = f"/subscription/{quote(subscription, safe='')}?force=true"
        for channel in channels:
            try:
                status: object = self._call("DELETE", channel, path)[0]
            except DriverError as exc:
                status = exc
            if status not in (200, 204, 404):
                what = f"throwaway subscription {subscription!r} of {channel!r}"
                log.warning("could not delete %s: %s (HTTP status or error)", what, status)

    def delete(self, channel: str) -> None:
        """Delete the topic (partitioned or not) and what it holds; a missing one is fine."""
        status, _ = self._call("DELETE", channel, "/partitions?force=true")
        if status in (404, 409):  # not partitioned (409: a non-partitioned topic of that name)
            status, _ = self._call("DELETE", channel, "?force=true")
        self._check(status, f"deleting topic {channel!r}", (200, 204, 404))

    def channels(self) -> list[str]:
        """Every persistent topic of the namespace, as channel names (partitions folded)."""
        found: set[str] = set()
        for path in ("", "/partitioned"):
            status, body = self._call("GET", "", path)
            if status != 200 or not isinstance(body, list):
                raise DriverError(f"Pulsar admin API: listing topics gave HTTP {status}")
            found.update(PARTITION_SUFFIX.sub("", str(t).rsplit("/", 1)[-1]) for t in body)
        return sorted(found)


def backlog_of(stats: Any) -> int | None:
    """The ``msgBacklog`` of a subscription's ``stats`` (None: not a number, or no stats)."""
    count = stats.get("msgBacklog", 0) if isinstance(stats, dict) else None
    return count if isinstance(count, int) and not isinstance(count, bool) else None
