#!/usr/bin/env python3
"""The parallel-upload attack on the file server's quota, full size (issue 19, item 4).

    python scripts/attack_files.py          # exit 0 when the quota held, 1 when it did not

Starts its own server on loopback (free ports, a temporary --files-dir, --files-quota 3M), sends
eight 900 KB uploads at once, then one chunked upload that must be refused mid-stream, and prints
what it saw: each answer, the bytes stored against the quota, and the server's lines about it.
Bounded: 30 s for everything, loopback only. tests/test_files.py runs the same attack scaled down.
"""

import asyncio
import re
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
QUOTA = 3 * 1024 * 1024
UPLOADS, SIZE = 8, 900 * 1024
DEADLINE = 30.0  # seconds for the whole attack


class Server:
    """The mock server in a subprocess, its output collected on a thread."""

    def __init__(self, files: str) -> None:
        self.process = subprocess.Popen(
            [
                sys.executable,
                str(ROOT / "ocpp_mock_server.py"),
                "--port",
                "0",
                "--files-dir",
                files,
                "--files-quota",
                str(QUOTA),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            encoding="utf-8",
        )
        self.lines = []
        self.port = None
        ready = threading.Event()

        def read() -> None:
            for line in self.process.stdout:
                self.lines.append(line.rstrip("\n"))
                match = re.search(r"web page and HTTP API: http://127\.0\.0\.1:(\d+)/", line)
                if match:
                    self.port = int(match.group(1))
                    ready.set()
            ready.set()

        self.reader = threading.Thread(target=read, daemon=True)
        self.reader.start()
        if not ready.wait(10) or self.port is None:
            self.stop()
            raise SystemExit("the server did not start:\n" + "\n".join(self.lines))

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.communicate("quit\n", timeout=10)
        self.reader.join(5)
        return self.process.returncode


async def upload(port: int, name: str, size: int) -> str:
    """One PUT of ``size`` bytes with its Content-Length; the answer's status line."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        b"PUT /files/CP-1/%s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nContent-Length: %d\r\n\r\n"
        % (name.encode(), port, size)
        + b"d" * size
    )
    try:
        answer = await reader.read()
    except ConnectionError as exc:
        return f"connection failed: {exc}"
    finally:
        writer.close()
    return answer.split(b"\r\n", 1)[0].decode("latin-1")


async def chunked_mid_stream(port: int) -> str:
    """A chunked upload that announces 64 KB chunks until refused; its answer and when it came."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        b"PUT /files/CP-1/chunked.bin HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n" % port
    )
    chunk, sent = b"c" * 65536, 0
    answer = asyncio.ensure_future(reader.read())
    while not answer.done() and sent < QUOTA:
        writer.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        await writer.drain()
        sent += len(chunk)
        await asyncio.sleep(0.01)
    status = (await answer).split(b"\r\n", 1)[0].decode("latin-1")
    writer.close()
    return f"{status} after {sent} bytes of chunks (the body never ended)"


async def attack(port: int, files: Path) -> bool:
    statuses = await asyncio.gather(
        *(upload(port, f"diag-{number}.bin", SIZE) for number in range(UPLOADS))
    )
    for number, status in enumerate(statuses):
        print(f"upload {number} ({SIZE} bytes): {status}")
    stored = sum(path.stat().st_size for path in files.rglob("*") if path.is_file())
    accepted = sum(status.startswith("HTTP/1.1 201") for status in statuses)
    print(f"accepted {accepted} of {UPLOADS}; {stored} bytes stored under a quota of {QUOTA}")
    print("chunked upload: " + await chunked_mid_stream(port))
    after = sum(path.stat().st_size for path in files.rglob("*") if path.is_file())
    print(f"stored after the chunked upload: {after} bytes")
    return stored <= QUOTA and after <= QUOTA and accepted == QUOTA // SIZE


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="attack-files-") as folder:
        server = Server(folder)
        try:
            held = asyncio.run(asyncio.wait_for(attack(server.port, Path(folder)), DEADLINE))
        finally:
            code = server.stop()
        said = [line for line in server.lines if "file server" in line or "ERROR" in line]
        print(f"the server said ({len(said)} lines about files), exit status {code}:")
        for line in said:
            print("  " + line)
    print("the quota held" if held else "THE QUOTA DID NOT HOLD")
    return 0 if held and code == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
