"""Connections to the shared servers of the distributed mode, one pool per process."""

from __future__ import annotations

import functools

from backend.config import Settings


@functools.cache
def _client(url: str):
    import redis

    # redis-py re-creates its pool in a forked child by itself (it checks the pid).
    return redis.Redis.from_url(
        url, socket_timeout=10, socket_connect_timeout=5, health_check_interval=30
    )


def redis_client(settings: Settings):
    if not settings.redis_url:
        raise ValueError("REDIS_URL is not set")
    return _client(settings.redis_url)
