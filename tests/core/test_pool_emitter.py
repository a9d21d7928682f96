"""Pool, emitters, bridge, connections and bus: ownership checks, limits, slow consumers."""

from __future__ import annotations

import asyncio

import pytest

from corral import (
    AgentRegistry,
    Connection,
    Event,
    EventType,
    ExecutionEngineFactory,
    InProcessEventBus,
    RunStatus,
    UserWebSocketEmitter,
    WebSocketBridgeFactory,
    WebSocketConnectionPool,
)
from corral.core.connection import CLOSE_TRY_AGAIN_LATER, ConnectionState
from corral.core.events import loads
from corral.core.pool import ConnectionLimitError
from corral.errors import OwnershipError

from .conftest import (
    WAIT_S,
    BusSink,
    Connect,
    NeverReadsTransport,
    RecordingTransport,
    new_ctx,
    run_to_end,
)


def event_of(user_id: str, seq: int = 1, run_id: str = "run_a") -> Event:
    return Event(
        type=EventType.AGENT_THINKING,
        run_id=run_id,
        thread_id="thr_a",
        seq=seq,
        data={"text": f"for {user_id}"},
        user_id=user_id,
    )


# --- emitter ----------------------------------------------------------------------------------


async def test_emitter_refuses_another_users_event_and_reports_it() -> None:
    pool = WebSocketConnectionPool()
    transport = RecordingTransport()
    conn = Connection("alice", transport)
    conn.start()
    pool.add("alice", conn)
    violations: list[Event] = []
    emitter = UserWebSocketEmitter("alice", pool, on_violation=violations.append)

    foreign = event_of("bob")
    assert emitter.deliver(foreign) == 0
    assert violations == [foreign]
    assert conn.buffered_bytes == 0  # nothing was queued for alice

    own = event_of("alice", seq=2)
    assert emitter.deliver(own) == 1
    await transport.wait_for_frames(1)
    assert transport.decoded() == [loads(own.to_json())]
    await conn.close()


async def test_emitter_delivers_to_every_connection_of_its_user_only() -> None:
    pool = WebSocketConnectionPool()
    conns = {
        name: Connection(user, RecordingTransport())
        for name, user in [("a1", "alice"), ("a2", "alice"), ("b1", "bob")]
    }
    for conn in conns.values():
        pool.add(conn.user_id, conn)
    emitter = UserWebSocketEmitter("alice", pool)
    assert emitter.deliver(event_of("alice")) == 2
    assert conns["a1"].buffered_bytes == conns["a2"].buffered_bytes > 0
    assert conns["b1"].buffered_bytes == 0


# --- pool -------------------------------------------------------------------------------------


def test_pool_refuses_add_and_remove_for_another_user() -> None:
    pool = WebSocketConnectionPool()
    bobs = Connection("bob", RecordingTransport())
    with pytest.raises(OwnershipError) as info:
        pool.add("alice", bobs)
    assert (info.value.expected_user, info.value.got_user) == ("alice", "bob")
    assert pool.connections("alice") == ()
    assert pool.user_count() == 0

    pool.add("bob", bobs)
    with pytest.raises(OwnershipError):
        pool.remove("alice", bobs)
    assert pool.connections("bob") == (bobs,)


def test_pool_refuses_connections_over_the_cap() -> None:
    pool = WebSocketConnectionPool(max_per_user=3)
    conns = [Connection("alice", RecordingTransport()) for _ in range(3)]
    assert [pool.add("alice", c) for c in conns] == [True, False, False]
    with pytest.raises(ConnectionLimitError) as info:
        pool.add("alice", Connection("alice", RecordingTransport()))
    assert (info.value.user_id, info.value.limit) == ("alice", 3)
    assert len(pool.connections("alice")) == 3
    # Other users have their own allowance; run-filtered streams (SSE) do not count.
    pool.add("bob", Connection("bob", RecordingTransport()))
    pool.add("alice", Connection("alice", RecordingTransport(), kind="sse", run_filter="r"))
    assert pool.connection_count("ws") == 4
    assert pool.connection_count() == 5


def test_pool_forgets_users_with_no_connection() -> None:
    pool = WebSocketConnectionPool()
    first, second = (Connection("alice", RecordingTransport()) for _ in range(2))
    pool.add("alice", first)
    pool.add("alice", second)
    assert pool.remove("alice", first) is False
    assert pool.remove("alice", second) is True
    assert pool.remove("alice", second) is False  # idempotent
    assert not pool.has_user("alice")
    assert pool.user_count() == 0
    assert pool.all_connections() == []


# --- bridge and bus ---------------------------------------------------------------------------


async def test_bridge_attach_over_the_cap_registers_nothing(bus: InProcessEventBus) -> None:
    pool = WebSocketConnectionPool(max_per_user=1)
    bridge = WebSocketBridgeFactory(pool, bus)
    first = Connection("alice", RecordingTransport())
    await bridge.attach(first)
    extra = Connection("alice", RecordingTransport())
    with pytest.raises(ConnectionLimitError):
        await bridge.attach(extra)
    assert pool.connections("alice") == (first,)
    assert bus.subscribed_users() == bridge.subscribed_users() == 1
    await bridge.detach(first)
    assert bus.subscribed_users() == bridge.subscribed_users() == 0
    assert pool.user_count() == 0


async def test_last_detach_ends_the_users_subscription(
    bus: InProcessEventBus, bridge: WebSocketBridgeFactory
) -> None:
    conns = [Connection("alice", RecordingTransport()) for _ in range(3)]
    await asyncio.gather(*(bridge.attach(c) for c in conns))
    assert bus.subscribed_users() == 1  # one subscription per user, not per connection
    for conn in conns[:-1]:
        await bridge.detach(conn)
        assert bus.subscribed_users() == 1
    await bridge.detach(conns[-1])
    await bridge.detach(conns[-1])  # idempotent
    assert bus.subscribed_users() == bridge.subscribed_users() == 0


async def test_bus_delivers_only_to_the_events_owner(bus: InProcessEventBus) -> None:
    got: dict[str, list[int]] = {"alice": [], "bob": []}
    subs = [
        await bus.subscribe(user, lambda event, payload, user=user: got[user].append(event.seq))
        for user in got
    ]
    await bus.publish([(event_of("alice", 1), b"{}")])
    await bus.publish([(event_of("bob", 2), b"{}")])
    await bus.publish([(event_of("carol", 3), b"{}")])
    assert got == {"alice": [1], "bob": [2]}
    for sub in subs:
        await sub.close()
    assert bus.subscribed_users() == 0


async def test_one_failing_handler_does_not_starve_the_others(bus: InProcessEventBus) -> None:
    got: list[int] = []

    def broken(event: Event, payload: bytes) -> None:
        raise RuntimeError("handler bug")

    await bus.subscribe("alice", broken)
    await bus.subscribe("alice", lambda event, payload: got.append(event.seq))
    await bus.publish([(event_of("alice", 7), b"{}")])
    assert got == [7]


# --- connections ------------------------------------------------------------------------------


async def test_slow_consumer_is_closed_1013_while_others_keep_receiving(
    registry: AgentRegistry, sink: BusSink, connect: Connect
) -> None:
    """A connection whose peer never reads is closed with 1013 once its bound is reached;
    its user's run is not slowed, and another user's connection receives everything."""
    bound = 4096
    at_close: list[int] = []
    slow_transport = NeverReadsTransport()
    slow, _ = await connect(
        "slowpoke",
        slow_transport,
        max_buffered_bytes=bound,
        on_slow_consumer=lambda conn: at_close.append(conn.buffered_bytes),
    )
    _, fast_transport = await connect("speedy")
    factory = ExecutionEngineFactory(registry)
    slow_ctx, fast_ctx = new_ctx("slowpoke"), new_ctx("speedy")
    outcomes = await asyncio.wait_for(
        asyncio.gather(
            run_to_end(factory, sink, slow_ctx, "work", {"canary": "s" * 200, "steps": 40}),
            run_to_end(factory, sink, fast_ctx, "work", {"canary": "f" * 200, "steps": 40}),
        ),
        WAIT_S,
    )
    assert [o.status for o in outcomes] == [RunStatus.SUCCEEDED, RunStatus.SUCCEEDED]

    await asyncio.wait_for(slow_transport.closed.wait(), WAIT_S)
    assert slow_transport.close_code == CLOSE_TRY_AGAIN_LATER == 1013
    assert slow.close_code == 1013
    assert len(at_close) == 1
    assert 0 < at_close[0] <= bound  # never held more than its bound
    assert slow_transport.sends_started == 1  # the one frame stuck in flight
    assert slow.buffered_bytes == 0  # and nothing is kept after closing
    assert slow.offer_event(sink.runs[slow_ctx.run_id][0], b"late") is False

    expected = sink.wire(fast_ctx.run_id)
    await fast_transport.wait_for_frames(len(expected))
    assert fast_transport.decoded() == expected


async def test_connection_filtered_to_one_run_gets_only_that_run() -> None:
    transport = RecordingTransport()
    conn = Connection("alice", transport, kind="sse", run_filter="run_b")
    conn.start()
    assert conn.offer_event(event_of("alice", 1, run_id="run_a"), b"a") is False
    assert conn.offer_event(event_of("alice", 1, run_id="run_b"), b"b") is True
    await transport.wait_for_frames(1)
    assert transport.frames == [b"b"]
    await conn.close()


async def test_hold_and_release_resume_without_gap_or_duplicate() -> None:
    transport = RecordingTransport()
    conn = Connection("alice", transport)
    conn.start()
    conn.hold("run_a")
    live = [event_of("alice", seq) for seq in range(1, 6)]
    for event in live:  # live events arrive while the stored ones are replayed
        assert conn.offer_event(event, event.to_json())
    assert conn.buffered_bytes == sum(len(e.to_json()) for e in live)
    conn.offer(b'{"replay": "done"}')  # written while run_a's live events stay held
    await transport.wait_for_frames(1)
    assert transport.frames == [b'{"replay": "done"}']
    conn.release("run_a", after_seq=3)  # the replay covered 1..3
    await transport.wait_for_frames(3)
    assert [d.get("seq") for d in transport.decoded()] == [None, 4, 5]
    await conn.close()


async def test_a_live_event_published_after_the_release_but_replayed_is_not_sent_twice() -> None:
    """An event is readable from the store a moment before it is published: a replay may send
    it, release the hold, and only then see its live copy arrive — which is dropped."""
    transport = RecordingTransport()
    conn = Connection("alice", transport)
    conn.start()
    conn.hold("run_a")
    conn.offer(b'{"seq": 1}')  # the replay sent the stored 1..2 (as raw bytes)
    conn.offer(b'{"seq": 2}')
    conn.release("run_a", after_seq=2)
    late = [event_of("alice", seq) for seq in (1, 2, 3)]  # published after the release
    assert [conn.offer_event(e, e.to_json()) for e in late] == [False, False, True]
    await transport.wait_for_frames(3)
    assert [d.get("seq") for d in transport.decoded()] == [1, 2, 3]
    other = event_of("alice", 1, run_id="run_b")  # other runs are not affected
    assert conn.offer_event(other, other.to_json())
    await conn.close()


async def test_events_held_during_a_replay_count_toward_the_bound() -> None:
    """A client stalled while its replay goes out cannot make the hold grow without limit."""
    transport = RecordingTransport()
    slow: list[Connection] = []
    conn = Connection("alice", transport, max_buffered_bytes=1000, on_slow_consumer=slow.append)
    conn.start()
    conn.hold("run_a")
    payload = b"x" * 300
    accepted = [conn.offer_event(event_of("alice", seq), payload) for seq in range(1, 6)]
    assert accepted == [True, True, True, False, False]
    assert slow == [conn]
    assert conn.close_code == CLOSE_TRY_AGAIN_LATER
    assert conn.buffered_bytes == 0  # nothing is kept once closed
    await conn.close()
    assert transport.frame_count == 0


async def test_release_moves_held_bytes_to_the_queue_without_double_counting() -> None:
    transport = RecordingTransport()
    conn = Connection("alice", transport, max_buffered_bytes=1000)
    conn.hold("run_a")  # not started: nothing is written, so the counts stay visible
    for seq in range(1, 4):
        assert conn.offer_event(event_of("alice", seq), b"x" * 300)
    assert conn.buffered_bytes == 900
    conn.release("run_a", after_seq=1)
    assert conn.buffered_bytes == 600  # seq 1 was covered by the replay and dropped
    assert conn.offer(b"y" * 400) is True  # exactly at the bound
    assert conn.offer(b"z") is False  # one byte past it
    assert conn.close_code == CLOSE_TRY_AGAIN_LATER
    await conn.close()


async def test_close_is_idempotent_and_stops_queueing() -> None:
    transport = RecordingTransport()
    conn = Connection("alice", transport)
    conn.start()
    await conn.close(1000, "bye")
    await conn.close(1001, "again")
    assert conn.state is ConnectionState.CLOSED
    assert transport.close_code == 1000
    assert conn.offer(b"late") is False
    assert transport.frame_count == 0
