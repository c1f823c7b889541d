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
    InProcessDemo,
    _demo,
    assert_valid,
    check_transcript_is_a_whole_session,
    demo_command,
    read_transcript,
    run,
    warm_command,
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
    command = demo_command(server.url + "/CP-DEMO", "--once", "--meter-interval", "0.2")
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
    demo = InProcessDemo(server.url + "/CP-DEMO", "--meter-interval", "0.2")
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
            if action == "Reset":  # it reboots, as a charger does: wait until it is back
                server.wait_for(r"CP-DEMO \*\* connected from", since=mark)
                back = next(number for number in range(mark, server.mark())
                            if "CP-DEMO ** connected from" in server.lines[number])
                server.wait_for(r"CP-DEMO <- StatusNotification .*Available", since=back)
        output = server.settled_output()
        assert "spec:" not in output and "!! check" not in output  # it behaves as a charger does
    finally:
        demo.stop()


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
                *warm_command([sys.executable, str(DEMO_CHARGER), f"ws://127.0.0.1:{port}/CP-1"]),
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
    charger = InProcessDemo(server.url + "/CP-DEMO", "--meter-interval", "0.05")
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
        charger.stop()
        output = charger.stdout
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


# -------------------- behaving as a charger does
# The demo charger behaves as a charger does (issue "The first ten minutes, round 2", item 6):
# a Reset reboots it, an idTag the server refuses ends the transaction, a full battery stops drawing
# power, and its lines come in the order things happen; without websockets it says how to install.


def _demo_process(server, *args):
    """The demo charger, in this process (the tests about its process are above)."""
    return InProcessDemo(server.url + "/CP-DEMO", "--meter-interval", "0.1", *args)


def _finish(demo):
    demo.stop()
    return demo.stdout


def test_a_reset_reboots_the_demo_charger(start_server):  # noqa: F811
    server = start_server()
    demo = _demo_process(server, "--soc", "50")
    try:
        server.wait_for(r"CP-DEMO <- StatusNotification .*Available")
        server.type("startRemote")
        server.wait_for(r"CP-DEMO <- MeterValues connector 1, transaction 1")
        mark = server.mark()
        server.type("Reset type=Hard")
        server.wait_for(r"CP-DEMO <- StopTransaction .*\"reason\": \"HardReset\"", since=mark)
        server.wait_for(r"CP-DEMO \*\* disconnected \(close code 1012", since=mark)
        server.wait_for(r"CP-DEMO \*\* connected from", since=mark)
        server.wait_for(r"CP-DEMO <- BootNotification", since=mark)
        server.wait_for(r"CP-DEMO <- StatusNotification .*Available", since=mark)
    finally:
        output = _finish(demo)
    assert "rebooting (hard reset)" in output and "Traceback" not in output


def test_a_tag_the_server_refuses_ends_the_transaction_at_once(start_server, tmp_path):  # noqa: F811
    log = tmp_path / "session.jsonl"
    server = start_server("--tag", "1=Blocked", "--log", str(log), "--auto-start-after", "0.2")
    demo = _demo_process(server, "--once")
    returncode = demo.wait(TIMEOUT * 3)
    output = _finish(demo)
    assert returncode == 0, output
    assert "transaction 1 not started: idTag 1 is Blocked; stopping it (DeAuthorized)" in output
    assert "transaction 1 started" not in output
    server.wait_for(r"CP-DEMO \*\* disconnected")
    frames = [json.loads(record["frame"]) for record in read_transcript(log) if "frame" in record]
    calls = [(frame[2], frame[3]) for frame in frames if frame[0] == 2]
    assert ("StopTransaction", "DeAuthorized") in [
        (name, payload.get("reason")) for name, payload in calls
    ]
    assert "MeterValues" not in [name for name, _ in calls]
    assert "!! check " not in server.settled_output()  # no behaviour check fired


def test_a_full_battery_stops_drawing_power_until_stopped(start_server, tmp_path):  # noqa: F811
    log = tmp_path / "session.jsonl"
    server = start_server("--log", str(log))
    demo = _demo_process(server, "--soc", "97")
    try:
        server.wait_for(r"CP-DEMO <- StatusNotification .*Available")
        server.type("startRemote")
        server.wait_for(r"CP-DEMO <- StatusNotification .*SuspendedEV")
        for _ in range(3):  # meter values go on, at 0 W, the energy standing still
            server.wait_for(
                r"CP-DEMO <- MeterValues connector 1, transaction 1: .*"
                r"Power\.Active\.Import 0 W, SoC 100 Percent",
                since=server.mark(),
            )
        server.type("stopRemote")
        server.wait_for(r"CP-DEMO <- StopTransaction")
    finally:
        output = _finish(demo)
    assert "battery full: SuspendedEV, 0 W until the transaction is stopped" in output
    readings = []
    for record in read_transcript(log):
        frame = json.loads(record.get("frame", "[0]"))
        if frame[0] == 2 and frame[2] == "MeterValues" and "transactionId" in frame[3]:
            values = {
                item["measurand"]: item["value"]
                for item in frame[3]["meterValue"][0]["sampledValue"]
            }
            readings.append(
                (
                    int(values["SoC"]),
                    int(values["Power.Active.Import"]),
                    int(values["Energy.Active.Import.Register"]),
                )
            )
    full = [reading for reading in readings if reading[0] == 100]
    assert len(full) >= 3 and {power for _, power, _ in full} == {0}
    assert len({energy for _, _, energy in full}) == 1
    assert "!! check " not in server.settled_output()


def test_its_lines_come_in_the_order_things_happen(start_server):  # noqa: F811
    server = start_server("--boot-status", "Pending", "--heartbeat-interval", "1")
    demo = _demo_process(server)
    try:
        server.wait_for(r"CP-DEMO <- BootNotification")
        server.wait_for(r"CP-DEMO <- BootNotification", since=server.mark())  # the second try
    finally:
        output = _finish(demo)
    assert "no the boot interval" not in output and "within" not in output
    server = start_server()
    demo = _demo_process(server, "--once")
    try:
        server.wait_for(r"CP-DEMO <- StatusNotification .*Available")
    finally:
        output = _finish(demo)
    lines = output.splitlines()
    booted = next(number for number, line in enumerate(lines) if "booted:" in line)
    boot_data = next(number for number, line in enumerate(lines) if "BootData:" in line)
    assert booted < boot_data, output


def test_without_websockets_the_demo_charger_says_how_to_install():
    # -S: no site-packages, so no websockets, as in a terminal where the venv is not active
    result = subprocess.run(
        [sys.executable, "-S", str(DEMO_CHARGER)], capture_output=True, text=True, timeout=TIMEOUT
    )
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.splitlines() == [
        "demo_charger needs the websockets package: activate the server's venv in this terminal "
        "too "
        "(. .venv/bin/activate), or pip install websockets"
    ]


@pytest.mark.slow(4)
def test_the_pytest_example_waits_for_a_station_on_the_network(tmp_path):
    """docs/api.md's variant for a charger on a board: the mock on every address with a token, the
    test waiting for the station (here the demo charger, started on its own as a board would be)."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    example = DEMO_CHARGER.parent / "test_charger_via_api.py"
    env = dict(__import__("os").environ, CHARGER_ON_NETWORK="CP-BOARD", OCPP_MOCK_PORT=str(port))
    test_run = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-s",
            "-o",
            "addopts=",
            "-p",
            "no:xdist",
            "-p",
            "no:cacheprovider",
            "--rootdir",
            str(tmp_path),
            str(example),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        cwd=str(tmp_path),
    )
    board = subprocess.Popen(
        warm_command(
            [
                sys.executable,
                str(DEMO_CHARGER),
                f"ws://127.0.0.1:{port}/CP-BOARD",
                "--meter-interval",
                "0.2",
                "--connect-timeout",
                "60",
            ]
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        output = test_run.communicate(timeout=90)[0]
    except subprocess.TimeoutExpired:  # what each printed, to say why
        test_run.kill()
        output = "(the example did not end in 90 s)\n" + test_run.communicate()[0]
    finally:
        board.terminate()
        board_output = board.communicate(timeout=TIMEOUT)[0]
    assert test_run.returncode == 0, output + board_output
    assert "1 passed" in output and "point the station at ws://" in output
    assert "transaction 1 stopped" in board_output


def test_no_function_of_the_demo_charger_is_over_40_lines():
    """The server's size rule for functions holds in the demo charger too (parse_args was 46)."""
    from test_shape import _too_long

    assert [found for found in _too_long("examples/demo_charger.py") if " function " in found] == []
