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
