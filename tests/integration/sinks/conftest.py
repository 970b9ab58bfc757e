"""Fixtures of the sink tests: Redis and NATS servers (see services.py) and a namespace per test.

Fresh clusters repeat the same LSNs, so two tests writing to one server would produce equal
idempotency keys and the second would be swallowed as duplicates: every test gets its own
token, and its streams, keys and subjects live under it (removed afterwards).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator

import pytest

from .helpers import nats_cleanup, redis_cleanup
from .services import Service, find_or_start_nats, find_or_start_redis, start_nats, start_redis


def _service(factory: Callable[[], Service]) -> Iterator[Service]:
    try:
        svc = factory()
    except LookupError as exc:
        pytest.skip(str(exc))
    try:
        yield svc
    finally:
        if svc.owned:
            svc.close()


@pytest.fixture(scope="session")
def redis_service() -> Iterator[Service]:
    yield from _service(find_or_start_redis)


@pytest.fixture(scope="session")
def nats_service() -> Iterator[Service]:
    yield from _service(find_or_start_nats)


@pytest.fixture
def own_redis() -> Iterator[Service]:
    """A Redis of this test's own, which it may stop and start."""
    yield from _service(start_redis)


@pytest.fixture
def own_nats() -> Iterator[Service]:
    """A NATS server (JetStream, file storage) of this test's own, which it may stop and start."""
    yield from _service(start_nats)


@pytest.fixture
def ns() -> str:
    """This test's namespace token (lower case, usable in keys, subjects and stream names)."""
    return f"t{uuid.uuid4().hex[:12]}"


@pytest.fixture
def redis_ns(redis_service: Service, ns: str) -> Iterator[str]:
    yield ns
    redis_cleanup(redis_service.url, ns)


@pytest.fixture
def nats_ns(nats_service: Service, ns: str) -> Iterator[str]:
    yield ns
    nats_cleanup(nats_service.url, ns)
