"""Kafka security end to end: a real Kafka 4.1.1 broker whose client listener is SASL_SSL
(SCRAM-SHA-512 over TLS, certificate from a throw-away CA). The batch engine worker, the
optimizer, the topic admin and the Faust engine all connect with the settings alone
(`SHELFCAST_KAFKA_SECURITY_PROTOCOL`, `..._SASL_*`, `..._SSL_CAFILE`) and process events; wrong
credentials, a missing CA or plaintext are refused; the password appears in no log."""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
from pathlib import Path

import asyncpg
import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from pydantic import SecretStr

from optimizer.service import OptimizerService
from runtime.kafka_config import client_kwargs
from runtime.settings import Settings, settings_env
from schemas import RestockEvent
from shelfcast.worker_process import WorkerProcess
from streams.topics import ensure_topics
from tests.chaos.harness import make_stream, wait_caught_up
from tests.conftest import SecureKafka
from tests.support.kafka import produce, read_all

pytestmark = pytest.mark.timeout(240)


def secure_settings(kafka: SecureKafka, prefix: str, **overrides: object) -> Settings:
    values: dict[str, object] = dict(
        **kafka.settings_values(),
        topic_prefix=f"{prefix}.",
        shop_topic_prefix=f"{prefix}.shop.",
        app_id=f"{prefix}-app",
        topic_partitions=2,
        take_max=200,
        kafka_session_timeout_s=6,
        model="moving_average",  # about the connection, not the model
    )
    values.update(overrides)
    return Settings(**values)


async def connects(settings: Settings) -> bool:
    producer = AIOKafkaProducer(**client_kwargs(settings), request_timeout_ms=5000)
    try:
        await asyncio.wait_for(producer.start(), 20)
    except (KafkaError, OSError, TimeoutError):
        return False
    finally:
        await producer.stop()
    return True


async def test_only_the_right_credentials_over_verified_tls_get_in(
    secure_kafka: SecureKafka, fresh_topic_prefix: str, tmp_path: Path
):
    good = secure_settings(secure_kafka, fresh_topic_prefix)
    assert await connects(good)
    wrong_password = good.model_copy(update={"kafka_sasl_password": SecretStr("not-the-password")})
    assert not await connects(wrong_password)
    other_ca = tmp_path / "other-ca.pem"
    import trustme

    trustme.CA().cert_pem.write_to_path(str(other_ca))
    assert not await connects(good.model_copy(update={"kafka_ssl_cafile": other_ca}))
    plaintext = good.model_copy(update={"kafka_security_protocol": "PLAINTEXT"})
    assert not await connects(plaintext)


async def test_worker_and_optimizer_process_events_over_sasl_ssl(
    secure_kafka: SecureKafka,
    pg_database: str,
    fresh_topic_prefix: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
):
    """The batch engine (a `shelfcast worker` process) and the optimizer run against the
    SASL_SSL listener; every restock the worker decides is planned exactly once."""
    caplog.set_level(logging.DEBUG)
    settings = secure_settings(secure_kafka, fresh_topic_prefix, database_url=pg_database)
    await ensure_topics(settings)
    stream = make_stream(skus=30, days=4, orders=500)
    worker = WorkerProcess(settings, tmp_path / "worker.log", name="secure-worker")
    stop = asyncio.Event()
    optimizer = OptimizerService(settings, pg_database)
    task = asyncio.create_task(optimizer.run(stop))
    try:
        worker.start()
        await asyncio.to_thread(worker.wait_ready, 120)
        await produce(settings, settings.topics.stock, stream.snapshots)
        await produce(settings, settings.topics.orders, stream.orders)
        await wait_caught_up(settings, 120)
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
        worker.stop()
    restocks = {RestockEvent.model_validate_json(r.value).restock_id
                for r in await read_all(settings, settings.topics.restock)}
    conn = await asyncpg.connect(pg_database)
    try:
        lines = await conn.fetch("SELECT restock_id, count(*) AS n FROM plan_lines GROUP BY 1")
    finally:
        await conn.close()
    assert restocks and {r["restock_id"] for r in lines} == restocks
    assert all(r["n"] == 1 for r in lines)
    assert optimizer.counters.restocks_in >= len(restocks)
    logs = [worker.log_path.read_text(), caplog.text, secure_kafka.log_path.read_text()]
    assert "shelfcast batch engine: ready" in logs[0]
    assert all(secure_kafka.password not in text for text in logs)


async def test_faust_engine_processes_events_over_sasl_ssl(
    secure_kafka: SecureKafka, fresh_topic_prefix: str, tmp_path: Path
):
    """`SHELFCAST_ENGINE=faust`: the Faust app gets the same SASL/TLS settings
    (broker_credentials) and turns orders into restocks on the secured broker."""
    settings = secure_settings(secure_kafka, fresh_topic_prefix, engine="faust")
    await ensure_topics(settings)
    stream = make_stream(skus=10, days=3, orders=150, bad_every=10_000)
    worker = WorkerProcess(settings, tmp_path / "faust.log", name="faust-worker")
    try:
        worker.start()
        await asyncio.to_thread(worker.wait_ready, 180)
        await produce(settings, settings.topics.stock, stream.snapshots)
        await produce(settings, settings.topics.orders, stream.orders)
        await wait_caught_up(settings, 120, optimizer=False)
    finally:
        worker.stop()
    assert await read_all(settings, settings.topics.restock), "no restock decided"
    assert secure_kafka.password not in worker.log_path.read_text()


def test_settings_command_masks_the_password(secure_kafka: SecureKafka):
    settings = Settings(**secure_kafka.settings_values())
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHELFCAST_")}
    env.update(settings_env(settings))
    done = subprocess.run([sys.executable, "-m", "shelfcast", "settings"], env=env,
                          capture_output=True, text=True, timeout=60, check=True)
    assert "SASL_SSL" in done.stdout and secure_kafka.password not in done.stdout + done.stderr
