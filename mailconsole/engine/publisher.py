"""Publishing mail jobs to the queue: the Python API behind ``mailconsole send``.

Jobs are validated here with the same parser the worker uses, so a producer learns
of a bad job at once instead of finding it in the dead list. Each job gets an
idempotency key (``id``) before it is published, so publishing it again after an
unconfirmed publish cannot send it twice.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from mailconsole.engine.broker import Broker
from mailconsole.engine.ids import new_message_id
from mailconsole.engine.wire import parse_job


def prepare(job: Mapping[str, Any]) -> tuple[str, bytes]:
    """Validate one extended or .NET job; returns its id and the bytes to publish.

    Raises:
        WireError: the job would be dead on arrival; the text says why.
    """
    data = dict(job)
    if "SenderEmail" not in data and "RecipientEmail" not in data:
        data.setdefault("id", new_message_id())
    body = json.dumps(data, ensure_ascii=False).encode()
    parsed = parse_job(body)
    return parsed.idempotency_key or "", body


async def publish_jobs(broker: Broker, jobs: Iterable[Mapping[str, Any]]) -> list[str]:
    """Publish jobs persistently, each confirmed by the broker; returns their ids.

    Raises:
        WireError: a job is invalid (nothing after it is published).
        PublishFailed: the broker did not confirm.
    """
    ids = []
    for job in jobs:
        message_id, body = prepare(job)
        await broker.publish(body, message_id=message_id or None)
        ids.append(message_id)
    return ids
