"""A group's lag from the streaming server's HTTP monitoring endpoint
(``/streaming/channelsz``; the STAN protocol cannot tell it). The formula and how a group's
subscriptions are found: docs/engines/stan.md#lag. Blocking: run it on a thread.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import quote

from ...errors import DriverError
from ...redaction import redact_urls
from .protocol import SubscriptionRequest

TIMEOUT = 5.0


def channel_state(base: str, channel: str) -> dict[str, Any] | None:
    """The channel's state with its subscriptions; None when the server has no such
    channel (nothing was ever published or subscribed on it)."""
    url = f"{base.rstrip('/')}/streaming/channelsz?channel={quote(channel, safe='')}&subs=1"
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT) as page:
            body = json.loads(page.read().decode())
        return body if isinstance(body, dict) else None
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return None
        why = f"HTTP {exc.code}"
    except (OSError, ValueError) as exc:
        why = f"{type(exc).__name__}: {exc}"
    raise DriverError(
        f"STAN monitoring endpoint {redact_urls(base.rstrip('/'))} did not answer ({why}): "
        "is StanOptions.monitor_url the server's -m/--http_port address?"
    )


def lag(
    base: str, client_id: str, members: Iterable[tuple[str, SubscriptionRequest]]
) -> dict[str, int]:
    """Per channel, ``last_seq - max(last_sent) + sum(pending_count)`` of the group's
    subscriptions there: 0 on a channel the server does not know, none where it does not
    know the group yet."""
    out: dict[str, int] = {}
    for channel, request in members:
        state = channel_state(base, channel)
        if state is None:
            out[channel] = 0
            continue
        subs = [s for s in state.get("subscriptions") or () if _ours(s, request, client_id)]
        if not subs:
            continue
        last_sent = max(int(s.get("last_sent", 0)) for s in subs)
        pending = sum(int(s.get("pending_count", 0)) for s in subs)
        out[channel] = max(0, int(state.get("last_seq", 0)) - last_sent) + pending
    return out


def _ours(sub: Mapping[str, Any], request: SubscriptionRequest, client_id: str) -> bool:
    """Whether ``sub`` is the group's: by queue name, durable name and client id, or inbox."""
    if request.q_group:
        durable = request.durable_name
        return bool(sub.get("queue_name") == (f"{durable}:" if durable else "") + request.q_group)
    if request.durable_name:
        return (sub.get("durable_name"), sub.get("client_id")) == (request.durable_name, client_id)
    return bool(sub.get("inbox") == request.inbox)
