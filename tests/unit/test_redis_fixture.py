"""The Redis test server and the shared client work together (the base of the Redis tests)."""

from __future__ import annotations

from longread_server.state.redis import connect

from tests.redis_server import RedisServer


async def test_shared_client_talks_to_real_redis(redis_server: RedisServer) -> None:
    r = connect(redis_server.url)
    try:
        assert await r.ping()
        await r.set(b"longread:test", b"1", px=1000)
        assert await r.get(b"longread:test") == b"1"
    finally:
        await r.aclose()
