"""The demo charger (examples/demo_charger.py) and whole sessions end to end, in both dialects."""

import asyncio
import json
import subprocess
import sys

import pytest
import websockets

import ocpp_mock_server as mock
from conftest import (
    DEMO_CHARGER,
    NOW,
    TIMEOUT,
    _demo,
    assert_valid,
    check_transcript_is_a_whole_session,
    read_transcript,
    run,
)


@pytest.mark.slow(3)
@pytest.mark.parametrize("dialect", ["ocpp1.6", "flexicharge"])
def test_end_to_end_demo_session_in_both_dialects(start_server, tmp_path, dialect):
    log = tmp_path / "transcript.jsonl"
    log.write_text('{"ts":"2026-01-01T00:00:00.000Z","charger":"old","event":"connect"}\n')
    server = start_server(
        "--auto-start-after",
        "0.2",
        "--auto-stop-after",
        "1.2",
        "--log",
        str(log),
        stdin=subprocess.DEVNULL,
    )
    command = [
        sys.executable,
        "-W",
        "error::DeprecationWarning",
        str(DEMO_CHARGER),
        server.url + "/CP-DEMO",
        "--once",
        "--meter-interval",
        "0.2",
    ]
    if dialect == "flexicharge":
        command.append("--flexicharge")
    charger = subprocess.run(command, capture_output=True, text=True, timeout=30)
    assert charger.returncode == 0, charger.stdout + charger.stderr
    assert "transaction 1 stopped" in charger.stdout
    server.wait_for(r"CP-DEMO \*\* disconnected")
    assert server.stop() == 0
    records = read_transcript(log)
    assert records[0]["charger"] == "old"  # appended, never truncated
    check_transcript_is_a_whole_session(records, "CP-DEMO", dialect == "flexicharge")
    if dialect == "flexicharge":
        server.wait_for(r"CP-DEMO \*\* speaks the FlexiCharge dialect")
        server.wait_for(
            r"CP-DEMO <- MeterValues connector 1, transaction 1: SoC \d+ %, Power\.Active\.Import "
            r"7400 W, Energy\.Active\.Import \d+ Wh"
        )
    else:
        assert "spec:" not in server.output()  # complete: the server has stopped


def test_the_demo_charger_answers_every_console_command_validly(start_server):
    server = start_server("--log", "/dev/null")
    demo = subprocess.Popen(
        [sys.executable, str(DEMO_CHARGER), server.url + "/CP-DEMO", "--meter-interval", "0.2"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    try:
        server.wait_for(r"CP-DEMO <- StatusNotification .*Available", timeout=10)
        for action in mock.SERVER_ACTION_DEFAULTS:
            mark = server.mark()
            server.type(
                action
                if action != "RemoteStopTransaction"
                else "RemoteStopTransaction transactionId=1"
            )
            reply = server.wait_for(rf"CP-DEMO <- {action}(\.conf| CALLERROR) (.*)$", since=mark)
            assert reply.group(1) == ".conf", reply.group(0)
            assert_valid(action + "Response", json.loads(reply.group(2)))
        assert "spec:" not in server.settled_output()
    finally:
        demo.terminate()
        demo.wait(TIMEOUT)


def test_the_demo_charger_ends_at_once_when_the_server_closes_while_it_waits():
    async def close_after_boot(websocket, *_):
        frame = json.loads(await websocket.recv())
        await websocket.send(
            json.dumps([3, frame[1], {"status": "Accepted", "currentTime": NOW, "interval": 60}])
        )
        await websocket.close()  # no BootData: the demo charger was waiting for it

    async def scenario():
        server = await websockets.serve(close_after_boot, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                str(DEMO_CHARGER),
                f"ws://127.0.0.1:{port}/CP-1",
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
            )
            output, _ = await asyncio.wait_for(process.communicate(), TIMEOUT)  # not 30 s
            return process.returncode, output.decode()
        finally:
            server.close()
            await server.wait_closed()

    code, output = run(scenario())
    assert (
        code == 0 and "the server closed the connection" in output and "Traceback" not in output
    ), output


def test_the_demo_charger_says_once_why_it_cannot_connect(start_server):
    result, _ = _demo("http://127.0.0.1:1/CP-1")
    assert result.returncode == 2 and "cannot use the URL http://127.0.0.1:1/CP-1" in result.stdout
    server = start_server("--charger-ids", "SOMEONE-ELSE")
    result, elapsed = _demo(server.url + "/CP-1", "--connect-timeout", "30")
    assert (
        result.returncode == 1
        and f"refused {server.url}/CP-1 with HTTP 404; not retrying" in result.stdout
    )
    assert elapsed < TIMEOUT and "Traceback" not in result.stdout + result.stderr


def test_the_demo_chargers_meter_values_stay_consistent(start_server, tmp_path):
    log = tmp_path / "demo.jsonl"
    server = start_server("--log", str(log))
    charger = subprocess.Popen(
        [sys.executable, str(DEMO_CHARGER), server.url + "/CP-DEMO", "--meter-interval", "0.05"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        server.wait_for(r"CP-DEMO <- StatusNotification .*Available")
        server.type("TriggerMessage requestedMessage=MeterValues")  # outside a transaction
        server.wait_for(r"CP-DEMO <- MeterValues connector 1: ")
        server.type("startRemote")
        server.wait_for(r"CP-DEMO <- MeterValues connector 1, transaction 1: .*SoC 23")
        server.type("TriggerMessage requestedMessage=MeterValues")  # while charging
        server.wait_for(r"CP-DEMO <- TriggerMessage\.conf")
        server.wait_for(r"CP-DEMO <- MeterValues connector 1, transaction 1: .*SoC 26")
        server.type("stopRemote")
        server.wait_for(r"CP-DEMO <- StopTransaction")
    finally:
        charger.terminate()
        output = charger.communicate(timeout=TIMEOUT)[0]
    assert "transaction None" not in output and "Traceback" not in output
    meter_values = [
        json.loads(record["frame"])[3]
        for record in read_transcript(log)
        if record.get("dir") == "in" and '"MeterValues"' in record["frame"]
    ]
    charging = [payload for payload in meter_values if "transactionId" in payload]
    assert len(charging) >= 6 and len(meter_values) > len(charging)
    assert all(payload.get("transactionId", 1) is not None for payload in meter_values)

    def reading(payload, measurand):
        return next(
            int(item["value"])
            for item in payload["meterValue"][0]["sampledValue"]
            if item["measurand"] == measurand
        )

    socs = [reading(payload, "SoC") for payload in charging]
    assert socs == sorted(socs)
    assert all(reading(payload, "Power.Active.Import") > 0 for payload in charging)
