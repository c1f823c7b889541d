"""The demo charger behaves as a charger does (issue "The first ten minutes, round 2", item 6):
a Reset reboots it, an idTag the server refuses ends the transaction, a full battery stops drawing
power, and its lines come in the order things happen; without websockets it says how to install."""

import json
import subprocess
import sys

import pytest

from conftest import DEMO_CHARGER, TIMEOUT, read_transcript


def _demo(server, *args):
    return subprocess.Popen(
        [
            sys.executable,
            "-W",
            "error::DeprecationWarning",
            str(DEMO_CHARGER),
            server.url + "/CP-DEMO",
            "--meter-interval",
            "0.1",
            *args,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _finish(demo):
    if demo.poll() is None:
        demo.terminate()
    return demo.communicate(timeout=TIMEOUT)[0]


def test_a_reset_reboots_the_demo_charger(start_server):  # noqa: F811
    server = start_server()
    demo = _demo(server, "--soc", "50")
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
    demo = _demo(server, "--once")
    output = demo.communicate(timeout=TIMEOUT * 3)[0]
    assert demo.returncode == 0, output
    assert "transaction 1 not started: idTag 1 is Blocked; stopping it (DeAuthorized)" in output
    assert "transaction 1 started" not in output
    server.wait_for(r"CP-DEMO \*\* disconnected")
    frames = [json.loads(record["frame"]) for record in read_transcript(log) if "frame" in record]
    calls = [(frame[2], frame[3]) for frame in frames if frame[0] == 2]
    assert ("StopTransaction", "DeAuthorized") in [
        (name, payload.get("reason")) for name, payload in calls
    ]
    assert "MeterValues" not in [name for name, _ in calls]
    assert "check" not in server.settled_output()  # no behaviour check fired


def test_a_full_battery_stops_drawing_power_until_stopped(start_server, tmp_path):  # noqa: F811
    log = tmp_path / "session.jsonl"
    server = start_server("--log", str(log))
    demo = _demo(server, "--soc", "97")
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
    assert "check" not in server.settled_output()


def test_its_lines_come_in_the_order_things_happen(start_server):  # noqa: F811
    server = start_server("--boot-status", "Pending", "--heartbeat-interval", "1")
    demo = _demo(server)
    try:
        server.wait_for(r"CP-DEMO <- BootNotification")
        server.wait_for(r"CP-DEMO <- BootNotification", since=server.mark())  # the second try
    finally:
        output = _finish(demo)
    assert "no the boot interval" not in output and "within" not in output
    server = start_server()
    demo = _demo(server, "--once")
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


@pytest.mark.slow(8)
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
        [
            sys.executable,
            str(DEMO_CHARGER),
            f"ws://127.0.0.1:{port}/CP-BOARD",
            "--meter-interval",
            "0.2",
            "--connect-timeout",
            "60",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        output = test_run.communicate(timeout=90)[0]
    finally:
        board.terminate()
        board_output = board.communicate(timeout=TIMEOUT)[0]
    assert test_run.returncode == 0, output + board_output
    assert "1 passed" in output and "point the station at ws://" in output
    assert "transaction 1 stopped" in board_output
