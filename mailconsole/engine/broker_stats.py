"""What AMQP does not tell about a queue: its unacknowledged deliveries.

A passive ``queue.declare`` answers with the ready messages and the consumers only;
the count of deliveries handed out and not yet acknowledged (what every worker holds
in its prefetch window) lives in RabbitMQ's management API. It is asked over HTTP,
with a short timeout, and any failure is "unknown", never an error: the figure is for
display. RabbitMQ refreshes it every ``collect_statistics_interval`` (5 s by default).
Must not know about mail.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time
import urllib.error
import urllib.request
from urllib.parse import quote, unquote, urlsplit

log = logging.getLogger(__name__)

MANAGEMENT_PORT = 15672
TIMEOUT = 2.0
SAMPLE_INTERVAL = 5.0
"""RabbitMQ's default ``collect_statistics_interval``: asking more often than this
returns the same figure."""


def management_url_for(amqp_url: str) -> str:
    """The management API beside an AMQP URL: same host and credentials, port 15672,
    HTTPS when the AMQP link is TLS (``amqps``), the vhost kept as the path."""
    parts = urlsplit(amqp_url)
    scheme = "https" if parts.scheme == "amqps" else "http"
    creds = parts.netloc.rpartition("@")[0]
    host = parts.hostname or "localhost"
    if ":" in host:  # an IPv6 literal
        host = f"[{host}]"
    auth = f"{creds}@" if creds else ""
    return f"{scheme}://{auth}{host}:{MANAGEMENT_PORT}{parts.path or '/'}"


def _queue_endpoint(management_url: str, queue: str) -> tuple[str, str]:
    """The queue's API address and its basic-auth header (guest's when none)."""
    parts = urlsplit(management_url)
    vhost = unquote(parts.path[1:]) or "/"
    user = unquote(parts.username or "guest")
    password = unquote(parts.password or "guest")
    host = parts.hostname or "localhost"
    if ":" in host:
        host = f"[{host}]"
    port = f":{parts.port}" if parts.port else ""
    url = (
        f"{parts.scheme}://{host}{port}/api/queues/"
        f"{quote(vhost, safe='')}/{quote(queue, safe='')}"
    )
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return url, f"Basic {token}"


def _get_unacked(url: str, auth: str, timeout: float) -> int | None:
    request = urllib.request.Request(url, headers={"Authorization": auth})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        data = json.load(response)
    value = data.get("messages_unacknowledged")
    return int(value) if isinstance(value, int) else None


async def unacked(
    management_url: str, queue: str, timeout: float = TIMEOUT
) -> int | None:
    """Deliveries of ``queue`` handed out and not yet acknowledged, or ``None`` when
    the management API does not answer (not enabled, no permission, a new queue
    whose statistics are not sampled yet)."""
    url, auth = _queue_endpoint(management_url, queue)
    try:
        return await asyncio.to_thread(_get_unacked, url, auth, timeout)
    except (OSError, ValueError, urllib.error.URLError) as exc:
        # The credentials are in the URL: name only the host.
        log.debug("unacked count from %s: %s", urlsplit(url).netloc, exc)
        return None


class UnackedCount:
    """:func:`unacked` for one queue, asked at most once per :data:`SAMPLE_INTERVAL`
    (the live screen refreshes every second; the broker's figure does not)."""

    def __init__(self, management_url: str, queue: str) -> None:
        self.management_url = management_url
        self.queue = queue
        self._value: int | None = None
        self._asked = -SAMPLE_INTERVAL

    async def get(self) -> int | None:
        now = time.monotonic()
        if now - self._asked >= SAMPLE_INTERVAL:
            self._asked = now
            self._value = await unacked(self.management_url, self.queue)
        return self._value
