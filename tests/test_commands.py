"""Command language: parse_command and build_payload, shared by the console, scripts and HTTP.

Overrides (key=value, JSON, dotted paths), one line for every mistyped command with nothing sent,
``raw``, ``key@path`` values, and one parser for the console and scenario scripts.

The command language's one table of words, held commands, and `help` that fits the terminal.
Every test talks to a real server (in this process, or as a process in a pseudo-terminal) over
its console, its websocket and its HTTP port.
"""

import asyncio
import os
import re
import subprocess

import pytest

import ocpp_mock_server as mock
from conftest import (
    CHARGER_REPLY_SAMPLES,
    START_TIMEOUT,
    TIMEOUT,
    Charger,
    InProcessDemo,
    Terminal,
    assert_valid,
    booted_charger,
    charger_test,
    http,
    server_command,
)


@pytest.mark.parametrize(
    "typed, action, expected",
    [
        (
            "ChangeConfiguration key=HeartbeatInterval value=30",
            "ChangeConfiguration",
            {"key": "HeartbeatInterval", "value": "30"},
        ),
        (
            "TriggerMessage requestedMessage=MeterValues connectorId=1",
            "TriggerMessage",
            {"requestedMessage": "MeterValues", "connectorId": 1},
        ),
        ('DataTransfer {"vendorId":"x"}', "DataTransfer", {"vendorId": "x"}),
        ("reset type=Hard", "Reset", {"type": "Hard"}),
        (
            "RemoteStartTransaction idTag=42 connectorId=2",
            "RemoteStartTransaction",
            {"connectorId": 2, "idTag": "42"},
        ),
        (
            'GetConfiguration key=["HeartbeatInterval","MeterValueSampleInterval"]',
            "GetConfiguration",
            {"key": ["HeartbeatInterval", "MeterValueSampleInterval"]},
        ),
        (
            "SetChargingProfile csChargingProfiles.chargingSchedule.chargingRateUnit=W",
            "SetChargingProfile",
            None,
        ),
    ],
)
@charger_test
async def test_console_overrides(start_server, typed, action, expected):
    server = start_server()

    charger = await booted_charger(server)
    server.type(typed)
    call = await charger.expect_call(action)
    assert_valid(action, call.payload)
    if expected is not None:
        assert call.payload == expected
    else:
        assert call.payload["csChargingProfiles"]["chargingSchedule"]["chargingRateUnit"] == "W"
    await charger.answer(call, CHARGER_REPLY_SAMPLES[action])
    await charger.close()


@pytest.mark.parametrize(
    "typed, message",
    [
        ("Rest", r"unknown command 'Rest'; did you mean Reset \(an OCPP command\)\?"),
        ("clear", r"unknown command 'clear'; did you mean ClearCache \(an OCPP command\)\?"),
        ("chargrs", r"unknown command 'chargrs'; did you mean chargers\?"),
        (
            "Reset type=Hardd",
            r"Reset not sent: type \"Hardd\" is not allowed \(did you mean Hard\?\)",
        ),
        (
            "RemoteStartTransaction conectorId=2",
            r"conectorId is not a field of this message \(did you mean connectorId\?\)",
        ),
        ("Reset Hard", r"Reset: expected key=value, got 'Hard'"),
        ("DataTransfer {not json", r"DataTransfer: the JSON payload does not parse"),
        ("@CP-9 Reset", r"no charger 'CP-9' is connected \(connected: CP-1\)"),
        ("help Rset", r"no action 'Rset'; did you mean Reset\?"),
        (
            "stopRemote",
            r"no transaction is open on CP-1; give one: RemoteStopTransaction transactionId=N",
        ),
        (
            "stopRemote connectorId=1",
            r"RemoteStopTransaction not sent: connectorId is not a field of this message",
        ),
    ],
)
@charger_test
async def test_mistyped_commands_get_one_line_and_nothing_is_sent(start_server, typed, message):
    server = start_server()

    charger = await booted_charger(server)
    mark = server.mark()
    server.type(typed)
    server.wait_for(">> .*" + message, since=mark)
    await charger.no_frame_within(0.3)
    await charger.close()


@charger_test
async def test_raw_sends_the_frame_as_typed(start_server):
    server = start_server()

    charger = await booted_charger(server)
    server.type('raw [2,"neg-1","Reset",{"type":"Nope"}]')
    assert await charger.receive() == [2, "neg-1", "Reset", {"type": "Nope"}]
    await charger.close()


def test_one_parser_for_the_console_and_scripts():
    command = mock.parse_command("@CP-1 Reset type=Hard")
    assert (command.word, command.target, command.action, command.overrides) == (
        "call",
        "CP-1",
        "Reset",
        [(["type"], "Hard")],
    )
    assert mock.parse_command("ChangeConfiguration key=HeartbeatInterval value=30").overrides[
        1
    ] == (["value"], "30")
    for line, message in (
        ("Reset type=hard", 'type "hard" is not allowed (did you mean Hard?)'),
        ("Reset typ=Hard", "typ is not a field of this message (did you mean type?)"),
        ("Rset", "unknown command 'Rset'; did you mean Reset (an OCPP command)?"),
        ("UnlockConnector connectorId=one", "connectorId must be an integer, got string"),
    ):
        with pytest.raises(mock.CommandError) as refused:
            mock.parse_command(line)
        assert message in str(refused.value)
        with pytest.raises(mock.ScriptError) as invalid:
            mock.parse_scenario(line)
        assert str(invalid.value) == str(refused.value) or "unknown step" in str(invalid.value)


@charger_test
async def test_key_at_path_reads_a_value_from_a_file_at_the_console_and_in_scripts_never_over_http(
    start_server, tmp_path
):
    (tmp_path / "ca.pem").write_text(mock.DEMO_CERTIFICATE)
    server = start_server()
    charger = await booted_charger(server)
    server.type(
        "InstallCertificate certificateType=ManufacturerRootCertificate certificate=@%s"
        % (tmp_path / "ca.pem")
    )
    call = await charger.expect_call("InstallCertificate")
    assert call.payload == {
        "certificateType": "ManufacturerRootCertificate",
        "certificate": mock.DEMO_CERTIFICATE,
    }
    assert_valid("InstallCertificate", call.payload)
    await charger.answer(call, {"status": "Accepted"})
    server.type("DataTransfer vendorId=@@home")  # @@: a literal @
    call = await charger.expect_call("DataTransfer")
    assert call.payload["vendorId"] == "@home"
    await charger.answer(call, {"status": "Accepted"})
    server.type("CertificateSigned certificateChain=@missing.pem")
    server.wait_for(
        r">> CertificateSigned: cannot read certificateChain=@missing\.pem \(.*missing\.pem\): "
        r"No such file or directory"
    )
    refused = await http(
        server,
        "POST",
        "/api/command",
        {"line": "CertificateSigned certificateChain=@/etc/hostname"},
    )
    assert refused.status == 400 and "only the console and scripts" in refused.json["error"]
    await charger.close()
    # A script reads paths relative to its own folder.
    script = tmp_path / "scripts" / "install.txt"
    script.parent.mkdir()
    script.write_text("InstallCertificate certificate=@../ca.pem\n")
    steps = mock.parse_scenario(script.read_text(), str(script.parent))
    assert steps[0].command.overrides[0] == (["certificate"], mock.DEMO_CERTIFICATE)
    with pytest.raises(mock.ScriptError) as missing:
        mock.parse_scenario("CertificateSigned certificateChain=@nope.pem", str(tmp_path))
    assert missing.value.line == 1 and "cannot read certificateChain=@nope.pem" in str(
        missing.value
    )


# ------------------------------------------------------------ one table of words


def completions(server, before, text):
    """What Tab offers at the server's console for ``text`` after the words ``before``."""
    readline_input = mock.InteractiveInput(server.console, server.loop)
    return server.call_in_loop(readline_input.completions, before, text)


def typed_rows():
    return [row for row in mock.COMMAND_WORDS if row.names]


def test_every_word_of_the_table_has_help_completes_parses_and_runs(start_server):
    server = start_server()
    overview_mark = server.mark()
    server.type("help")
    for row in mock.COMMAND_WORDS:
        if row.overview:
            server.wait_for(">> " + re.escape(row.usage) + " ", since=overview_mark)
    for row in typed_rows():
        mark = server.mark()
        for name in row.names:
            assert name + " " in completions(server, [], name[:2].upper()), name
            server.type("help " + name)  # a word's topic (an action's fields for startRemote)
        server.type("help " + row.topic)
        server.wait_for(
            ">> " + re.escape(row.usage) + " .* e\\.g\\. " + re.escape(row.example), since=mark
        )
        command = mock.parse_command(row.example)  # every example is a valid line
        assert row.action or row.run is not None, row.usage
        example_row = mock.typed_word(row.example.split()[0])
        assert example_row is not None
        try:
            mock.parse_scenario(row.example)
            allowed = True
        except mock.ScriptError as exc:
            assert "for the interactive console" in str(exc)
            allowed = False
        assert allowed == example_row.scripts == mock.script_may_use(command.word), row.example
    assert "no action" not in server.settled_output()
    # A word's argument completes from its row: topics, charger ids, held clear, fault kinds.
    assert completions(server, ["help"], "fa") == ["faults "]
    assert completions(server, ["held"], "") == ["clear "]
    assert "BootNotification " in completions(server, ["fault"], "Boot")
    assert completions(server, ["use"], "") == []  # no charger connected
    assert completions(server, ["echo"], "") == []


@charger_test
async def test_a_word_missing_from_the_table_is_refused_everywhere(start_server, monkeypatch):
    server = start_server()
    assert "echo " in completions(server, [], "ec")
    monkeypatch.setattr(
        mock, "COMMAND_WORDS", tuple(row for row in mock.COMMAND_WORDS if "echo" not in row.names)
    )
    server.type("echo hello")
    server.wait_for(r">> unknown command 'echo'; type help for the list")
    assert "echo " not in completions(server, [], "ec")
    with pytest.raises(mock.ScriptError, match="unknown step 'echo'"):
        mock.parse_scenario("echo hello\n")
    reply = await http(server, "POST", "/api/command", {"line": "echo hello"})
    assert reply.status == 400 and "unknown command 'echo'" in reply.json["error"]
    mark = server.mark()
    server.type("help console")
    server.wait_for(r">> Tab completes words", since=mark)  # the topic's last line
    assert ">> quit | exit " in server.output(mark) and "echo <text>" not in server.output(mark)


def test_help_takes_topics_and_words_and_says_which_there_are(start_server):
    server = start_server()
    server.type("help faults")
    server.wait_for(r">> fault <what> .* e\.g\. fault BootNotification status=Pending times=2")
    server.wait_for(r">>   fault disconnect \[code=N\] \[after=FRAMES\] \[in=SECONDS\]")
    server.type("help security")
    server.wait_for(r">> The security whitepaper's actions work like the others: CertificateSigned")
    server.type("help scripts")
    server.wait_for(r">> --script FILE runs these, .* the steps charger, wait, expect, sleep")
    server.type("help held")
    server.wait_for(r">> held \| held clear .* e\.g\. held")
    server.type("help nonsense")
    server.wait_for(
        r">> no action 'nonsense' "
        r"\(topics: console, actions, faults, security, scripts\)"
    )
    server.type("help fautls")
    server.wait_for(r">> no action 'fautls'; did you mean faults\?")
    server.type("help")
    server.wait_for(r">> more: help console \| actions \| faults \| security \| scripts")


# ------------------------------------------------------------------ held commands


@charger_test
async def test_held_commands_are_listed_when_held_and_when_run(start_server):
    server = start_server()
    server.type("startRemote")
    server.wait_for(r">> no charger is connected yet; 'startRemote' will run once one has booted")
    server.wait_for(r">> held: startRemote  \(60 s left\)$")
    mark = server.mark()
    server.type("Reset type=Hard")
    server.wait_for(r">> held: Reset type=Hard  \(60 s left\)$", since=mark)
    server.wait_for(r">> held: startRemote  \(\d+ s left\)$", since=mark)  # every held one, again
    mark = server.mark()
    server.type("held")
    server.wait_for(r">> held: startRemote ", since=mark)
    server.wait_for(r">> held: Reset type=Hard ", since=mark)

    charger = await Charger.connect(server.url)
    await charger.boot()
    assert (await charger.expect_call("RemoteStartTransaction")).payload == {
        "connectorId": 1,
        "idTag": "1",
    }
    server.wait_for(r">> running held command: startRemote$")
    server.wait_for(r">> running held command: Reset type=Hard$")
    mark = server.mark()
    server.type("held")
    server.wait_for(r">> no commands are held", since=mark)
    await charger.close()


@charger_test
async def test_held_clear_drops_them_and_nothing_is_sent(start_server):
    server = start_server()
    server.type("ClearCache")
    server.type("Reset")
    server.wait_for(r">> held: Reset ")
    server.type("held clear")
    server.wait_for(r">> dropped 2 held commands: ClearCache, Reset$")
    server.type("held clear")
    server.wait_for(r">> no commands are held$")
    server.type("held everything")
    server.wait_for(r">> usage: held \(list them\) or held clear \(drop them\)")
    charger = await booted_charger(server)
    await charger.no_frame_within(0.3)
    await charger.close()


@charger_test
async def test_held_commands_expire_after_hold_for_with_one_line(start_server):
    server = start_server("--hold-for", "0.3")
    server.type("ClearCache")
    server.type("Reset")
    server.wait_for(r">> held: Reset  \(0 s left\)")
    server.wait_for(
        r"!! no charger booted within --hold-for 0\.3 s: 2 held commands dropped, not "
        r"sent: ClearCache, Reset$"
    )
    charger = await booted_charger(server)
    await charger.no_frame_within(0.3)
    text = server.settled_output()
    assert text.count("held commands dropped") == 1 and "running held command" not in text
    await charger.close()


def test_held_commands_are_bounded_and_so_is_their_listing(start_server):
    server = start_server()
    server.type(
        "\n".join(
            f"DataTransfer vendorId=v{number}" for number in range(mock.MAX_HELD_COMMANDS + 1)
        )
    )
    server.wait_for(
        rf">> {mock.MAX_HELD_COMMANDS} commands are held already; "
        rf"'DataTransfer vendorId=v{mock.MAX_HELD_COMMANDS}' is not \(held "
        r"lists them, held clear drops them\)"
    )
    server.wait_for(rf">> {(mock.HELD_LISTED + 1)} commands are held \(held lists them")
    mark = server.mark()
    server.type("held")
    server.wait_for(rf">> held: DataTransfer vendorId=v{(mock.MAX_HELD_COMMANDS - 1)} ", since=mark)
    assert server.output(mark).count(">> held: ") == mock.MAX_HELD_COMMANDS
    assert server.output().count(">> held: DataTransfer vendorId=v0 ") == mock.HELD_LISTED + 1


def test_hold_for_is_range_checked():
    result = subprocess.run(
        server_command("--hold-for", "0"),
        capture_output=True,
        text=True,
        timeout=START_TIMEOUT,
    )
    assert result.returncode == 2 and "--hold-for: 0 is out of range" in result.stderr


def demo_charger(server, *args):
    return InProcessDemo(server.url + "/CP-DEMO", "--meter-interval", "0.2", *args)


def test_two_start_remotes_typed_while_away_make_one_transaction(start_server):
    server = start_server()
    server.type("startremote")
    server.type("startRemote")
    server.wait_for(r">> held: startRemote ")
    demo = demo_charger(server, "--once")
    try:
        server.wait_for(r'CP-DEMO <- RemoteStartTransaction\.conf \{"status":"Accepted"\}')
        server.wait_for(r'CP-DEMO <- RemoteStartTransaction\.conf \{"status":"Rejected"\}')
        server.wait_for(r"CP-DEMO <- MeterValues .*transaction 1")
        server.type("stopRemote")
        returncode = demo.wait(TIMEOUT * 2)
        output = demo.stdout
    finally:
        demo.stop()
    assert returncode == 0, output
    # preparing, or already charging when its StartTransaction was answered before the second
    # RemoteStartTransaction arrived (a loaded machine): refused either way
    assert re.search(r"RemoteStartTransaction refused: connector 1 is (preparing|charging)", output)
    text = server.settled_output()
    assert len(re.findall(r"CP-DEMO <- StartTransaction ", text)) == 1, text
    assert "transaction-lost" not in text


@charger_test
async def test_a_double_click_on_start_is_sent_twice_and_the_demo_charger_refuses_one(start_server):
    server = start_server()
    demo = demo_charger(server)
    try:
        server.wait_for(r"CP-DEMO <- StatusNotification .*Available", timeout=10)
        start = "/api/chargers/CP-DEMO/startRemote"
        replies = await asyncio.gather(*(http(server, "POST", start, {}) for _ in range(2)))
        assert [reply.status for reply in replies] == [200, 200]  # the API sends what it is asked
        statuses = sorted(reply.json["result"]["status"] for reply in replies)
        assert statuses == ["Accepted", "Rejected"]
        server.wait_for(r"CP-DEMO <- MeterValues .*transaction 1")
        assert len(re.findall(r"CP-DEMO <- StartTransaction ", server.settled_output())) == 1
    finally:
        demo.stop()


# ------------------------------------------------------------- help at 80 columns


def answers(text: str, mark: str, end: str) -> list:
    """The console answers (text after ``>> ``) printed between the echo ``mark`` and ``end``."""
    lines = text.split(">> " + mark + "\n", 1)[1].split(">> " + end)[0].splitlines()
    return [line for line in lines if " >> " in line]


@pytest.mark.skipif(not hasattr(os, "openpty"), reason="no pseudo-terminal on this platform")
def test_help_at_80_columns_fits_and_never_breaks_a_word(tmp_path):
    wide_words = set()
    for topic in [""] + list(mock.HELP_TOPICS):
        for line in mock.help_topic(topic, None) if topic else mock.help_overview(None):
            wide_words.update(line.split())
    terminal = Terminal(tmp_path, columns=80)
    try:
        terminal.wait_for(r"ocpp> ")
        shown = {}
        for topic in [""] + list(mock.HELP_TOPICS) + ["SetChargingProfile"]:
            name = topic or "overview"
            terminal.type(f"echo start {name}\rhelp {topic}\recho end {name}\r")
            text = terminal.wait_for(rf">> end {name}\n")
            shown[topic] = answers(text, "start " + name, "end " + name)
    finally:
        terminal.close()
    for topic, lines in shown.items():
        assert lines, topic
        for line in lines:
            assert len(line) <= 80, "{!r} at 80 columns:\n{}".format(line, "\n".join(lines))
        if topic != "SetChargingProfile":  # JSON there is broken after its commas
            for line in lines:
                for word in line.split(" >> ", 1)[1].split():
                    assert word in wide_words, f"a word broken in two: {word!r} in {line!r}"
    assert len(shown[""]) <= 22, "\n".join(shown[""])  # with the prompt, on a 24-line screen
    assert any("DataTransfer" in line for line in shown[""])
