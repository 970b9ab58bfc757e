"""The throwaway cluster (cdc.localpg) when its port is taken between choosing it and binding it
(two test sessions side by side choose ports at the same time): a port it chose itself is chosen
again and the server starts; a port it was given is an error naming the bind failure."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import psycopg
import pytest

from cdc import localpg
from cdc.localpg import LocalPostgres, LocalPostgresError

pytestmark = pytest.mark.integration


@pytest.fixture
def taken() -> Iterator[int]:
    """A port something else listens on."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield int(s.getsockname()[1])


def test_a_chosen_port_taken_before_the_bind_is_chosen_again(
    taken: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    chosen = iter([taken])  # the first choice is taken by the time the server binds it
    real = localpg.free_port
    monkeypatch.setattr(localpg, "free_port", lambda: next(chosen, None) or real())
    with LocalPostgres() as pg:
        assert pg.port != taken
        with psycopg.connect(pg.dsn()) as conn:
            assert conn.execute("SHOW port").fetchone() == (str(pg.port),)


def test_a_given_port_that_is_taken_is_an_error(taken: int) -> None:
    pg = LocalPostgres(port=taken)
    with pytest.raises(LocalPostgresError, match="could not bind"):
        pg.start()
    pg.stop()
