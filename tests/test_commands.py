"""Command language: parse_command and build_payload, shared by the console, scripts and HTTP.

Overrides (key=value, JSON, dotted paths), one line for every mistyped command with nothing sent,
``raw``, ``key@path`` values, and one parser for the console and scenario scripts.
"""

import pytest

import ocpp_mock_server as mock
from conftest import (
    CHARGER_REPLY_SAMPLES,
    assert_valid,
    booted_charger,
    charger_test,
    http,
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
