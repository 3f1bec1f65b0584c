"""The worker protocol's schema, its channel and its generated docs, without a worker process."""

from __future__ import annotations

import asyncio
import logging
import types
import typing
from typing import Any

import msgpack
import pytest
from waiting import wait_for

from sfu import errors as media_errors
from sfu import ipc
from sfu import worker_protocol as wp
from sfu import worker_protocol_docs as docs
from sfu.event_bridge import MAX_HELD, EventGate
from sfu.ipc import BadMessageLog, ControlChannel, Dispatch, socketpair
from sfu.typed_maps import Struct

WAIT_S = 5.0


def sample(tp: Any, depth: int = 0) -> Any:
    """A value of type ``tp`` that is not a default, so a lost field shows."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return sample(next(a for a in typing.get_args(tp) if a is not type(None)), depth)
    if origin is list:
        return [sample(typing.get_args(tp)[0], depth + 1) for _ in range(2)]
    if origin is dict:
        key, val = typing.get_args(tp)
        return {sample(key, depth + 1): sample(val, depth + 1)}
    if isinstance(tp, type) and issubclass(tp, Struct):
        return sample_struct(tp)
    return {int: 2**40 + depth, str: f"s{depth}", bytes: b"\x00\xff", bool: True}[tp]


def sample_struct(cls: type[Struct]) -> Any:
    return cls(**{spec.name: sample(spec.type) for spec in cls.specs})  # type: ignore[call-arg]


def wire(message: wp.WorkerMessage, **envelope: Any) -> Any:
    """What crosses the socket and comes out of msgpack on the other side."""
    return msgpack.unpackb(msgpack.packb({**wp.encode(message), **envelope}),
                           strict_map_key=False)


@pytest.mark.parametrize("op", sorted(wp.MESSAGES))
def test_every_message_type_survives_the_wire(op: str) -> None:
    cls = wp.MESSAGES[op]
    message = sample_struct(cls)
    envelope = {"req": 7} if cls.reply_type is not None else {}
    assert wp.decode(wire(message, **envelope), cls.direction) == message


def test_ops_are_unique_and_both_directions_and_replies_are_declared() -> None:
    assert len(wp.ops(wp.Direction.TO_WORKER)) >= 10
    assert len(wp.ops(wp.Direction.FROM_WORKER)) >= 7
    for cls in wp.MESSAGES.values():
        if cls.reply_type is not None:
            assert cls.reply_type.direction is wp.Direction.REPLY
            assert cls.reply_type.op in wp.MESSAGES


def refused(data: Any, accepts: wp.Direction = wp.Direction.TO_WORKER) -> wp.ProtocolError:
    with pytest.raises(wp.ProtocolError) as caught:
        wp.decode(data, accepts)
    return caught.value


def test_an_unknown_op_is_refused_by_name() -> None:
    error = refused({"op": "prodcuer_closed", "key": 1})
    assert (error.reason, error.op) == (wp.Reason.UNKNOWN_OP, "prodcuer_closed")


@pytest.mark.parametrize(
    "data",
    [None, [1, 2], b"op", {"key": 1}, {"op": 5}],
    ids=["nil", "array", "bytes", "no-op", "op-not-a-string"],
)
def test_what_is_not_a_message_is_undecodable(data: Any) -> None:
    assert refused(data).reason is wp.Reason.UNDECODABLE


@pytest.mark.parametrize(
    ("data", "says"),
    [
        ({"op": "producer_closed"}, "missing field 'key'"),
        ({"op": "producer_closed", "key": "1"}, "field 'key'"),
        ({"op": "producer_closed", "key": True}, "field 'key'"),
        ({"op": "producer_closed", "key": 1, "kee": 2}, "unknown fields ['kee']"),
        ({"op": "producers_added", "room": "r", "keys": [1, "2"]}, "field 'keys'"),
        ({"op": "event", "room": "r", "packed": "text, not bytes"}, "field 'packed'"),
        ({"op": "shutdown", "now": True}, "unknown fields ['now']"),
    ],
)
def test_malformed_fields_are_refused_saying_which(data: dict[str, Any], says: str) -> None:
    error = refused(data)
    assert error.reason is wp.Reason.MALFORMED
    assert says in error.detail


def test_a_malformed_nested_value_is_refused() -> None:
    play = wire(sample_struct(wp.Play), req=1)
    del play["layout"]["codecs"]
    assert "field 'layout'" in refused(play).detail
    play = wire(sample_struct(wp.Play), req=1)
    codec = next(iter(play["layout"]["codecs"].values()))
    codec["clock_rate"] = "90000"
    assert refused(play).reason is wp.Reason.MALFORMED


def test_a_request_without_its_id_is_malformed() -> None:
    error = refused(wire(sample_struct(wp.CloseLeg)))
    assert error.reason is wp.Reason.MALFORMED and "req" in error.detail


def test_a_message_the_other_side_receives_is_refused_here() -> None:
    error = refused(wire(wp.Ready(pid=1)), wp.Direction.TO_WORKER)
    assert error.reason is wp.Reason.WRONG_DIRECTION
    assert refused(wire(wp.Shutdown()), wp.Direction.FROM_WORKER).reason is (
        wp.Reason.WRONG_DIRECTION
    )


@pytest.mark.parametrize(
    "exc",
    [media_errors.RoomFull("full"), media_errors.OfferTooLarge("big"),
     media_errors.BadOffer("odd", "wrong_direction"), media_errors.MediaError("plain")],
    ids=lambda e: type(e).__name__,
)
def test_a_media_error_crosses_as_the_same_class_and_code(exc: media_errors.MediaError) -> None:
    reply = wp.decode(wire(wp.PlayReply(error=wp.ErrorInfo.of(exc))), wp.Direction.REPLY)
    assert isinstance(reply, wp.PlayReply) and reply.error is not None
    again = reply.error.exception()
    assert type(again) is type(exc)
    assert (again.code, again.message) == (exc.code, exc.message)


def test_an_error_class_this_side_does_not_know_stays_a_media_error() -> None:
    again = wp.ErrorInfo("FromTheFuture", "future_code", "later").exception()
    assert type(again) is media_errors.MediaError
    assert (again.code, again.message) == ("future_code", "later")


def test_a_dispatch_table_must_cover_every_op_of_its_side() -> None:
    dispatch = Dispatch(wp.Direction.FROM_WORKER)
    dispatch.on(wp.Ready, lambda m: None)
    with pytest.raises(ValueError, match="no handler for"):
        dispatch.check()
    with pytest.raises(ValueError, match="not pool -> worker"):
        Dispatch(wp.Direction.TO_WORKER).on(wp.Ready, lambda m: None)
    with pytest.raises(ValueError, match="use on_request"):
        Dispatch(wp.Direction.TO_WORKER).on(wp.Play, lambda m: None)
    with pytest.raises(ValueError, match="has a handler already"):
        dispatch.on(wp.Ready, lambda m: None)


def full_dispatch(direction: wp.Direction, seen: list[wp.WorkerMessage]) -> Dispatch:
    dispatch = Dispatch(direction)
    for op in sorted(wp.ops(direction)):
        cls = wp.MESSAGES[op]
        if cls.reply_type is None:
            dispatch.on(cls, seen.append)
        else:
            reply_type = cls.reply_type

            async def answer(message: wp.WorkerMessage, r: Any = reply_type) -> Any:
                seen.append(message)
                return sample_struct(r)

            dispatch.on_request(cls, answer)
    return dispatch


async def test_a_channel_counts_and_logs_bad_messages_and_keeps_serving(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(ipc, "BAD_MESSAGES", BadMessageLog())  # nothing logged before counts
    here, there = socketpair()
    to_worker: list[wp.WorkerMessage] = []
    from_worker: list[wp.WorkerMessage] = []
    closed: list[bool] = []
    pool = ControlChannel(here, full_dispatch(wp.Direction.FROM_WORKER, from_worker),
                          lambda: closed.append(True), peer="worker-0")
    worker = ControlChannel(there, full_dispatch(wp.Direction.TO_WORKER, to_worker),
                            lambda: closed.append(True), peer="pool")
    caplog.set_level(logging.WARNING, logger="shopcast.sfu.ipc")
    garbage = [b"\xc1", msgpack.packb({"op": "nope"}), msgpack.packb({"op": "nope"}),
               msgpack.packb({"op": "sr", "key": 1}), msgpack.packb({"op": "ready", "pid": 1})]
    for datagram in garbage:
        here.send(datagram)
    pool.send(wp.ProducerClosed(key=3))
    reply = await pool.request(sample_struct(wp.CloseLeg), wp.CloseLegReply)
    assert reply == sample_struct(wp.CloseLegReply)
    assert to_worker == [wp.ProducerClosed(key=3), sample_struct(wp.CloseLeg)]
    assert worker.bad == {"undecodable": 1, "unknown_op": 2, "malformed": 1,
                          "wrong_direction": 1}
    lines = [r.getMessage() for r in caplog.records if "bad control message" in r.getMessage()]
    assert len(lines) == 4, lines  # the second "nope" within the minute is counted, not logged
    assert any("reason=unknown_op op='nope' peer=pool" in line for line in lines)
    worker.send(wp.Stats({"retransmits": {1: 2}}, viewers=3, bad_messages=dict(worker.bad)))
    await wait_for(lambda: len(from_worker) == 1, WAIT_S, "stats")
    assert from_worker[0] == wp.Stats({"retransmits": {1: 2}}, 3, dict(worker.bad))
    assert pool.bad == {}
    worker.close()
    await wait_for(lambda: closed == [True], WAIT_S, "the close")
    pool.close()


async def test_a_malformed_reply_fails_its_request_at_once() -> None:
    here, there = socketpair()
    pool = ControlChannel(here, full_dispatch(wp.Direction.FROM_WORKER, []), lambda: None)
    request = asyncio.ensure_future(pool.request(sample_struct(wp.CloseLeg), wp.CloseLegReply))
    await asyncio.sleep(0.05)
    there.setblocking(True)
    sent = msgpack.unpackb(there.recv(65536))
    there.send(msgpack.packb({"op": "close_leg_reply", "closed": "yes", "req": sent["req"],
                              "reply": True}))
    with pytest.raises(wp.ProtocolError, match="field 'closed'"):
        async with asyncio.timeout(WAIT_S):
            await request
    assert pool.bad == {"malformed": 1}
    pool.close()
    there.close()


def test_bad_message_logs_are_limited_per_reason_and_op() -> None:
    log = BadMessageLog(interval_s=60)
    unknown = wp.ProtocolError(wp.Reason.UNKNOWN_OP, "x", "")
    assert log.report(unknown, "w") is True
    assert log.report(unknown, "w") is False
    assert log.report(wp.ProtocolError(wp.Reason.UNKNOWN_OP, "y", ""), "w") is True
    assert log.report(wp.ProtocolError(wp.Reason.MALFORMED, "x", ""), "w") is True
    assert BadMessageLog(interval_s=0).report(unknown, "w") is True


def test_the_gate_holds_room_events_until_the_join_state_went_out() -> None:
    sent: list[bytes] = []
    gate = EventGate(sent.append)
    for i in range(MAX_HELD + 5):
        gate.deliver(b"%d" % i)
    assert sent == []
    gate.release()
    assert len(sent) == MAX_HELD and sent[0] == b"0"
    gate.deliver(b"live")
    assert sent[-1] == b"live"


def test_docs_match_the_schema_module() -> None:
    text = docs.DOC.read_text()
    assert docs.generated_part(text) == docs.render(), "run: python -m sfu.worker_protocol_docs"
    for op in wp.MESSAGES:
        assert f"| `{op}` |" in docs.render()
