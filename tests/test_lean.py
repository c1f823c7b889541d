"""The lean-engine round: one output path for operator lines, a history that keeps frames apart from
them, and frame lines cut to a terminal's width (whole with --wide, in files and pipes)."""

import asyncio
import importlib.util
import json
import os
import re
import select
import subprocess
import sys
import time

import pytest
import websockets

from test_mock_server import (  # noqa: F401  (start_server is a fixture)
    SERVER,
    TIMEOUT,
    Charger,
    EventStream,
    ServerProcess,
    charger_test,
    http,
    read_transcript,
    start_server,
)


async def _refused(server, charger_id: str) -> None:
    with pytest.raises(websockets.InvalidHandshake):
        await Charger.connect(server.url, charger_id)


@charger_test
async def test_a_refusals_line_reaches_the_event_stream_and_the_transcript(
        start_server, tmp_path):  # noqa: F811
    log = tmp_path / "transcript.jsonl"
    server = start_server("--no-boot-data", "--charger-ids", "CP-1", "--log", str(log))
    stream = await EventStream.open(server)
    await _refused(server, "CP-X")
    events = await stream.until(lambda event: event["type"] == "log")
    assert events[-1]["level"] == "warn" and events[-1]["charger"] == "CP-X"
    assert "refused a connection" in events[-1]["text"] and "HTTP 404" in events[-1]["text"]
    stream.close()
    server.wait_for(r"CP-X !! refused a connection")
    records = (await http(server, "GET", "/api/transcript")).json["records"]
    lines = [record for record in records if record.get("event") == "log"]
    assert lines and lines[-1]["level"] == "warn" and "refused a connection" in lines[-1]["text"]
    in_file = [record for record in read_transcript(log) if record.get("event") == "log"]
    assert in_file[-1] == lines[-1]


@charger_test
async def test_a_flood_of_refusals_keeps_the_chargers_frames_in_the_history(
        start_server):  # noqa: F811
    server = start_server("--no-boot-data", "--charger-ids", "CP-1")
    history = server.system.http.history
    server.call_in_loop(setattr, history, "line_limit", 5)
    server.call_in_loop(setattr, history, "limit", 20)
    charger = await Charger.connect(server.url, "CP-1")
    for number in range(5):
        await charger.call("Heartbeat", {}, message_id=f"hb-{number}")
    for number in range(30):  # six times the lines the history keeps
        await _refused(server, f"CP-FLOOD-{number}")
    server.wait_for(r"CP-FLOOD-29 !! refused")
    kept = server.call_in_loop(history.kept)
    frames = [json.loads(event.fields["text"])[1] for event in kept if event.type == "frame"]
    assert frames[-10:] == [f"hb-{number}" for number in range(5) for _ in range(2)]
    lines = [event for event in kept if event.type == "log"]
    assert len(lines) == 5 and "CP-FLOOD-29" in lines[-1].fields["text"]
    records = (await http(server, "GET", "/api/transcript?charger=CP-1")).json["records"]
    assert [json.loads(record["frame"])[1] for record in records if "frame" in record][-2:] == \
        ["hb-4", "hb-4"]
    await charger.close()


@charger_test
async def test_a_scenario_verdict_is_a_notice_on_the_bus(tmp_path):
    script = tmp_path / "boot.txt"
    script.write_text("wait BootNotification\n")
    log = tmp_path / "transcript.jsonl"
    server = ServerProcess("--script", str(script), "--log", str(log), "--no-boot-data",
                           stdin=subprocess.DEVNULL).wait_ready()
    charger = await Charger.connect(server.url, "CP-1")
    try:
        await charger.boot(answer_boot_data=False)
    except websockets.ConnectionClosed:
        pass  # the run is over as soon as the boot arrived
    assert server.proc.wait(TIMEOUT) == 0
    server.stop()
    assert re.search(r">> scenario boot\.txt: PASS", server.output())
    notices = [record for record in read_transcript(log)
               if record.get("event") == "log" and record["level"] == "notice"]
    assert any(record["text"].startswith("scenario boot.txt: PASS") for record in notices), notices


# -------------------------------------------------- frame lines at a terminal

LONG_DATA = "x" * 300


def _long_frame_sent(url: str) -> None:
    async def send() -> None:
        charger = await Charger.connect(url, "CP-W")
        await charger.call("DataTransfer", {"vendorId": "v", "data": LONG_DATA})
        await charger.close()
    asyncio.run(send())


class NarrowTerminal:
    """The server in a pseudo-terminal 80 columns wide."""

    def __init__(self, *args: str) -> None:
        import fcntl
        import pty
        import struct
        import termios
        self.master, self.slave = pty.openpty()
        fcntl.ioctl(self.slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
        env = dict(os.environ, TERM="dumb", HOME=os.environ.get("HOME", "/tmp"))
        self.proc = subprocess.Popen(
            [sys.executable, str(SERVER), "--port", "0", "--no-http", "--no-boot-data", *args],
            stdin=subprocess.DEVNULL, stdout=self.slave, stderr=self.slave, env=env,
            close_fds=True, start_new_session=True)
        self.seen = b""

    def wait_for(self, pattern: str) -> str:
        deadline = time.monotonic() + TIMEOUT
        while True:
            text = self.seen.decode("utf-8", "replace").replace("\r", "")
            if re.search(pattern, text):
                return text
            left = deadline - time.monotonic()
            assert left > 0, f"no {pattern!r} on the terminal:\n{text}"
            if select.select([self.master], [], [], min(left, 0.1))[0]:
                try:
                    self.seen += os.read(self.master, 65536)
                except OSError:
                    pass

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
        self.proc.wait(TIMEOUT)
        os.close(self.master)
        os.close(self.slave)


def _data_transfer_line(text: str) -> str:
    return next(line for line in text.splitlines() if "<- DataTransfer " in line)


@pytest.mark.skipif(not hasattr(os, "openpty") or importlib.util.find_spec("fcntl") is None,
                    reason="no pseudo-terminals on this platform")
@pytest.mark.parametrize("wide", [False, True])
def test_frame_lines_are_cut_to_a_terminals_width_unless_wide(wide):
    terminal = NarrowTerminal(*(["--wide"] if wide else []))
    try:
        text = terminal.wait_for(r"listening on ws://\S+")
        url = re.search(r"listening on (ws://[\d.:]+)", text).group(1)
        _long_frame_sent(url)
        line = _data_transfer_line(terminal.wait_for(r"CP-W \*\* disconnected"))
    finally:
        terminal.close()
    if wide:
        assert LONG_DATA in line
    else:
        assert len(line) <= 79 and line.endswith("\u2026"), line
        assert '<- DataTransfer {"vendorId": "v", "data": "xxx' in line


def test_frame_lines_stay_whole_in_a_pipe():
    server = ServerProcess("--no-boot-data", stdin=subprocess.DEVNULL).wait_ready()
    try:
        _long_frame_sent(server.url)
        server.wait_for(r"CP-W \*\* disconnected")
        assert LONG_DATA in _data_transfer_line(server.output())
    finally:
        server.stop()
