"""The fault run in its short form (``bench/faults.py`` is the full one): 100 conversations, spread
over 13 s so that webhooks keep arriving through the outages, while workers are SIGKILLed,
RabbitMQ and Redis restart once each, and Chat2Desk fails 27% of sends."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.distributed.conftest import require_services
from tests.distributed.fault_run import FaultPlan, run_faults
from tests.distributed.faults import PrivateRedis

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not PrivateRedis.available(), reason="redis-server is not installed"),
]


@pytest.mark.timeout(300)
async def test_every_conversation_one_order_every_reply_once_in_order_under_faults(
    tmp_path: Path,
) -> None:
    require_services()
    plan = FaultPlan(
        conversations=100,
        in_flight=40,
        talk_for=13.0,  # webhooks keep coming through both outages
        kill_every=3.0,
        rabbit_restart_at=4.0,
        redis_restart_at=10.0,
        outage_seconds=2.0,
        drain_timeout=90.0,
        workdir=tmp_path,
        log=print,
    )
    report = await run_faults(plan)
    print("\n".join(report.lines()))
    assert report.worker_kills >= 2 and report.rabbit_restarts == report.redis_restarts == 1
    assert report.perfect, "\n".join(report.lines())
