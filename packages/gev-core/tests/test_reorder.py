"""ReplyOrder: replies leave in request order whatever order they complete in; the bound."""

from __future__ import annotations

import pytest
from gev_core._reorder import ReplyOrder
from hypothesis import given, settings
from hypothesis import strategies as st


def test_in_order_completions_are_ready_at_once():
    order = ReplyOrder(8)
    seqs = [order.reserve() for _ in range(3)]
    assert seqs == [0, 1, 2]
    for seq in seqs:
        assert order.complete(seq, f"r{seq}") is True
    assert order.pop_ready() == ["r0", "r1", "r2"]
    assert order.idle and order.outstanding == 0


def test_a_later_reply_waits_for_the_earlier_one():
    order = ReplyOrder(8)
    a, b, c = order.reserve(), order.reserve(), order.reserve()
    assert order.complete(c, "c") is False
    assert order.complete(b, "b") is False
    assert order.pop_ready() == []
    assert order.outstanding == 3
    assert order.complete(a, "a") is True
    assert order.pop_ready() == ["a", "b", "c"]
    assert order.idle


def test_popping_keeps_later_reservations_outstanding():
    order = ReplyOrder(8)
    a, b = order.reserve(), order.reserve()
    order.complete(a, "a")
    assert order.pop_ready() == ["a"]
    assert order.outstanding == 1 and not order.idle
    c = order.reserve()
    order.complete(c, "c")
    assert order.pop_ready() == []
    order.complete(b, "b")
    assert order.pop_ready() == ["b", "c"]


def test_full_and_drained_marks_have_hysteresis():
    order = ReplyOrder(4)  # resume at 2
    seqs = [order.reserve() for _ in range(3)]
    assert not order.full
    seqs.append(order.reserve())
    assert order.full and not order.drained
    extra = order.reserve()  # what one read delivered is still accepted
    assert order.outstanding == 5
    for seq in [*seqs, extra][:2]:
        order.complete(seq, seq)
    order.pop_ready()
    assert order.outstanding == 3 and not order.full and not order.drained
    order.complete(seqs[2], 2)
    order.pop_ready()
    assert order.drained


def test_bad_sequence_numbers_are_refused():
    order = ReplyOrder(4)
    a = order.reserve()
    with pytest.raises(ValueError):
        order.complete(a + 1, "never reserved")
    order.complete(a, "a")
    with pytest.raises(ValueError):
        order.complete(a, "twice")
    b = order.reserve()
    c = order.reserve()
    order.complete(c, "c")
    with pytest.raises(ValueError):
        order.complete(c, "twice, while waiting")
    order.complete(b, "b")
    assert order.pop_ready() == ["a", "b", "c"]
    with pytest.raises(ValueError):
        order.complete(a, "already popped")


def test_close_drops_everything_and_ignores_late_completions():
    order = ReplyOrder(4)
    a, b, c = order.reserve(), order.reserve(), order.reserve()
    order.complete(b, "b")
    order.complete(a, "a")  # a and b ready, not popped
    dropped = order.close()
    assert sorted(dropped) == ["a", "b"]
    assert order.idle and order.closed
    assert order.complete(c, "late") is False
    assert order.pop_ready() == []
    with pytest.raises(RuntimeError):
        order.reserve()


@pytest.mark.parametrize(("limit", "resume_at"), [(0, -1), (4, 4), (4, 9)])
def test_limits_are_checked(limit, resume_at):
    with pytest.raises(ValueError):
        ReplyOrder(limit, resume_at)


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_any_completion_order_pops_in_request_order(data):
    """Reservations, completions and pops interleaved at random (as a pipelining client and
    jobs finishing in any order produce them): what is popped, concatenated, is exactly the
    reserved sequence, and nothing is popped before everything ahead of it."""
    order = ReplyOrder(data.draw(st.integers(1, 16)))
    pending: list[int] = []
    popped: list[int] = []
    reserved = 0
    for _ in range(data.draw(st.integers(1, 120))):
        action = data.draw(st.sampled_from(["reserve", "complete", "pop"]))
        if action == "reserve" or (action == "complete" and not pending):
            pending.append(order.reserve())
            reserved += 1
        elif action == "complete":
            seq = pending.pop(data.draw(st.integers(0, len(pending) - 1)))
            order.complete(seq, seq)
        else:
            out = order.pop_ready()
            assert out == list(range(len(popped), len(popped) + len(out)))
            popped += out
        assert order.outstanding == reserved - len(popped)
        assert order.full == (order.outstanding >= order.limit)
        # Everything popped so far was complete, and nothing ready waits behind a gap.
        if pending:
            assert all(p >= len(popped) for p in pending)
    for seq in pending:
        order.complete(seq, seq)
    popped += order.pop_ready()
    assert popped == list(range(reserved))
    assert order.idle
