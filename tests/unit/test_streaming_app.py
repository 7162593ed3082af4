"""The Faust app built from settings: what it hands to the Kafka client."""

from __future__ import annotations

import asyncio

import pytest

from fraudstream.config import Settings
from streaming.app import create_app

pytestmark = pytest.mark.unit


def test_worker_consumer_takes_the_fetch_wait_from_the_settings() -> None:
    settings = Settings(kafka={"fetch_max_wait_ms": 25})
    app = create_app(settings, "127.0.0.1:9", app_id="fetch-wait-test")

    async def build() -> int:
        thread = app.consumer._thread  # type: ignore[attr-defined]
        consumer = thread._create_worker_consumer(app.transport)
        return int(consumer._fetch_max_wait_ms)

    assert asyncio.run(build()) == 25
    assert app.conf.web_enabled is False  # never an open port by default
