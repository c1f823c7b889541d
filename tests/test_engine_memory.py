"""Memory per connection: what the server's own code keeps for each connected, booted charger.

Scenario 5 of bench/bench.py (10,000 chargers) is where it counts; this test keeps the server's
share from growing back, scaled down and in-process.
"""

import asyncio
import json
import sys
import time
import tracemalloc

import pytest
import websockets

import ocpp_mock_server as mock

CHARGERS = 40
# Bytes the server may keep per booted charger: traced allocations with a frame of the server or of
# the websockets library's server side in their traceback (the connection, its handshake, its
# tasks), event history included.  Measured: about 12,300 on Python 3.11 and websockets 17.4
# (11,800 on 13.1), 20,200 on Python 3.9 and websockets 10.3 (a dict per instance and per
# coroutine more); before the handshake's request headers were let go, the tables most chargers
# never fill were made on their first entry and the recent CALL ids were kept in a dict, 14,600
# to 15,500 and 22,900.
MAX_BYTES_PER_CHARGER = 13500 if sys.version_info >= (3, 11) else 22000
# Where the library's server side allocates (a client's allocations pass through neither).
WEBSOCKETS_SERVER_FILES = ("*/websockets/server.py", "*/websockets/asyncio/server.py",
                           "*/websockets/legacy/server.py")


async def _booted_fleet(url: str, count: int) -> list:
    """``count`` chargers, each booted and its BootData answered."""

    async def one(number: int):
        websocket = await websockets.connect(f"{url}/MEM-{number:03d}",
                                             subprotocols=["ocpp1.6"], ping_interval=None)
        await websocket.send(json.dumps([2, "1", "BootNotification",
                                         {"chargePointVendor": "V", "chargePointModel": "M"}]))
        answered = booted = False
        while not (answered and booted):
            frame = json.loads(await websocket.recv())
            if frame[0] == 2:
                await websocket.send(json.dumps([3, frame[1], {"status": "Accepted"}]))
                answered = True
            elif frame[1] == "1":
                booted = True
        return websocket

    return list(await asyncio.gather(*(one(number) for number in range(count))))


def _settled(system, count: int) -> bool:
    sessions = list(system.sessions.values())
    return len(sessions) == count and all(
        session.queue.outstanding is None and not session.queue.calls for session in sessions)


@pytest.mark.slow(2)
def test_memory_per_connection_stays_small(in_process):
    server = in_process("--quiet", "--no-http")
    server_file = mock.__file__
    fleet = []
    tracemalloc.start(8)
    try:
        before = tracemalloc.take_snapshot()

        async def connect_and_measure():
            fleet.extend(await _booted_fleet(server.url, CHARGERS))
            deadline = time.monotonic() + 10
            while not _settled(server.system, CHARGERS) and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
            assert _settled(server.system, CHARGERS)
            snapshot = tracemalloc.take_snapshot()
            await asyncio.gather(*(websocket.close() for websocket in fleet))
            return snapshot

        after = asyncio.run(connect_and_measure())
    finally:
        tracemalloc.stop()
    own = [tracemalloc.Filter(True, name, all_frames=True)
           for name in (server_file, *WEBSOCKETS_SERVER_FILES)]
    grown = sum(stat.size_diff for stat in
                after.filter_traces(own).compare_to(before.filter_traces(own), "filename"))
    per_charger = grown / CHARGERS
    assert per_charger < MAX_BYTES_PER_CHARGER, f"{per_charger:.0f} bytes per charger"
