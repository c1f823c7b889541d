"""Output and transcript: what the operator reads and what is written to the log file.

Everything a charger controls reaches the terminal escaped and cut, warn-once tables stay bounded,
a stdout nobody reads stops nothing, and the transcript survives ``kill -9``.
"""

import json
import re
import signal
import subprocess

import pytest

import ocpp_mock_server as mock
from conftest import (
    TIMEOUT,
    Charger,
    ServerProcess,
    _text_reply,
    charger_test,
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
