"""A real cluster per test: PostgreSQL, a private Redis, API nodes and workers as processes."""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from conftest import POSTGRES_ENV, REDIS_ENV, postgres_database
from support_cluster import Cluster, PrivateRedis


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[Cluster]:
    """An empty cluster: fresh PostgreSQL database and private Redis; add nodes and workers."""
    if not os.environ.get(POSTGRES_ENV) or not os.environ.get(REDIS_ENV):
        pytest.skip(f"cluster tests need {POSTGRES_ENV} and {REDIS_ENV}")
    if shutil.which("redis-server") is None:
        pytest.skip("cluster tests start their own redis-server; install Redis")
    redis = PrivateRedis()
    redis.start()
    async with postgres_database() as url:
        c = Cluster(
            url,
            redis.url,
            secrets.token_hex(32),
            tmp_path,
            redis,
            env={"CORRAL_SHUTDOWN_GRACE_S": "2"},
        )
        try:
            yield c
        finally:
            for p in [*c.nodes, *c.workers]:
                if p.proc.poll() is None:
                    p.proc.kill()
                    p.proc.wait(10)
            redis.stop()
