"""Spec lint: the 1.6 schemas' field rules, checked against the official schemas.

The oracle (the ``ocpp`` package's JSON schemas) and the samples the other tests rely on are checked
first; then the lint's tables against the schemas, lenient mode's one warning per problem and strict
mode's exact CALLERROR codes.
"""

import json

import pytest

import ocpp_mock_server as mock
from conftest import (
    CHARGER_REPLY_SAMPLES,
    CHARGER_REQUEST_SAMPLES,
    FIXTURE,
    NEAR_MISS,
    NOW,
    SCHEMAS,
    SHARED_FIXTURE,
    Charger,
    _compare_object,
    assert_valid,
    charger_test,
    flexicharge_frames,
    schema_problems,
)


def test_the_oracle_rejects_an_invalid_payload():
    # The date-time format check needs rfc3339-validator: without it every
    # currentTime would pass, and the schema tests below would prove less.
    assert schema_problems("HeartbeatResponse", {"currentTime": "yesterday"})
    assert schema_problems("ResetResponse", {"status": "Maybe"})
    assert not schema_problems("HeartbeatResponse", {"currentTime": "2026-11-25T15:11:34.123Z"})


# Only in the development tree: a user's checkout has no ../shared, and nothing to check (no skip).
if SHARED_FIXTURE.exists():

    def test_fixture_copy_is_verbatim():
        assert FIXTURE.read_bytes() == SHARED_FIXTURE.read_bytes()


def test_samples_are_valid_by_the_oracle():
    for action, payload in CHARGER_REQUEST_SAMPLES.items():
        assert_valid(action, payload)
    for action, payload in CHARGER_REPLY_SAMPLES.items():
        assert_valid(action + "Response", payload)


@pytest.mark.parametrize(
    "table, suffix",
    [
        (mock.OCPP16.charger_request_rules, ""),
        (mock.OCPP16.server_request_rules, ""),
        (mock.OCPP16.charger_reply_rules, "Response"),
    ],
)
def test_lint_rules_match_the_official_schemas(table, suffix):
    differences = []
    for action, rule in table.items():
        root = json.loads((SCHEMAS / (action + suffix + ".json")).read_text())
        _compare_object(root, rule, action + suffix, root, differences)
    assert not differences, "\n".join(differences)


def test_lint_tables_cover_every_official_action():
    official = {path.stem for path in SCHEMAS.glob("*.json")}
    requests = {name for name in official if not name.endswith("Response")}
    version = mock.OCPP16
    assert set(version.charger_request_rules) | set(version.server_request_rules) == requests
    assert set(mock.OCPP16.charger_reply_rules) == set(mock.OCPP16.server_request_rules)
    assert set(mock.CHARGER_ACTION_HANDLERS) == set(mock.OCPP16.charger_request_rules)


def test_lint_agrees_with_the_oracle_on_fixture_payloads():
    """Wherever the official schema finds a problem in a real FlexiCharge frame, so does the
    lint."""
    checked = 0
    for entry in flexicharge_frames():
        frame = entry["frame"]
        if entry["dir"] == "charger->server" and frame[0] == 2:
            action, payload = frame[2], frame[3]
            oracle = schema_problems(action, payload)
            lint = mock.lint_payload(mock.OCPP16.charger_request_rules[action], payload)
            assert bool(oracle) == bool(lint), (action, oracle, [str(p) for p in lint])
            checked += 1
    assert checked >= 6


@charger_test
async def test_lenient_mode_answers_off_spec_payloads_and_warns_once(start_server):
    server = start_server("--no-boot-data")
    payload = {"connectorId": "1", "errorCode": "", "status": "Available"}

    charger = await Charger.connect(server.url)
    for _ in range(3):
        assert (await charger.call("StatusNotification", payload)).payload == {}
    await charger.call(
        "StartTransaction", {"connectorId": 1, "meterStart": 0, "timestamp": 1665917012.1}
    )
    await charger.close()

    output = server.settled_output()
    assert (
        output.count(
            'spec: StatusNotification.connectorId must be an integer, got string "1" '
            "(TypeConstraintViolation"
        )
        == 1
    )
    assert (
        output.count(
            'spec: StatusNotification.errorCode "" is not allowed (one of ConnectorLockFailure, '
            "EVCommunicationError, GroundFailure, HighTemperature, InternalError, "
            "LocalListConflict, "
            "... (16 values))"
        )
        == 1
    )
    assert (
        "spec: StartTransaction.idTag is required but missing (OccurenceConstraintViolation"
        in output
    )
    assert (
        "spec: StartTransaction.timestamp must be an ISO-8601 date-time string, got number"
        in output
    )


@pytest.mark.parametrize(
    "action, payload, code",
    [
        (
            "StatusNotification",
            {"connectorId": "1", "errorCode": "NoError", "status": "Available"},
            "TypeConstraintViolation",
        ),
        (
            "StartTransaction",
            {"connectorId": 1, "meterStart": 0, "timestamp": NOW},
            "OccurenceConstraintViolation",
        ),
        ("Heartbeat", {"extra": 1}, "FormationViolation"),
        ("Authorize", {"idTag": "x" * 21}, "PropertyConstraintViolation"),
        (
            "StatusNotification",
            {"connectorId": 1, "errorCode": "NoError", "status": "Sleeping"},
            "PropertyConstraintViolation",
        ),
        ("Heartbeat", {}, None),
    ],
)
@charger_test
async def test_strict_mode_answers_the_exact_error_code(start_server, action, payload, code):
    server = start_server("--strict", "--no-boot-data")

    charger = await Charger.connect(server.url)
    await charger.call("BootNotification", CHARGER_REQUEST_SAMPLES["BootNotification"])
    reply = await charger.call(action, payload)
    if code is None:
        assert reply[0] == 3
    else:
        assert reply[0] == 4 and reply[2] == code, reply
        assert isinstance(reply[4], dict)
    await charger.close()


def test_the_lint_caps_problems_and_computes_hints_only_when_shown(monkeypatch):
    calls = []
    original = mock.difflib.get_close_matches
    monkeypatch.setattr(
        mock.difflib, "get_close_matches", lambda *a, **k: calls.append(a) or original(*a, **k)
    )
    assert len(json.dumps(NEAR_MISS, separators=(",", ":"))) < 64 * 1024
    problems = mock.lint_payload(mock.OCPP16.charger_request_rules["MeterValues"], NEAR_MISS)
    assert len(problems) == mock.MAX_PROBLEMS_PER_FRAME
    assert calls == []
    assert "did you mean Energy.Active.Import.Register?" in str(problems[0])
    assert len(calls) == 1
