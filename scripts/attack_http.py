#!/usr/bin/env python3
"""Full-size attacks on the HTTP port, against a server this script starts (loopback only).

1. Streams that never end: 1,100 unauthenticated ``GET /api/events`` at the Debian/Pi default of
   1,024 open files.  Prints how many were served, answered 503 or cut, whether a charger still
   connects and gets its BootNotification answered (and how fast), and the server's lines.
2. Readers that never read: 150 streams resumed with ``Last-Event-ID: 0`` over about 1.8 MB of
   history, never read.  Prints the server sockets' memory as ``ss -tm`` shows it, then waits for
   the server to close them (EVENT_STREAM_DRAIN_TIMEOUT, 30 s).

    python scripts/attack_http.py [--streams 1100] [--open-files 1024] [--readers 150]

Bounded: every count is a flag with a ceiling, every wait has a timeout; about a minute in all.
tests/test_http_bounds.py runs the same attacks scaled down.
"""

import argparse
import asyncio
import json
import re
import resource
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import websockets

SERVER = Path(__file__).resolve().parent.parent / "ocpp_mock_server.py"


class Server:
    """The server as a process with its open-files limit lowered, its output collected."""

    def __init__(self, open_files: int, *args: str) -> None:
        def lower_limit() -> None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (open_files, open_files))

        self.proc = subprocess.Popen(
            [sys.executable, str(SERVER), "--port", "0", *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
            preexec_fn=lower_limit,
        )
        self.lines: list = []
        threading.Thread(target=self._read, daemon=True).start()
        self.url = self.wait_for(r"listening on (ws://\S+)").group(1)
        self.http_port = int(self.wait_for(r"HTTP API: http://[\d.]+:(\d+)/").group(1))

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def wait_for(self, pattern: str, timeout: float = 10.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(self.lines):
                match = re.search(pattern, line)
                if match:
                    return match
            time.sleep(0.05)
        return None

    def stop(self) -> int:
        self.proc.send_signal(2)
        try:
            return self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()


async def open_stream(port: int, headers: str = "", receive_buffer: int = 0):
    """A GET /api/events; (status or 0 when cut, reader, writer)."""
    try:
        sock = socket.socket()
        if receive_buffer:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
        reader, writer = await asyncio.open_connection(sock=sock, limit=4096)
        writer.write(
            (f"GET /api/events HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{headers}\r\n").encode()
        )
        line = await asyncio.wait_for(reader.readline(), 10)
        return (int(line.split()[1]) if line else 0), reader, writer
    except (OSError, asyncio.TimeoutError, IndexError, ValueError):
        return 0, None, None


async def boot(url: str, charger_id: str) -> float:
    """Seconds from connect to the BootNotification's answer (inf when it failed within 5 s)."""
    began = time.monotonic()
    try:
        async with websockets.connect(
            f"{url}/{charger_id}", subprotocols=["ocpp1.6"], open_timeout=5
        ) as charger:
            await charger.send(
                json.dumps(
                    [
                        2,
                        "1",
                        "BootNotification",
                        {"chargePointVendor": "A", "chargePointModel": "B"},
                    ]
                )
            )
            while json.loads(await asyncio.wait_for(charger.recv(), 5))[1] != "1":
                pass
            return time.monotonic() - began
    except (OSError, asyncio.TimeoutError, websockets.WebSocketException):
        return float("inf")


def report_lines(server: Server) -> None:
    tracebacks = sum(1 for line in server.lines if line.startswith("Traceback"))
    print("  server lines with !! or ERROR:")
    for line in server.lines:
        if " !! " in line or " ERROR " in line:
            print("    " + line[:160])
    print(f"  tracebacks: {tracebacks}")


async def streams_that_never_end(count: int, open_files: int) -> None:
    print(f"1. {count} event streams at {open_files} open files")
    server = Server(open_files)
    try:
        results = await asyncio.gather(*[open_stream(server.http_port) for _ in range(count)])
        statuses = [status for status, _, _ in results]
        print(
            f"  200: {statuses.count(200)}   503: {statuses.count(503)}   cut: {statuses.count(0)}"
        )
        took = await boot(server.url, "CP-UNDER-ATTACK")
        print(f"  a charger while they are open: BootNotification answered in {took:.3f} s")
        server.wait_for(r"HTTP port busy", 3)
        report_lines(server)
        for _, _, writer in results:
            if writer is not None:
                writer.close()
    finally:
        print(f"  exit status: {server.stop()}")
    tracebacks = [
        number for number, line in enumerate(server.lines) if line.startswith("Traceback")
    ]
    print(f"  tracebacks at exit: {len(tracebacks)}")
    if tracebacks:
        print("\n".join(server.lines[tracebacks[0] - 2 : tracebacks[0] + 30]))


def socket_memory(port: int) -> dict:
    """The server side's sockets on ``port`` as ``ss -tm`` shows them: each skmem field's total."""
    shown = subprocess.run(
        ["ss", "-tmnH", "state", "established", f"( sport = :{port} )"],
        capture_output=True,
        text=True,
        timeout=10,
    ).stdout
    totals = {"sockets": 0}
    for fields in re.findall(r"skmem:\(([^)]*)\)", shown):
        totals["sockets"] += 1
        for name, value in re.findall(r"([a-z]+)(\d+)", fields):
            totals[name] = totals.get(name, 0) + int(value)
    return totals


async def readers_that_never_read(count: int) -> None:
    print(f"2. {count} event streams resumed from 0 that never read")
    server = Server(4096)
    try:
        history = await fill_history(server.url)
        print(f"  history: {(history / 1e6):.1f} MB of frames")
        results = await asyncio.gather(
            *[open_stream(server.http_port, "Last-Event-ID: 0\r\n", 4096) for _ in range(count)]
        )
        print(f"  streams open: {sum(1 for status, _, _ in results if status == 200)}")
        await asyncio.sleep(3)
        memory = socket_memory(server.http_port)
        print(
            f"  ss -tm, the server's {memory['sockets']} sockets: "
            f"{memory.get('w', 0) / 1e6:.1f} MB queued to send (w), "
            f"{memory.get('t', 0) / 1e6:.1f} MB allocated (t), "
            f"send buffers {memory.get('tb', 0) / 1e6:.1f} MB (tb)"
        )
        closed = server.wait_for(r"closed (\d+) event streams?", 45)
        print("  closed by the server: %s" % (closed.group(0) if closed else "none within 45 s"))
        report_lines(server)
        for _, _, writer in results:
            if writer is not None:
                writer.close()
    finally:
        print(f"  exit status: {server.stop()}")


async def fill_history(url: str, frames: int = 30, size: int = 60000) -> int:
    async with websockets.connect(
        url + "/CP-FILL", subprotocols=["ocpp1.6"], max_size=None
    ) as charger:
        for number in range(frames):
            await charger.send(
                json.dumps([2, str(number), "DataTransfer", {"vendorId": "x", "data": "y" * size}])
            )
            await charger.recv()
    return frames * size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--streams", type=int, default=1100, choices=range(1, 5001), metavar="1..5000"
    )
    parser.add_argument(
        "--open-files", type=int, default=1024, choices=range(128, 65537), metavar="N"
    )
    parser.add_argument(
        "--readers", type=int, default=150, choices=range(1, 1001), metavar="1..1000"
    )
    options = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # this side needs one per stream
    if hard < options.streams + 100:
        sys.exit(f"this side needs {(options.streams + 100)} open files; the hard limit is {hard}")
    asyncio.run(streams_that_never_end(options.streams, options.open_files))
    asyncio.run(readers_that_never_read(options.readers))


if __name__ == "__main__":
    main()
