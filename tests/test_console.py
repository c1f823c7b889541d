"""Console: the operator's typed lines, their targets, listings, help, and the terminal.

Help, ``@id`` and ``use``, ``chargers``, held commands before a charger is ready, stdin at EOF,
a line that is not UTF-8, the first minutes' wording, line editing at a real pty, and the guide's
sample session checked against a real run.
"""

import importlib.util
import os
import re
import subprocess
import threading

import pytest

from conftest import (
    CHARGER_REQUEST_SAMPLES,
    GUIDE,
    NOW,
    TIMEOUT,
    Charger,
    Terminal,
    _normalized,
    booted_charger,
    charger_test,
    guide_session,
    run,
    server_command,
)


def test_help_lists_every_command_and_one_action(start_server):
    server = start_server()
    server.type("help")
    server.wait_for(r">> actions: CancelReservation .* UpdateFirmware")
    for usage in (
        "help \\[Action\\]",
        "chargers",
        "startRemote",
        "stopRemote",
        "@<chargerId> <command>",
        "use <chargerId>",
        "raw <json>",
        "quit \\| exit",
    ):
        server.wait_for(">> " + usage + " .* e\\.g\\. ")
    server.type("help reservenow")
    server.wait_for(r">>   expiryDate: date-time, ISO-8601 UTC")
    server.wait_for(
        r'>>   sent bare: \{"connectorId":1,"expiryDate":"[0-9T:.-]+Z","idTag":"1",'
        r'"reservationId":1\}'
    )


@charger_test
async def test_target_a_charger_with_at_and_use(start_server):
    server = start_server()

    one = await booted_charger(server, "CP-1")
    two = await booted_charger(server, "CP-2")
    mark = server.mark()
    server.type("Reset")
    server.wait_for(
        r">> 2 chargers are connected \(CP-1, CP-2\): say which, e\.g\. @CP-1", since=mark
    )
    server.type("@CP-2 Reset type=Hard")
    call = await two.expect_call("Reset")
    assert call.payload == {"type": "Hard"}
    await two.answer(call, {"status": "Accepted"})
    server.type("use CP-1")
    server.type("ClearCache")
    call = await one.expect_call("ClearCache")
    await one.answer(call, {"status": "Accepted"})
    await two.no_frame_within(0.3)
    await one.close()
    await two.close()


@charger_test
async def test_chargers_lists_state(start_server):
    server = start_server()

    charger = await booted_charger(server)
    await charger.call(
        "StatusNotification", {"connectorId": 1, "errorCode": "NoError", "status": "Charging"}
    )
    start = await charger.call("StartTransaction", CHARGER_REQUEST_SAMPLES["StartTransaction"])
    await charger.call("MeterValues", CHARGER_REQUEST_SAMPLES["MeterValues"])
    server.type("Reset")
    await charger.expect_call("Reset")
    mark = server.mark()
    server.type("chargers")
    server.wait_for(
        r">> CP-1  \(127\.0\.0\.1:\d+, OCPP 1\.6, dialect ocpp1\.6, subprotocol ocpp1\.6\)",
        since=mark,
    )
    server.wait_for(r">>   boot: Accepted  Test Mock-1", since=mark)
    server.wait_for(r">>   connectors: 1 Charging", since=mark)
    server.wait_for(
        rf">>   transaction {start[2]['transactionId']} on connector 1, idTag \"TAG-1\"",
        since=mark,
    )
    server.wait_for(
        r">>   last meter values: connector 1, transaction 1: Energy\.Active\.Import\.Register "
        r"1234 Wh",
        since=mark,
    )
    server.wait_for(r">>   outstanding: Reset for \d+ s, 0 queued", since=mark)
    await charger.close()


@charger_test
async def test_stdin_at_eof_leaves_the_server_serving(start_server):
    server = start_server(stdin=subprocess.DEVNULL)

    server.wait_for(r"console input ended; the server keeps serving")
    charger = await booted_charger(server)
    assert (await charger.call("Heartbeat", {}))[0] == 3
    await charger.close()

    assert server.proc.poll() is None


@charger_test
async def test_meter_values_print_while_the_console_waits_for_a_line(start_server):
    server = start_server()  # stdin stays open, with nothing typed

    charger = await booted_charger(server)
    for energy in (100, 200, 300):
        mark = server.mark()
        payload = {
            "connectorId": 1,
            "meterValue": [{"timestamp": NOW, "sampledValue": [{"value": str(energy)}]}],
        }
        await charger.call("MeterValues", payload)
        server.wait_for(
            rf"<- MeterValues connector 1: Energy\.Active\.Import\.Register {energy} Wh",
            since=mark,
            timeout=1,
        )
    await charger.close()


@charger_test
async def test_piped_lines_run_as_typed_once_a_charger_is_ready(start_server):
    server = start_server()
    server.type("startRemote")
    server.wait_for(r">> no charger is connected yet; 'startRemote' will run once one has booted")

    charger = await Charger.connect(server.url)
    await charger.boot()
    call = await charger.expect_call("RemoteStartTransaction")
    assert call.payload == {"connectorId": 1, "idTag": "1"}
    await charger.close()


# Item 6: console input that is not UTF-8.
def test_a_console_line_that_is_not_utf8_gets_a_message_and_the_console_goes_on(start_server):
    server = start_server(process=True)  # the process's own stdin
    server.proc.stdin.flush()
    server.proc.stdin.buffer.write(b"\xff\xfechargers\n")
    server.proc.stdin.buffer.flush()
    server.type("chargers")
    server.wait_for(r">> input line 1 is not UTF-8 text \(byte 0xff at 0\); ignored")
    server.wait_for(r">> no charger connected; point one at")


@charger_test
async def test_the_first_minutes_wording(start_server):
    server = start_server()
    server.type("@CP-1 Reset")
    server.wait_for(r">> no charger 'CP-1' is connected \(no charger is connected\)")
    server.type("use CP-2")
    server.wait_for(r">> commands now go to CP-2")
    server.type("ClearCache")  # held for CP-2, not for whichever charger is ready first
    server.wait_for(r">> CP-2 is not connected yet; 'ClearCache' will run once it has booted")
    one = await Charger.connect(server.url, "CP-1")
    await one.boot()
    server.wait_for(r"CP-1 \*\* ready: type startRemote$")
    await one.call("BootNotification", {"chargePointVendor": {"x": 1}, "chargePointModel": "M"})
    two = await Charger.connect(server.url, "CP-2")
    await two.boot()
    server.wait_for(r"CP-2 \*\* ready: type @CP-2 startRemote$")  # two chargers: say which
    assert (await two.expect_call("ClearCache")).payload == {}
    server.type("@CP-1 chargers")
    server.wait_for(r'>>   boot: Accepted  \{"x":1\} M  serial - ')  # JSON, not Python's repr
    assert "running held command: ClearCache" in server.settled_output()
    assert not [frame for frame in one.server_calls if frame.action == "ClearCache"]
    await one.close()
    await two.close()


def check_guide_session(server, sample_after: str, typed_at: list, charger_id: str, *demo_args):
    """The guide's sample session (the first text block after ``sample_after``) is what a real run
    prints, the operator typing `chargers` when each of ``typed_at`` has been printed."""
    sample = GUIDE.read_text().split(sample_after)[1].split("```text\n")[1].split("```")[0]

    def type_chargers():
        for pattern in typed_at:
            server.wait_for(pattern, timeout=15)
            server.type("chargers")

    typing = threading.Thread(target=type_chargers)
    typing.start()
    real = guide_session(server, charger_id, *demo_args)
    typing.join(TIMEOUT)
    real_lines = {_normalized(line) for line in real}
    sample_lines = {_normalized(line) for line in sample.splitlines() if line.strip()}
    assert sample_lines - real_lines == set(), "the guide shows lines a real run does not print"
    frames = {line for line in real_lines if " <- " in line or " -> " in line or " ** " in line}
    assert frames - sample_lines == set(), "a real run prints frames the guide does not show"


@pytest.mark.slow(5)
def test_the_guides_sample_session_is_what_a_real_run_prints(start_server):
    server = start_server("--auto-start-after", "1", "--auto-stop-after", "3")
    # as the operator did: once before the transaction, once while charging
    typed_at = [r"CP-1 <- StatusNotification .*Available", r"CP-1 <- MeterValues .*transaction 1"]
    check_guide_session(server, "This is that session as the server printed it", typed_at, "CP-1")


@pytest.mark.slow(5)
def test_the_guides_201_sample_session_is_what_a_real_run_prints(start_server):
    server = start_server("--auto-start-after", "1", "--auto-stop-after", "3")
    typed_at = [r"CS-1 <- TransactionEvent Updated"]  # as the operator did: once while charging
    check_guide_session(server, "### The same session in OCPP 2.0.1", typed_at, "CS-1", "--ocpp",
                        "2.0.1")


@pytest.mark.slow(2)
@pytest.mark.skipif(
    not hasattr(os, "openpty") or importlib.util.find_spec("readline") is None,
    reason="no pseudo-terminal or no readline on this platform (Windows): the console reads "
    "lines as they come",
)
def test_the_console_edits_recalls_completes_and_keeps_a_half_typed_line(tmp_path):
    import termios

    terminal = Terminal(tmp_path)
    try:
        url = re.search(
            r"listening on (ws://[\d.:]+)", terminal.wait_for(r"listening on ws://[\d.:]+ ")
        ).group(1)
        terminal.wait_for(r"ocpp> ")
        terminal.type("chargers\r")
        terminal.wait_for(r">> no charger connected")
        terminal.type("\x1b[A\r")  # Up: the last line again
        terminal.wait_for(r">> no charger connected", count=2)
        terminal.type("echo abd\x1b[Dc\r")  # Left, then a letter: inserted before the d
        terminal.wait_for(r">> abcd")
        terminal.type("ClearCa\t\r")  # an action completed
        terminal.wait_for(r"'ClearCache' will run once one has booted")
        terminal.type("Reset ty\tH\t\r")  # a field, then its enum value
        terminal.wait_for(r"'Reset type=Hard' will run once one has booted")
        terminal.type("echo half")  # not finished when a charger's frames arrive

        async def charger_arrives():
            charger = await Charger.connect(url, "CP-9")
            await charger.boot()
            await charger.close()

        run(charger_arrives())
        terminal.wait_for(r"CP-9 \*\* disconnected")
        terminal.type("-typed\r")
        text = terminal.wait_for(r">> half-typed")
        assert "running held command: ClearCache" in text
        # Quit while readline holds the terminal in its own mode, mid-line ...
        terminal.type("ClearC")
        terminal.wait_for(r"ocpp> ClearC")
        # ... then Ctrl-A (Emacs: start of line), quit, Ctrl-K (kill the rest)
        terminal.type("\x01quit\x0b\r")
        assert terminal.proc.wait(TIMEOUT) == 0
        # The terminal's settings, put back.
        assert termios.tcgetattr(terminal.slave) == terminal.settings
        history = (tmp_path / ".ocpp_mock_history").read_text()
        assert "chargers" in history and "echo half-typed" in history  # kept for the next run
    finally:
        terminal.close()
    # Piped input is read as it is: no prompt, no escapes.
    piped = subprocess.run(
        server_command("--port", "0", "--no-http"),
        input="echo plain\nquit\n",
        capture_output=True,
        text=True,
        timeout=TIMEOUT * 2,
        env=dict(os.environ, HOME=str(tmp_path)),
    )
    assert (
        ">> plain" in piped.stdout and "ocpp> " not in piped.stdout and "\x1b[" not in piped.stdout
    )


@pytest.mark.skipif(
    not hasattr(os, "openpty") or importlib.util.find_spec("readline") is None,
    reason="no pseudo-terminal or no readline on this platform (Windows)",
)
def test_no_prompt_is_drawn_again_after_the_server_has_stopped(tmp_path):
    terminal = Terminal(tmp_path)
    try:
        terminal.wait_for(r"ocpp> ")
        terminal.type("quit\r")
        assert terminal.proc.wait(TIMEOUT) == 0
        text = terminal.wait_for(r">> stopped")
    finally:
        terminal.close()
    after = text.split(">> stopped", 1)[1]
    assert "ocpp>" not in after, repr(after)
