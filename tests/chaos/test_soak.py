"""A smaller soak (bench/soak.py runs the full 50,000): 5 % transient replies and
1 % mid-DATA drops at a steady rate; nothing lost or doubled, memory flat."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.soak import run

pytestmark = [pytest.mark.rabbitmq, pytest.mark.chaos]


@pytest.mark.timeout(300)
async def test_soak_5000_messages(amqp_url: str, tmp_path: Path) -> None:
    result = await run(5000, 400.0, amqp_url=amqp_url, workdir=tmp_path)
    result.ledger.show()
    result.show()
    result.ledger.check()
    assert result.ledger.delivered == 5000
    assert result.transient_replies > 100 and result.mid_data_drops > 10
    rss = result.rss_kib
    assert rss["end"] < rss["middle"] * 1.5 + 20_000, rss
