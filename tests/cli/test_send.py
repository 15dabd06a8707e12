"""``mailconsole send`` publishes valid jobs (persistent, confirmed) and refuses bad ones."""

from __future__ import annotations

import json
from pathlib import Path

import aio_pika
import pytest

from mailconsole.cli import main

pytestmark = pytest.mark.rabbitmq


async def drain(
    amqp_url: str, queue: str
) -> list[aio_pika.abc.AbstractIncomingMessage]:
    got = []
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        q = await channel.declare_queue(queue, durable=True)
        while (message := await q.get(no_ack=True, fail=False)) is not None:
            got.append(message)
    return got


def run_cli(*args: str) -> int:
    # asyncio.run inside the CLI needs a thread without a running loop.
    import concurrent.futures

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(main, list(args)).result()


async def test_send_from_flags_publishes_one_persistent_job_and_prints_its_id(
    amqp_url: str, queue_name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code = run_cli(
        "--amqp-url",
        amqp_url,
        "--queue",
        queue_name,
        "send",
        "--from",
        "Shop <shop@example.com>",
        "--to",
        "bob@example.com",
        "--to",
        "carol@example.com",
        "--subject",
        "Hi",
        "--text",
        "Hello",
    )
    assert code == 0
    printed = capsys.readouterr().out.split()
    [message] = await drain(amqp_url, queue_name)
    body = json.loads(message.body)
    assert printed == [body["id"]] and message.message_id == body["id"]
    assert body["to"] == ["bob@example.com", "carol@example.com"]
    assert message.delivery_mode == aio_pika.DeliveryMode.PERSISTENT


async def test_send_json_lines_publishes_each(
    amqp_url: str, queue_name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    jobs = tmp_path / "jobs.jsonl"
    jobs.write_text(
        "\n".join(
            json.dumps(
                {
                    "id": f"job-{n}",
                    "from": "a@example.com",
                    "to": "b@example.com",
                    "text": "x",
                }
            )
            for n in range(3)
        )
    )
    assert (
        run_cli(
            "--amqp-url", amqp_url, "--queue", queue_name, "send", "--json", str(jobs)
        )
        == 0
    )
    assert capsys.readouterr().out.split() == ["job-0", "job-1", "job-2"]
    assert len(await drain(amqp_url, queue_name)) == 3


async def test_an_invalid_job_is_refused_with_exit_2_and_nothing_published(
    amqp_url: str, queue_name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code = run_cli(
        "--amqp-url",
        amqp_url,
        "--queue",
        queue_name,
        "send",
        "--from",
        "shop@example.com",
        "--to",
        "bob@",
        "--text",
        "x",
    )
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("mailconsole: invalid job:") and "bob@" in err
    assert await drain(amqp_url, queue_name) == []


def test_send_with_no_broker_is_one_line_and_exit_1(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code = main(
        [
            "--amqp-url",
            "amqp://guest:guest@127.0.0.1:1/",
            "send",
            "--from",
            "a@example.com",
            "--to",
            "b@example.com",
            "--text",
            "x",
        ]
    )
    assert code == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "RabbitMQ is not reachable" in err
