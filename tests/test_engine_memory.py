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
# Bytes the server's own code may keep per booted charger (traced allocations with a frame of the
# server in their traceback), event history included.  Measured: about 4,300 (11,400 before
# the per-connection objects were made lean: a CallQueue task, deques, sets made up front).
# 4,300 bytes on Python 3.11 (11,400 before the lean objects); 3.9 and 3.10 keep a dict per
# instance and per coroutine more, 7,200 bytes.
MAX_BYTES_PER_CHARGER = 6000 if sys.version_info >= (3, 11) else 9000


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
    own = [tracemalloc.Filter(True, server_file, all_frames=True)]
    grown = sum(stat.size_diff for stat in
                after.filter_traces(own).compare_to(before.filter_traces(own), "filename"))
    per_charger = grown / CHARGERS
    assert per_charger < MAX_BYTES_PER_CHARGER, f"{per_charger:.0f} bytes per charger"
