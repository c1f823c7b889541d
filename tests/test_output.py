"""Output and transcript: what the operator reads and what is written to the log file.

Everything a charger controls reaches the terminal escaped and cut, warn-once tables stay bounded,
a stdout nobody reads stops nothing, and the transcript survives ``kill -9``.
"""

import asyncio
import importlib.util
import json
import os
import re
import signal
import subprocess

import pytest
import websockets

import ocpp_mock_server as mock
from conftest import (
    TIMEOUT,
    Charger,
    EventStream,
    ServerProcess,
    Terminal,
    _text_reply,
    charger_test,
    http,
    read_transcript,
    run,
    server_command,
)


@charger_test
async def test_control_characters_from_the_wire_are_escaped(start_server):
    server = start_server("--no-boot-data")

    charger = await Charger.connect(server.url, "CP%1B%5B2J%0Aforged")
    await charger.call("DataTransfer", {"vendorId": "\u001b[31mred\u202e", "data": "a\nb"})
    await charger.send_frame("bad\u001b[2Jframe\rline")
    await charger.close()

    server.wait_for(r"disconnected")
    output = server.settled_output()
    assert "\x1b" not in output and "\r" not in output and "\u202e" not in output
    assert "CP\\x1b[2J\\x0aforged" in output
    assert "bad\\x1b[2Jframe\\x0dline" in output


@pytest.mark.slow(2)
@charger_test
async def test_the_transcript_survives_kill_9(tmp_path):
    log = tmp_path / "transcript.jsonl"
    server = ServerProcess(
        "--log", str(log), "--no-boot-data", stdin=subprocess.DEVNULL
    ).wait_ready()

    charger = await Charger.connect(server.url)
    for number in range(20):
        await charger.call("Heartbeat", {}, message_id=f"hb-{number}")
    server.proc.kill()  # SIGKILL: no flush, no clean-up
    server.proc.wait(TIMEOUT)

    server.stop()
    records = read_transcript(log)
    sent_in = [json.loads(record["frame"])[1] for record in records if record.get("dir") == "in"]
    answered = [json.loads(record["frame"])[1] for record in records if record.get("dir") == "out"]
    assert sent_in == answered == [f"hb-{number}" for number in range(20)]


# Item 2: one escaping path to the terminal.
@charger_test
async def test_everything_a_charger_controls_reaches_the_terminal_escaped_and_cut(in_process):
    server = in_process("--no-boot-data")
    long_id = "L" * 4000  # websockets 10.3 takes request lines up to about 4 KB

    charger = await Charger.connect(server.url, "CP-%5Cx1b")  # a literal backslash in the id
    reply = await _text_reply(charger, '[2,"1","\\u001b]0;x\\u0007\\u001b[2J\\rFAKE",{}]', "1")
    assert reply[:3] == [4, "1", "NotImplemented"]
    await charger.send_frame([4, "zz", "\u001b[2J", "\u009b\u202eevil\\x1b", {}])
    long_charger = await Charger.connect(server.url, long_id)
    assert (await long_charger.call("Heartbeat", {}))[0] == 3
    await long_charger.close()
    await charger.close()

    server.wait_for(r"L{64}\.\.\.\[3936 more characters\] \*\* disconnected")
    text = server.settled_output()
    for raw in ("\x1b", "\x07", "\r", "\x9b", "\u202e"):
        assert raw not in text
    assert r"CP-\\x1b <- \x1b]0;x\x07\x1b[2J\x0dFAKE {}" in text  # the charger's backslash doubled
    assert r"CP-\\x1b !! \x1b]0;x\x07\x1b[2J\x0dFAKE answered with NotImplemented" in text
    assert r"\x9b\u202eevil\\x1b" in text
    assert long_id not in text


@charger_test
async def test_warn_once_tables_are_bounded_with_one_suppressed_line(in_process):
    server = in_process("--no-boot-data", "--quiet")

    charger = await Charger.connect(server.url, "CP-W")
    for number in range(mock.MAX_WARNINGS_PER_CHARGER + 100):
        await charger.send_frame([2, f"w{number}", "Heartbeat", {f"unknown{number}": 1}])
    replies = await charger.replies_until(f"w{(mock.MAX_WARNINGS_PER_CHARGER + 99)}")
    assert len(replies) == mock.MAX_WARNINGS_PER_CHARGER + 100
    await charger.close()

    server.wait_for(
        r"CP-W !! 200 distinct warnings about this charger so far; further ones are suppressed"
    )
    text = server.settled_output()
    assert (
        len(re.findall(r"CP-W !! spec: Heartbeat\.unknown\d+ is not a field", text))
        == mock.MAX_WARNINGS_PER_CHARGER
    )
    assert text.count("further ones are suppressed until it reconnects") == 1


# Item 5: output never blocks the loop.
@pytest.mark.slow(2)
def test_a_stdout_nobody_reads_neither_stops_the_answers_nor_the_signals():
    command = server_command("--port", "0", "--no-boot-data")
    proc = subprocess.Popen(
        command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        first = proc.stdout.readline().decode()
        url = re.search(r"(ws://\S+)", proc.stdout.readline().decode()).group(1)
        assert "OCPP Mock Server" in first

        async def scenario():  # nobody reads stdout from here on
            charger = await Charger.connect(url, "CP-PIPE")
            padding = "p" * 1900
            for number in range(1500):  # about 3 MB of output lines: far over a pipe's 64 KB
                reply = await charger.call(
                    "DataTransfer", {"vendorId": "v", "data": padding}, f"d{number}"
                )
                assert reply[0] == 3
            await charger.close()

        run(scenario())
        proc.send_signal(signal.SIGTERM)
        rest = proc.stdout.read().decode()  # reading now lets the writer go on
        assert proc.wait(TIMEOUT) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.stdout.close()
    assert re.search(
        r"!! \d+ line\(s\) of output were dropped while the output was blocked", rest
    ), rest[-2000:]
    assert "Traceback" not in rest


# -------------------- one output path, frame lines at a terminal
# The lean-engine round: one output path for operator lines, a history that keeps frames apart from
# them, and frame lines cut to a terminal's width (whole with --wide, in files and pipes).


async def _refused(server, charger_id: str) -> None:
    with pytest.raises(websockets.InvalidHandshake):
        await Charger.connect(server.url, charger_id)


@charger_test
async def test_a_refusals_line_reaches_the_event_stream_and_the_transcript(start_server, tmp_path):
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
async def test_a_flood_of_refusals_keeps_the_chargers_frames_in_the_history(start_server):
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
    assert [json.loads(record["frame"])[1] for record in records if "frame" in record][-2:] == [
        "hb-4",
        "hb-4",
    ]
    await charger.close()


@pytest.mark.slow(2)
@charger_test
async def test_a_scenario_verdict_is_a_notice_on_the_bus(tmp_path):
    script = tmp_path / "boot.txt"
    script.write_text("wait BootNotification\n")
    log = tmp_path / "transcript.jsonl"
    server = ServerProcess(
        "--script", str(script), "--log", str(log), "--no-boot-data", stdin=subprocess.DEVNULL
    ).wait_ready()
    charger = await Charger.connect(server.url, "CP-1")
    try:
        await charger.boot(answer_boot_data=False)
    except websockets.ConnectionClosed:
        pass  # the run is over as soon as the boot arrived
    assert server.proc.wait(TIMEOUT) == 0
    server.stop()
    assert re.search(r">> scenario boot\.txt: PASS", server.output())
    notices = [
        record
        for record in read_transcript(log)
        if record.get("event") == "log" and record["level"] == "notice"
    ]
    assert any(record["text"].startswith("scenario boot.txt: PASS") for record in notices), notices


# -------------------------------------------------- frame lines at a terminal

LONG_DATA = "x" * 300


def _long_frame_sent(url: str) -> None:
    async def send() -> None:
        charger = await Charger.connect(url, "CP-W")
        await charger.call("DataTransfer", {"vendorId": "v", "data": LONG_DATA})
        await charger.close()

    asyncio.run(send())


def _data_transfer_line(text: str) -> str:
    return next(line for line in text.splitlines() if "<- DataTransfer " in line)


@pytest.mark.skipif(
    not hasattr(os, "openpty") or importlib.util.find_spec("fcntl") is None,
    reason="no pseudo-terminals on this platform",
)
@pytest.mark.parametrize("wide", [False, True])
def test_frame_lines_are_cut_to_a_terminals_width_unless_wide(wide, tmp_path):
    wide_flag = ["--wide"] if wide else []
    terminal = Terminal(tmp_path, "--no-boot-data", *wide_flag, columns=80, console=False)
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


@charger_test
async def test_a_201_transaction_event_and_meter_values_are_lines_in_words(start_server):
    server = start_server("--no-boot-data")
    station = await Charger.connect(server.url, "CS-1", subprotocols=("ocpp2.0.1",))
    reading = {"value": 3, "measurand": "Energy.Active.Import.Register",
               "unitOfMeasure": {"unit": "Wh", "multiplier": 3}}
    event = {
        "eventType": "Updated", "timestamp": "2026-12-03T12:00:00Z",
        "triggerReason": "MeterValuePeriodic", "seqNo": 7,
        "transactionInfo": {"transactionId": "T\x1b[2J-1", "chargingState": "Charging"},
        "evse": {"id": 2, "connectorId": 1}, "numberOfPhasesUsed": 3,
        "meterValue": [{"timestamp": "2026-12-03T12:00:00Z", "sampledValue": [reading]}],
    }
    assert (await station.call("TransactionEvent", event))[0] == 3
    meter_values = {"evseId": 2, "meterValue": event["meterValue"]}
    assert (await station.call("MeterValues", meter_values))[0] == 3
    await station.close()
    line = server.wait_for(r"CS-1 <- TransactionEvent Updated.*").group()
    assert line.endswith(
        r"<- TransactionEvent Updated, transaction T\x1b[2J-1, seqNo 7, MeterValuePeriodic, "
        r'EVSE 2 connector 1, chargingState Charging: Energy.Active.Import.Register 3 kWh '
        r'{"numberOfPhasesUsed":3}'
    ), line  # the escape is shown, never sent to the terminal; unnamed fields follow as JSON
    line = server.wait_for(r"CS-1 <- MeterValues.*").group()
    assert line.endswith("<- MeterValues EVSE 2: Energy.Active.Import.Register 3 kWh"), line


def _reading(measurand, value, **more):
    return dict({"measurand": measurand, "value": value}, **more)


@pytest.mark.parametrize("readings, shown", [
    ([_reading("Energy.Active.Import.Register", 1234, unitOfMeasure={"unit": "Wh"}),
      _reading("Power.Active.Import", 7.5, unitOfMeasure={"unit": "kW"})],
     "Energy.Active.Import.Register 1234 Wh, Power.Active.Import 7.5 kW"),
    ([_reading("Voltage", 230, phase="L1", unitOfMeasure={"unit": "V"})],
     "Voltage 230 V L1"),
    ([_reading("Energy.Active.Import.Register", 2.5,
               unitOfMeasure={"unit": "Wh", "multiplier": 3})],
     "Energy.Active.Import.Register 2.5 kWh"),
    ([{"value": 7}], "Energy.Active.Import.Register 7 Wh"),
    ([_reading("SoC", "80", unitOfMeasure={"unit": "Percent"})], "SoC 80 Percent"),
])
def test_a_transaction_events_readings_read_the_same_in_every_form(readings, shown):
    """The plain form (number values, a unit without a multiplier, no phase) has a fast path of its
    own: every other form reads as it always did."""
    payload = {"eventType": "Updated", "timestamp": "2026-12-03T10:00:00Z", "seqNo": 3,
               "triggerReason": "MeterValuePeriodic",
               "transactionInfo": {"transactionId": "T-1", "chargingState": "Charging"},
               "evse": {"id": 1, "connectorId": 1},
               "meterValue": [{"timestamp": "2026-12-03T10:00:00Z", "sampledValue": readings}]}
    start = ("Updated, transaction T-1, seqNo 3, MeterValuePeriodic, EVSE 1 connector 1, "
             "chargingState Charging: ")
    assert mock.render_transaction_event(payload) == start + shown
    assert mock.render_transaction_event(dict(payload, offline=True)) == (
        start + shown + ' {"offline":true}')
    info_only = dict(payload, transactionInfo={"chargingState": "Idle"})
    assert mock.render_transaction_event(info_only).startswith(
        "Updated, transaction null, seqNo 3, MeterValuePeriodic, EVSE 1 connector 1, "
        "chargingState Idle: ")
