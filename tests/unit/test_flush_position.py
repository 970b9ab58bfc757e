"""The flush position reported to the server never passes a transaction that is not durable."""

from __future__ import annotations

from cdc.stream import FlushPosition


def test_an_idle_stream_follows_keepalives() -> None:
    p = FlushPosition(0x100)
    p.keepalive(0x500)
    assert (p.write, p.flush) == (0x500, 0x500)


def test_a_keepalive_mid_batch_moves_write_but_not_flush() -> None:
    p = FlushPosition(0x100)
    p.received(0x300)
    p.handed_out()  # a transaction ending at 0x300 is with the consumer, not durable yet
    p.keepalive(0x900)
    assert (p.write, p.flush) == (0x900, 0x100)


def test_a_confirmation_that_is_not_caught_up_keeps_keepalives_out() -> None:
    """The consumer made one transaction durable while it still holds the next (the rest of
    its read, or a transaction it is assembling): keepalives must not jump past that one."""
    p = FlushPosition(0x100)
    p.handed_out()
    p.confirm(0x200, caught_up=False)
    p.keepalive(0x900)
    assert p.flush == 0x200
    p.confirm(0x300, caught_up=True)
    assert p.flush == 0x300
    p.keepalive(0x900)
    assert p.flush == 0x900


def test_neither_position_moves_backward() -> None:
    p = FlushPosition(0x500)
    p.confirm(0x300, caught_up=True)
    p.keepalive(0x400)
    p.received(0x200)
    assert (p.write, p.flush) == (0x400, 0x500)


def test_new_data_after_catching_up_is_pending_again() -> None:
    p = FlushPosition()
    p.confirm(0x200, caught_up=True)
    p.handed_out()
    p.keepalive(0x800)
    assert p.flush == 0x200
