"""The HTTP port's bounds: connections and event streams (503 with Retry-After), descriptors kept
for chargers, readers that never read, event ids that carry the run, and a usable --http-token.

Scaled down: a server process with a lowered open-files limit and ``--http-max-connections 8``;
scripts/attack_http.py runs the full-size attacks.
"""

import asyncio
import json
import re
import resource
import socket
import subprocess
import threading
import time
import urllib.parse

import pytest

import ocpp_mock_server as mock
from conftest import (
    START_TIMEOUT,
    TIMEOUT,
    Charger,
    EventStream,
    ServerProcess,
    booted_charger,
    charger_test,
    http,
    http_port,
    server_command,
)

OPEN_FILES = 200  # the server's open-files limit in these tests (soft and hard)


class LimitedServerProcess(ServerProcess):
    """A server process whose open-files limit is ``open_files``, soft and hard: it cannot raise
    it."""

    def __init__(self, *args: str, open_files: int = OPEN_FILES):
        def lower_limit():
            resource.setrlimit(resource.RLIMIT_NOFILE, (open_files, open_files))

        command = server_command(
            "--port", "0", *args, python_options=("-W", "error::DeprecationWarning")
        )
        self.proc = subprocess.Popen(
            command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            encoding="utf-8",
            bufsize=1,
            preexec_fn=lower_limit,
        )
        self.lines = []
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.url = None


@pytest.fixture
def limited_server():
    servers = []

    def start(*args, **kwargs):
        server = LimitedServerProcess(*args, **kwargs).wait_ready()
        servers.append(server)
        return server

    yield start
    for server in servers:
        code = server.stop()
        assert "Traceback" not in server.output(), server.output()
        assert code == 0, server.output()


async def raw_request(port: int, path: str = "/api/chargers") -> bytes:
    """Everything the server answers to one GET, until it closes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write((f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n").encode("ascii"))
    try:
        return await asyncio.wait_for(reader.read(), TIMEOUT)
    finally:
        writer.close()


def assert_busy(answer: bytes) -> None:
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 503"), answer
    assert b"\r\nRetry-After: %d" % mock.HTTP_BUSY_RETRY_AFTER in head
    assert json.loads(body)["retryAfter"] == mock.HTTP_BUSY_RETRY_AFTER


async def boot_within(server, charger_id: str, seconds: float) -> float:
    """Connect a charger and have its BootNotification answered; how long it took (at most
    ``seconds``)."""
    began = time.monotonic()
    charger = await asyncio.wait_for(Charger.connect(server.url, charger_id), seconds)
    reply = await charger.call(
        "BootNotification", {"chargePointVendor": "T", "chargePointModel": "M"}
    )
    took = time.monotonic() - began
    assert reply.payload["status"] == "Accepted" and took < seconds, took
    await charger.close()
    return took


@charger_test
async def test_over_its_bound_the_http_port_answers_503_and_chargers_still_get_in(limited_server):
    server = limited_server("--http-max-connections", "8")
    server.wait_for(rf"!! open files are limited to {OPEN_FILES} \(ulimit -n; the hard limit too\)")
    port = http_port(server)
    streams = [
        await EventStream.open(server) for _ in range(6)
    ]  # three quarters of 8: streams' share
    assert_busy(await raw_request(port, "/api/events"))  # a seventh stream
    assert (await http(server, "GET", "/api/chargers")).status == 200  # the API still has room
    idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(2)]  # 8 connections now
    deadline = time.monotonic() + TIMEOUT
    while True:  # the idle ones are accepted in the server's own time: until then the API is served
        answer = await raw_request(port)
        if answer.startswith(b"HTTP/1.1 503"):
            break
        assert time.monotonic() < deadline, answer
    assert_busy(answer)
    answers = await asyncio.gather(
        *[raw_request(port) for _ in range(30)]
    )  # a burst over the bound
    # Each is answered 503, or cut at once while HTTP_BUSY_ANSWERS are being answered: none served.
    assert all(answer.startswith(b"HTTP/1.1 503") or not answer for answer in answers)
    assert any(answers)
    await boot_within(server, "CP-BUSY", 1.0)
    count = int(
        server.wait_for(
            r"!! HTTP port busy: refused (\d+) connections? in [\d.]+ s with 503"
        ).group(1)
    )
    assert count >= 2
    assert (
        len(re.findall("HTTP port busy", server.output())) <= 2
    )  # one line per burst, not per 503
    for stream in streams:
        stream.close()
    for sock in idle:
        sock.close()


@pytest.mark.slow(2)
@charger_test
async def test_out_of_descriptors_is_one_line_and_chargers_get_in_once_some_are_free(
    limited_server,
):
    server = limited_server("--no-http", open_files=100)
    port = int(server.url.rsplit(":", 1)[1])
    hogs = []
    for _ in range(110):  # more than the server has descriptors for
        hogs.append(socket.create_connection(("127.0.0.1", port)))
    server.wait_for(r"!! out of open files: (\d+) connections? could not be accepted")
    for sock in hogs:
        sock.close()
    await boot_within(server, "CP-AFTER", 3.0)  # accepting resumes within a second of room
    assert "Traceback" not in server.output() and "socket.accept" not in server.output()


def test_the_http_bound_leaves_descriptors_for_chargers(limited_server):
    server = limited_server()  # --http-max-connections 256 by default: more than 200 files allow
    expected = OPEN_FILES - mock.OPEN_FILES_FOR_CHARGERS - mock.HTTP_BUSY_ANSWERS
    server.wait_for(
        rf"!! open files are limited to 200 .*HTTP connections at most {expected}, not 256"
    )


@charger_test
async def test_a_reader_that_never_reads_holds_little_and_is_closed_after_the_drain_timeout(
    in_process,
    monkeypatch,  # noqa: F811
):
    monkeypatch.setattr(mock, "EVENT_STREAM_DRAIN_TIMEOUT", 1.0)
    monkeypatch.setattr(mock, "BURST_FIRST_REPORT", 0.2)
    server = in_process()
    charger = await booted_charger(server)
    for number in range(20):  # about 1.2 MB of history: more than a reader's buffers take
        await charger.call(
            "DataTransfer", {"vendorId": "com.example", "data": f"{number:05d}" * 12000}
        )
    stalled = [
        await EventStream.open(server, "?lastEventId=0", receive_buffer=4096) for _ in range(3)
    ]

    def blocked_streams():
        writers = [
            writer
            for writer in server.system.http.connections
            if writer.transport.get_write_buffer_size() > 0
        ]
        return [
            (
                writer.get_extra_info("socket").getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF),
                writer.transport.get_write_buffer_size(),
            )
            for writer in writers
        ]

    deadline = time.monotonic() + TIMEOUT
    while len(server.call_in_loop(blocked_streams)) < 3:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.02)
    for send_buffer, unsent in server.call_in_loop(blocked_streams):
        assert send_buffer <= 2 * mock.EVENT_STREAM_SEND_BUFFER  # Linux doubles what it is given
        # Under the mark when the last write began, plus that write: its size plus one message.
        assert unsent <= 2 * mock.EVENT_STREAM_WRITE_BYTES + 70000
    server.wait_for(r"!! HTTP: closed 3 event streams in [\d.]+ s: the reader took nothing for 1 s")
    assert server.call_in_loop(lambda: server.system.http.history.readers) == 0
    reading = await EventStream.open(server)  # others are served as before
    await charger.call("Heartbeat", {})
    await reading.until(
        lambda event: event["type"] == "frame" and event["label"] == "Heartbeat.conf"
    )
    for stream in stalled + [reading]:
        stream.close()
    await charger.close()


@charger_test
async def test_event_ids_carry_the_run_and_an_id_of_another_run_starts_afresh(in_process):  # noqa: F811
    earlier, server = in_process(), in_process()
    old = await EventStream.open(earlier)
    await (await booted_charger(earlier, "CP-OLD")).close()
    old_event = await old.until(lambda event: event["type"] == "disconnected")
    old_id = f"{old.hello['run']}:{old_event[-1]['id']}"
    watching = await EventStream.open(server)  # every event is kept while a stream is open
    charger = await booted_charger(server, "CP-NEW")
    fresh = await EventStream.open(server, "?lastEventId=0")
    run = fresh.hello["run"]
    assert fresh.hello == {
        "type": "hello",
        "run": run,
        "apiVersion": mock.API_VERSION,
        "reset": False,
    }
    assert run != old.hello["run"] and re.fullmatch(r"[\w-]{8}", run)
    everything = await fresh.until(lambda event: event["type"] == "ready")
    # An EventSource that reconnects to a restarted server sends the old run's id: it starts afresh.
    for header in (f"Last-Event-ID: {old_id}\r\n", "Last-Event-ID: 999999\r\n"):
        resumed = await EventStream.open(server, "", header)
        assert resumed.hello["reset"] is True and resumed.hello["run"] == run
        assert await resumed.until(lambda event: event["type"] == "ready") == everything
        resumed.close()
    middle = everything[len(everything) // 2]
    for query in (
        "?lastEventId=" + urllib.parse.quote(f"{run}:{middle['id']}"),
        f"?lastEventId={middle['id']}",
    ):  # a bare number is this run's
        resumed = await EventStream.open(server, query)
        assert resumed.hello["reset"] is False
        assert (await resumed.until(lambda event: event["type"] == "ready"))[0]["id"] > middle["id"]
        resumed.close()
    for bad in (":5", "run:", "5x", f"{run}:-1"):
        assert (
            await http(server, "GET", "/api/events", headers={"Last-Event-ID": bad})
        ).status == 400
    for stream in (old, watching, fresh):
        stream.close()
    await charger.close()


@pytest.mark.parametrize(
    "token", [" s3cret", "s3cret ", "s3 cret", "s\u00e9cret", "s3cret\t", "\u200bs3cret"]
)
def test_an_http_token_outside_visible_ascii_is_refused_at_start(token, capsys):
    with pytest.raises(SystemExit) as exited:
        mock.parse_settings(["--http-token", token])
    assert exited.value.code == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert (
        "argument --http-token: must be visible ASCII only" in error and token.strip() not in error
    )
    assert mock.parse_settings(["--http-token", "s3cr~t!"]).http_token == "s3cr~t!"


def test_an_http_token_with_a_space_exits_2_with_one_line():
    done = subprocess.run(
        server_command("--http-token", "s3cret "),
        capture_output=True,
        text=True,
        timeout=START_TIMEOUT,
    )
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.strip().splitlines()[-1].endswith("nothing else arrives intact")
    assert "Traceback" not in done.stderr


@charger_test
async def test_stopping_with_streams_and_idle_connections_open_prints_no_traceback(
    start_server,  # noqa: F811
):
    server = start_server(process=True)
    streams = [await EventStream.open(server) for _ in range(3)]
    idle = [socket.create_connection(("127.0.0.1", http_port(server))) for _ in range(3)]
    await (await booted_charger(server)).close()
    assert server.stop() == 0  # while they are open: the fixture then checks for tracebacks
    assert "Traceback" not in server.output() and "never retrieved" not in server.output()
    for stream in streams:
        stream.close()
    for sock in idle:
        sock.close()
