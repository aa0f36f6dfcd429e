"""A group's lag from the streaming server's HTTP monitoring endpoint (``/streaming/channelsz``).

The STAN protocol has no request for "how many messages has this subscription not had
acknowledged"; the server's monitoring port (``-m``) tells, per channel, the last sequence
stored and, per subscription, the last sequence sent to it (``last_sent``) and how many
sent messages await an ack (``pending_count``). A group's lag on a channel is

    last_seq - max(last_sent of its subscriptions) + sum(pending_count of them)

(not sent yet, plus sent and not acknowledged). The group's subscriptions are found by
queue name (``durable:queue`` for a durable queue group, ``queue`` for a plain queue group),
by durable name and client id (a durable), or by inbox (a plain subscription).
"""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import quote

from ...errors import DriverError
from ...redaction import redact_urls
from .protocol import SubscriptionRequest

_TIMEOUT = 5.0


class StanMonitor:
    """Reads ``/streaming/channelsz`` of one server (stdlib HTTP, run on a thread)."""

    def __init__(self, url: str, client_id: str, timeout: float = _TIMEOUT) -> None:
        self._base = url.rstrip("/")
        self._client_id = client_id
        self._timeout = timeout

    def channel_sync(self, channel: str) -> dict[str, Any] | None:
        """The channel's state with its subscriptions; None when the server has no such
        channel (nothing was ever published or subscribed on it)."""
        url = f"{self._base}/streaming/channelsz?channel={quote(channel, safe='')}&subs=1"
        try:
            with urllib.request.urlopen(url, timeout=self._timeout) as page:
                body = json.loads(page.read().decode())
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return None
            raise self._error(f"HTTP {exc.code}") from None
        except (OSError, ValueError) as exc:
            raise self._error(f"{type(exc).__name__}: {exc}") from None
        return body if isinstance(body, dict) else None

    def _error(self, why: str) -> DriverError:
        return DriverError(
            f"STAN monitoring endpoint {redact_urls(self._base)} did not answer ({why}): "
            "is StanOptions.monitor_url the server's -m/--http_port address?"
        )

    def lag_sync(self, members: Iterable[tuple[str, SubscriptionRequest]]) -> dict[str, int]:
        out: dict[str, int] = {}
        for channel, request in members:
            state = self.channel_sync(channel)
            if state is None:
                out[channel] = 0
                continue
            subs = [s for s in state.get("subscriptions") or () if self._ours(s, request)]
            if not subs:
                continue  # not (yet) known to the server: unknown, left out
            last_seq = int(state.get("last_seq", 0))
            last_sent = max(int(s.get("last_sent", 0)) for s in subs)
            pending = sum(int(s.get("pending_count", 0)) for s in subs)
            out[channel] = max(0, last_seq - last_sent) + pending
        return out

    async def lag(self, members: Iterable[tuple[str, SubscriptionRequest]]) -> dict[str, int]:
        return await asyncio.to_thread(self.lag_sync, list(members))

    def _ours(self, sub: Mapping[str, Any], request: SubscriptionRequest) -> bool:
        if request.q_group:
            name = (
                f"{request.durable_name}:{request.q_group}"
                if request.durable_name
                else request.q_group
            )
            return bool(sub.get("queue_name") == name)
        if request.durable_name:
            return bool(
                sub.get("durable_name") == request.durable_name
                and sub.get("client_id") == self._client_id
            )
        return bool(sub.get("inbox") == request.inbox)
