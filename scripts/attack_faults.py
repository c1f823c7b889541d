#!/usr/bin/env python3
"""Fault injection attacked at full size (issue 19, items 7 and 8), on loopback, each bounded in
count and time; the suite runs the same attacks scaled down (tests/test_faults.py).

    python scripts/attack_faults.py

1. A delay fault is not a memory leak: one charger pipelines 60,000 Heartbeats under
   --fault 'Heartbeat delay=3600'.  At most MAX_HELD_REPLIES are held; the rest are answered at
   once.  Prints the server's RSS before and after (before the bound: 43 to 99 MB), with the HTTP
   port on (its event history fills too, once for all chargers) and off (the connection's own
   cost, which must stay under 5 MB).
2. Faults in force are bounded and cheap: PUT /api/faults with 40,000 faults is refused at once;
   with MAX_FAULTS faults for other chargers and actions in force, a charger's Heartbeat round trip
   is timed against one fault in force (before the index: ~10 ms a frame at 40,000 faults), and
   the longest Heartbeat round trip while the PUT that sets them runs (before: a 390 ms stall).

Starts its own server (``--quiet``, output to a temporary file) and stops it.  Linux (/proc).
"""

import asyncio
import json
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import websockets

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
import ocpp_mock_server as mock  # noqa: E402  (for its bounds)

PIPELINED = 60000
FAULTS_IN_ONE_PUT = 40000
TIMED_FRAMES = 1000
LIMIT = 180.0  # seconds for each attack, at most


class Server:
    """The mock server in a subprocess, its output in a temporary file."""

    def __init__(self, *args: str) -> None:
        self.log = tempfile.NamedTemporaryFile("w+", suffix=".out")
        command = [
            sys.executable,
            str(ROOT / "ocpp_mock_server.py"),
            "--port",
            "0",
            "--quiet",
            "--no-boot-data",
            *args,
        ]
        self.proc = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=self.log, stderr=subprocess.STDOUT, text=True
        )
        self.url = self.wait_for(r"listening on (ws://\S+)").group(1)
        if "--no-http" not in args:
            self.http_port = int(self.wait_for(r"HTTP API: http://[\d.]+:(\d+)/").group(1))

    def output(self) -> str:
        return Path(self.log.name).read_text(errors="replace")

    def wait_for(self, pattern: str, timeout: float = 10.0) -> "re.Match[str]":
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            match = re.search(pattern, self.output())
            if match:
                return match
            time.sleep(0.05)
        raise SystemExit(f"no line matching {pattern!r}; output:\n{self.output()[-3000:]}")

    def rss_mb(self) -> float:
        status = Path(f"/proc/{self.proc.pid}/status").read_text()
        return int(re.search(r"VmRSS:\s+(\d+)", status).group(1)) / 1024

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


async def put_faults(server: Server, faults: list) -> "tuple[int, float]":
    """PUT /api/faults: (status, seconds it took)."""
    body = json.dumps({"faults": faults}).encode()
    started = time.monotonic()
    reader, writer = await asyncio.open_connection("127.0.0.1", server.http_port)
    head = (
        f"PUT /api/faults HTTP/1.1\r\nHost: 127.0.0.1:{server.http_port}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    writer.write(head.encode() + body)
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
    writer.close()
    return int(head.split()[1]), time.monotonic() - started


async def round_trips(websocket, count: int, prefix: str) -> list:
    times = []
    for number in range(count):
        started = time.perf_counter()
        await websocket.send(json.dumps([2, f"{prefix}{number}", "Heartbeat", {}]))
        await asyncio.wait_for(websocket.recv(), 10)
        times.append(time.perf_counter() - started)
    return times


async def delay_fault_attack(*args: str) -> bool:
    server = Server("--fault", "Heartbeat delay=3600", *args)
    try:
        async with websockets.connect(
            server.url + "/CP-1", subprotocols=["ocpp1.6"], max_queue=None
        ) as charger:
            await asyncio.sleep(0.5)
            before = server.rss_mb()
            received = 0

            async def read() -> None:
                nonlocal received
                while received < PIPELINED - mock.MAX_HELD_REPLIES:
                    await charger.recv()
                    received += 1

            reader = asyncio.ensure_future(read())
            started = time.monotonic()
            for number in range(PIPELINED):
                await charger.send(f'[2,"h{number}","Heartbeat",{{}}]')
            await asyncio.wait_for(reader, LIMIT)
            elapsed = time.monotonic() - started
            after = server.rss_mb()
        lines = server.output().count("are held back by delay faults")
    finally:
        server.stop()
    grew = after - before
    flags = " " + " ".join(args) if args else ""
    print(
        f"1. {PIPELINED} pipelined Heartbeats under delay=3600{flags}: {received} answered at "
        f"once in {elapsed:.1f} s, {mock.MAX_HELD_REPLIES} held; {lines} line(s) said so; "
        f"RSS {before:.0f} -> {after:.0f} MB ({grew:+.1f} MB)"
    )
    # With the HTTP port on, the event history (EVENT_HISTORY_BUDGET characters, for every
    # charger together) fills too: the connection's own share is the --no-http figure.
    return (
        received == PIPELINED - mock.MAX_HELD_REPLIES
        and lines == 1
        and (grew < 5 or "--no-http" not in args)
    )


async def fault_table_attack() -> bool:
    server = Server()
    try:
        refused, refused_in = await put_faults(server, ["Heartbeat drop"] * FAULTS_IN_ONE_PUT)
        async with websockets.connect(server.url + "/CP-1", subprotocols=["ocpp1.6"]) as charger:
            await put_faults(server, ["@CP-2 Heartbeat drop"])
            one = statistics.median(await round_trips(charger, TIMED_FRAMES, "one"))
            many = (
                [f"@CP-X{number} Heartbeat drop" for number in range(400)]
                + [f"@CP-Y{number} disconnect after=5" for number in range(300)]
                + [f"@CP-Z{number} handshake 503 for=60" for number in range(100)]
                + ["Authorize status=Rejected", "DataTransfer status=Rejected"] * 100
            )
            during = asyncio.ensure_future(round_trips(charger, 200, "during"))
            status, took = await put_faults(server, many[: mock.MAX_FAULTS])
            stall = max(await asyncio.wait_for(during, LIMIT))
            full = statistics.median(await round_trips(charger, TIMED_FRAMES, "many"))
    finally:
        server.stop()
    print(
        f"2. PUT of {FAULTS_IN_ONE_PUT} faults: HTTP {refused} in {refused_in * 1e3:.0f} ms; "
        f"PUT of {mock.MAX_FAULTS}: HTTP {status} in {took * 1e3:.0f} ms, the longest Heartbeat "
        f"round trip meanwhile {stall * 1e3:.1f} ms; a Heartbeat round trip (median of "
        f"{TIMED_FRAMES}) {one * 1e3:.2f} ms with 1 fault in force, {full * 1e3:.2f} ms with "
        f"{mock.MAX_FAULTS} ({full / one:.2f}x)"
    )
    return refused == 400 and status == 200 and full / one < 1.5


def main() -> int:
    results = [
        asyncio.run(delay_fault_attack()),
        asyncio.run(delay_fault_attack("--no-http")),
        asyncio.run(fault_table_attack()),
    ]
    print("PASS" if all(results) else "FAIL")
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
