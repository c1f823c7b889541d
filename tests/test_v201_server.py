"""OCPP 2.0.1 CSMS-initiated messages (issue 21, item 5): every one typed bare sends a payload valid
by the official 2.0.1 request schema (the ``ocpp`` package's v201/schemas, the oracle);
RequestStartTransaction / RequestStopTransaction are startRemote / stopRemote and the automation's
on a 2.0.1 station; a script waits for a TransactionEvent of one kind."""

import json
from pathlib import Path
from types import SimpleNamespace

import jsonschema
import ocpp.v201

import ocpp_mock_server as mock
from conftest import Charger, ServerProcess, charger_test

V201_SCHEMAS = Path(ocpp.v201.__file__).resolve().parent / "schemas"

# Every CSMS-initiated message of OCPP 2.0.1 (blocks A to P) and DataTransfer.
V201_SERVER_ACTIONS = (
    "GetBaseReport GetReport GetVariables SetVariables SetNetworkProfile Reset ClearCache "
    "SendLocalList GetLocalListVersion GetTransactionStatus RequestStartTransaction "
    "RequestStopTransaction TriggerMessage UnlockConnector ChangeAvailability ReserveNow "
    "CancelReservation CostUpdated SetChargingProfile GetChargingProfiles ClearChargingProfile "
    "GetCompositeSchedule UpdateFirmware PublishFirmware UnpublishFirmware CertificateSigned "
    "InstallCertificate DeleteCertificate GetInstalledCertificateIds GetLog GetMonitoringReport "
    "SetMonitoringBase SetMonitoringLevel SetVariableMonitoring ClearVariableMonitoring "
    "CustomerInformation SetDisplayMessage GetDisplayMessages ClearDisplayMessage DataTransfer"
).split()

_validators = {}


def v201_problems(name: str, payload) -> list:
    """Errors of ``payload`` against the official 2.0.1 schema ``name`` (e.g. "ResetRequest")."""
    if name not in _validators:
        schema = json.loads((V201_SCHEMAS / (name + ".json")).read_text())
        _validators[name] = jsonschema.Draft6Validator(
            schema, format_checker=jsonschema.FormatChecker()
        )
    return [error.message for error in _validators[name].iter_errors(payload)]


def assert_v201_valid(name: str, payload) -> None:
    problems = v201_problems(name, payload)
    assert not problems, f"{name} {json.dumps(payload)}: {problems}"


def test_the_table_has_every_csms_initiated_message():
    assert len(V201_SERVER_ACTIONS) == 40
    assert sorted(mock.V201_SERVER_ACTION_DEFAULTS) == sorted(V201_SERVER_ACTIONS)
    for action in V201_SERVER_ACTIONS:
        assert (V201_SCHEMAS / f"{action}Request.json").exists(), action


def _stand_in_system(**options):
    """A CentralSystem's fields the defaults read, without a server."""
    settings = mock.parse_settings(["--port", "0", *options.get("args", ())])
    return SimpleNamespace(
        options=settings, next_request_id=7, next_remote_start_id=3, last_reservation_id=None,
        peek_reservation_id=lambda: 5, last_signed_chain={}, http=None, port=60003,
    )


def test_every_default_is_valid_by_the_official_schema():
    system = _stand_in_system()
    session = SimpleNamespace(
        charger_id="CS-1",
        state=SimpleNamespace(
            transactions={"tx-1": SimpleNamespace(transaction_id="tx-1", connector_id=1)},
            certificate_ids=[],
        ),
        websocket=SimpleNamespace(local_address=("127.0.0.1", 60003), path="/ocpp/CS-1",
                                  request=None),
    )
    for action, default in mock.V201_SERVER_ACTION_DEFAULTS.items():
        for on in (session, None):
            try:
                payload = default(system, on)
            except mock.CommandError:
                assert on is None and action in ("RequestStopTransaction", "CostUpdated")
                continue
            assert_v201_valid(action + "Request", payload)


# ------------------------------------------------------------- wait <Action> key=value (scripts)


def _status(connector: int, status: str) -> dict:
    return {"connectorId": connector, "errorCode": "NoError", "status": status}


@charger_test
async def test_a_wait_with_fields_takes_only_the_messages_that_have_them(start_server, tmp_path):
    """`wait <Action> key=value` consumes the first CALL of that action with those fields (nested
    ones by dotted keys) and leaves the others for later steps, in their order."""
    script = tmp_path / "fields.txt"
    script.write_text(
        "wait StatusNotification status=Available connectorId=2\n"
        "expect connectorId=2\n"
        "wait StatusNotification\n"  # the one passed over: still there
        "expect status=Preparing\n"
    )
    server = start_server("--script", str(script), "--no-boot-data")
    charger = await Charger.connect(server.url, "CP-F")
    await charger.boot(answer_boot_data=False)
    await charger.call("StatusNotification", _status(1, "Preparing"))
    await charger.call("StatusNotification", _status(2, "Available"))
    server.wait_for(r"scenario fields\.txt: PASS, 4 of 4 steps passed")
    await charger.close()


@charger_test
async def test_a_wait_with_fields_that_times_out_says_what_came_instead(tmp_path):
    script = tmp_path / "late.txt"
    script.write_text("wait StatusNotification status=Faulted within 0.5\n")
    server = ServerProcess("--script", str(script), "--no-boot-data").wait_ready()
    charger = await Charger.connect(server.url, "CP-F")
    await charger.boot(answer_boot_data=False)
    await charger.call("StatusNotification", _status(1, "Preparing"))
    await charger.call("StatusNotification", _status(1, "Charging"))
    server.wait_for(
        r"late\.txt:1 FAILED .*: expected StatusNotification status=Faulted x1 within 0\.5 s, 0 "
        r"arrived; 2 others, the latest with status=\"Charging\""
    )
    await charger.close()
    assert server.stop() == 1
