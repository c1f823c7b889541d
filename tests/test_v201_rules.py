"""The OCPP 2.0.1 field rules (issue 21, item 6): generated from the official schemas, and checked
against them.

The tables in the module are the output of scripts/ocpp201_tables.py, byte for byte; they cover
exactly the 2.0.1 actions each side sends and every field of every schema; and on payloads built
from each schema, valid ones and ones broken in one place, the lint's verdict is the official
schema's (jsonschema's Draft4Validator, as for the 1.6 schemas and as the ``ocpp`` package
validates: 1.0 is no integer), with the code the mutation calls for.  These are data checks: they
call the rules directly.
"""

import copy
import datetime
import importlib.util
import json
import random

import jsonschema
import pytest

import ocpp_mock_server as mock
from conftest import NOW, ROOT, SCHEMAS_201, Charger, _compare_object, charger_test

CHARGER_ACTIONS = {
    "BootNotification", "Heartbeat", "StatusNotification", "Authorize", "TransactionEvent",
    "MeterValues", "NotifyReport", "NotifyEvent", "NotifyMonitoringReport",
    "NotifyCustomerInformation", "NotifyDisplayMessages", "SecurityEventNotification",
    "SignCertificate", "FirmwareStatusNotification", "PublishFirmwareStatusNotification",
    "LogStatusNotification", "ReservationStatusUpdate", "NotifyChargingLimit",
    "ClearedChargingLimit", "NotifyEVChargingNeeds", "NotifyEVChargingSchedule",
    "ReportChargingProfiles", "Get15118EVCertificate", "GetCertificateStatus", "DataTransfer",
}  # fmt: skip
SERVER_ACTIONS = {
    "GetBaseReport", "GetReport", "GetVariables", "SetVariables", "SetNetworkProfile", "Reset",
    "ClearCache", "SendLocalList", "GetLocalListVersion", "GetTransactionStatus",
    "RequestStartTransaction", "RequestStopTransaction", "TriggerMessage", "UnlockConnector",
    "ChangeAvailability", "ReserveNow", "CancelReservation", "CostUpdated", "SetChargingProfile",
    "GetChargingProfiles", "ClearChargingProfile", "GetCompositeSchedule", "UpdateFirmware",
    "PublishFirmware", "UnpublishFirmware", "CertificateSigned", "InstallCertificate",
    "DeleteCertificate", "GetInstalledCertificateIds", "GetLog", "GetMonitoringReport",
    "SetMonitoringBase", "SetMonitoringLevel", "SetVariableMonitoring", "ClearVariableMonitoring",
    "CustomerInformation", "SetDisplayMessage", "GetDisplayMessages", "ClearDisplayMessage",
    "DataTransfer",
}  # fmt: skip
TABLES = {
    "V201_CHARGER_REQUESTS": ("Request", CHARGER_ACTIONS),
    "V201_SERVER_REQUESTS": ("Request", SERVER_ACTIONS),
    "V201_CHARGER_REPLIES": ("Response", SERVER_ACTIONS),
}
CASES = [(table, action) for table, (_, actions) in TABLES.items() for action in sorted(actions)]


def _load_script():
    path = ROOT / "scripts" / "ocpp201_tables.py"
    spec = importlib.util.spec_from_file_location("ocpp201_tables", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    return script


def _schema(table: str, action: str) -> dict:
    suffix = TABLES[table][0]
    return json.loads((SCHEMAS_201 / f"{action}{suffix}.json").read_text(encoding="utf-8"))


# ------------------------------------------------------------------- The tables are the schemas'


def test_the_modules_section_is_the_scripts_output():
    script = _load_script()
    generated = script.section(script.load_schemas(SCHEMAS_201))
    in_module = script.module_section(mock.__loader__.get_source(mock.__name__))
    assert in_module, "no section 'OCPP 2.0.1 field rules' before 'Output and transcript'"
    assert in_module == generated, "edited by hand, or the schemas changed: run the script"
    assert max(len(line) for line in generated.splitlines()) <= 100


def test_the_script_refuses_a_keyword_the_lint_cannot_check(tmp_path, capsys):
    script = _load_script()
    schema = _schema("V201_CHARGER_REQUESTS", "Authorize")
    schema["properties"]["idToken"] = {"type": "string", "pattern": "^[0-9A-F]+$"}
    for path in SCHEMAS_201.glob("*.json"):
        (tmp_path / path.name).write_text(path.read_text(encoding="utf-8"), encoding="utf-8")
    (tmp_path / "AuthorizeRequest.json").write_text(json.dumps(schema), encoding="utf-8")
    assert script.main([str(tmp_path)]) == 2
    assert "AuthorizeRequest.idToken: keyword(s) pattern" in capsys.readouterr().err


def test_the_tables_cover_exactly_the_actions_of_each_side():
    for table, (_, actions) in TABLES.items():
        assert set(getattr(mock, table)) == actions, table
    official = {path.stem for path in SCHEMAS_201.glob("*.json")}
    assert len(official) == 128
    assert {action + "Request" for action in CHARGER_ACTIONS | SERVER_ACTIONS} | {
        action + "Response" for action in CHARGER_ACTIONS | SERVER_ACTIONS
    } == official


@pytest.mark.parametrize("table", list(TABLES))
def test_every_field_of_every_schema_has_its_rule(table):
    differences = []
    for action, fields in getattr(mock, table).items():
        root = _schema(table, action)
        _compare_object(root, mock.Object(fields), action, root, differences)
    assert not differences, "\n".join(differences)


# ------------------------------------------------------- Payloads built from the schema, and broken

NOT_A_DATE_TIME = ("yesterday", "2026-11-25", "2026-11-25T15:11:34", "15:11:34Z", "")
OTHER_JSON_TYPES = ("text", 7, 2.5, True, None, [], {})
JSON_TYPE_TEST = {
    "string": lambda value: isinstance(value, str),
    "integer": lambda value: isinstance(value, int) and not isinstance(value, bool),
    "number": lambda value: isinstance(value, (int, float)) and not isinstance(value, bool),
    "boolean": lambda value: isinstance(value, bool),
    "array": lambda value: isinstance(value, list),
    "object": lambda value: isinstance(value, dict),
}


class Builder:
    """Builds valid payloads of one schema, at random (seeded), and notes where each can break."""

    def __init__(self, root: dict, rng: random.Random) -> None:
        self.root, self.rng = root, rng

    def resolve(self, schema: dict) -> dict:
        if "$ref" in schema:
            return self.root["definitions"][schema["$ref"].split("/")[-1]]
        return schema

    def value(self, schema: dict, depth: int = 0):
        schema, rng = self.resolve(schema), self.rng
        kind = schema.get("type")
        if "enum" in schema:
            return rng.choice(schema["enum"])
        if kind == "string" and schema.get("format") == "date-time":
            return self.date_time()
        if kind == "string":
            length = rng.choice([0, 1, 5, schema.get("maxLength", 30)])
            return "".join(rng.choice("aZ9-é€ ") for _ in range(min(length, 60)))
        if kind in ("integer", "number"):
            low, high = schema.get("minimum", -1000), schema.get("maximum", 1000)
            number = rng.randint(int(low), int(high))
            return number / 4 if kind == "number" and "maximum" not in schema else number
        if kind == "boolean":
            return rng.random() < 0.5
        if kind == "array":
            low = schema.get("minItems", 0)
            high = min(schema.get("maxItems", 3), low + 2)
            return [self.value(schema["items"], depth + 1) for _ in range(rng.randint(low, high))]
        if kind == "object":
            return self.object(schema, depth)
        return rng.choice(["any", 1, None, [1, "two"], {"any": {"thing": True}}])

    def object(self, schema: dict, depth: int) -> dict:
        required = set(schema.get("required", ()))
        chance = 0.6 if depth < 3 else 0.15
        payload = {
            name: self.value(field, depth + 1)
            for name, field in schema.get("properties", {}).items()
            if name in required or self.rng.random() < chance
        }
        if schema.get("additionalProperties", True) is not False and self.rng.random() < 0.5:
            payload["vendorSpecific"] = {"anything": [1, "goes"]}  # customData is open
        return payload

    def date_time(self) -> str:
        rng = self.rng
        moment = datetime.datetime(2000, 1, 1) + datetime.timedelta(seconds=rng.randrange(3 << 30))
        text = moment.strftime("%Y-%m-%dT%H:%M:%S")
        return text + rng.choice(["", ".123", ".5"]) + rng.choice(["Z", "+02:00", "-05:30"])

    def sites(self, schema: dict, value, steps: tuple, found: list) -> list:
        """Every (steps, schema, value) in ``value``, ``value`` itself first (steps ())."""
        schema = self.resolve(schema)
        found.append((steps, schema, value))
        if schema.get("type") == "object":
            for name, item in value.items():
                if name in schema.get("properties", {}):
                    self.sites(schema["properties"][name], item, steps + (name,), found)
        elif schema.get("type") == "array":
            for index, item in enumerate(value):
                self.sites(schema["items"], item, steps + (index,), found)
        return found


def lint_path(steps: tuple) -> str:
    """Steps as the lint spells them: ``meterValue[0].timestamp``."""
    text = ""
    for step in steps:
        text += f"[{step}]" if isinstance(step, int) else ("." if text else "") + step
    return text


def _mutations(rng: random.Random, schema: dict, value, steps: tuple) -> list:
    """(kind, the new value at ``steps``, the path the lint names, its code) for one site."""
    kind, path = schema.get("type"), lint_path(steps)
    found = []
    if kind in JSON_TYPE_TEST:
        wrong = [other for other in OTHER_JSON_TYPES if not JSON_TYPE_TEST[kind](other)]
        found.append(("wrong type", rng.choice(wrong), path, mock.TYPE_CONSTRAINT_VIOLATION))
    if "enum" in schema:
        found.append(("bad enum", "NotInTheEnum", path, mock.PROPERTY_CONSTRAINT_VIOLATION))
    if "maxLength" in schema:
        too_long = "x" * (schema["maxLength"] + 1)
        found.append(("too long", too_long, path, mock.PROPERTY_CONSTRAINT_VIOLATION))
    if schema.get("format") == "date-time":
        bad = rng.choice(NOT_A_DATE_TIME)
        found.append(("bad date-time", bad, path, mock.PROPERTY_CONSTRAINT_VIOLATION))
    for bound, beyond in (("minimum", -1), ("maximum", 1)):
        if bound in schema:
            outside = int(schema[bound]) + beyond
            found.append(("out of range", outside, path, mock.PROPERTY_CONSTRAINT_VIOLATION))
    if kind == "array" and schema.get("minItems", 0) > 0:
        found.append(("too few items", [], path, mock.OCCURENCE_CONSTRAINT_VIOLATION))
    if kind == "array" and "maxItems" in schema and value:
        more = value + [value[0]] * (schema["maxItems"] + 1 - len(value))
        found.append(("too many items", more, path, mock.OCCURENCE_CONSTRAINT_VIOLATION))
    if kind == "object":
        found.extend(_object_mutations(schema, value, steps))
    return [(kind_, steps, new, path_, code) for kind_, new, path_, code in found]


def _object_mutations(schema: dict, value: dict, steps: tuple) -> list:
    found = []
    for name in schema.get("required", ()):
        dropped = {key: item for key, item in value.items() if key != name}
        found.append(("missing required", dropped, lint_path(steps + (name,)),
                      mock.OCCURENCE_CONSTRAINT_VIOLATION))  # fmt: skip
    extra = dict(value, notInTheSchema=1)
    if schema.get("additionalProperties", True) is False:
        where = lint_path(steps + ("notInTheSchema",))
        found.append(("extra field", extra, where, mock.FORMATION_VIOLATION))
    else:
        found.append(("extra field in an open object", extra, None, None))
    return found


def _replace(payload, steps: tuple, new):
    """A copy of ``payload`` with ``new`` at ``steps``."""
    if not steps:
        return new
    payload = copy.deepcopy(payload)
    target = payload
    for step in steps[:-1]:
        target = target[step]
    target[steps[-1]] = new
    return payload


def _without_refs(schema, definitions: dict, seen: tuple = ()):
    """The schema with each ``{"$ref": "#/definitions/X"}`` replaced by X itself (Draft 4 ignores
    a $ref's siblings), and no definitions left: the same verdicts, without jsonschema's lookup
    of each reference on every validation (a quarter of this file's CPU).  No definition of the
    2.0.1 schemas refers to itself (the assert would say so)."""
    if isinstance(schema, list):
        return [_without_refs(item, definitions, seen) for item in schema]
    if not isinstance(schema, dict):
        return schema
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        assert schema["$ref"] == "#/definitions/" + name and name not in seen, schema
        return _without_refs(definitions[name], definitions, seen + (name,))
    inlined = {}
    for key, value in schema.items():
        if key in ("properties", "patternProperties"):
            inlined[key] = {field: _without_refs(rule, definitions, seen)
                            for field, rule in value.items()}
        elif key not in ("definitions", "enum", "required", "default"):
            inlined[key] = _without_refs(value, definitions, seen)
        elif key != "definitions":
            inlined[key] = value
    return inlined


def _verdicts(rules: mock.Object, validator, payload) -> tuple:
    """The lint's verdict, its problems, and the oracle's first error (None: valid by the schema;
    the walk stops at the first error, most of the cost of a broken payload's check)."""
    problems = [(problem.path, problem.code) for problem in mock.lint_payload(rules, payload)]
    return rules.valid(payload), problems, next(validator.iter_errors(payload), None)


PAYLOADS_PER_ACTION = 12
MUTATIONS_PER_PAYLOAD = 12
MUTATION_KINDS = {
    "wrong type", "bad enum", "too long", "bad date-time", "out of range", "too few items",
    "too many items", "missing required", "extra field", "extra field in an open object",
}  # fmt: skip


def _mutated(builder: Builder, root: dict, payload) -> list:
    """Up to MUTATIONS_PER_PAYLOAD of the payload's one-place breaks, at random."""
    mutations = [
        mutation
        for steps, schema, value in builder.sites(root, payload, (), [])
        for mutation in _mutations(builder.rng, schema, value, steps)
    ]
    return builder.rng.sample(mutations, min(MUTATIONS_PER_PAYLOAD, len(mutations)))


@pytest.mark.parametrize("table, action", CASES, ids=[f"{t[5:]}-{a}" for t, a in CASES])
def test_the_lint_agrees_with_the_official_schema(table, action):
    root = _schema(table, action)
    validator = jsonschema.Draft4Validator(
        _without_refs(root, root.get("definitions", {})), format_checker=jsonschema.FormatChecker()
    )
    rules = mock.Object(getattr(mock, table)[action])
    builder = Builder(root, random.Random(f"{table} {action}"))
    for _ in range(PAYLOADS_PER_ACTION):
        payload = builder.value(root)
        assert _verdicts(rules, validator, payload) == (True, [], None), payload
        for kind, steps, new, path, code in _mutated(builder, root, payload):
            broken = _replace(payload, steps, new)
            valid, problems, oracle = _verdicts(rules, validator, broken)
            if code is None:  # allowed after all: an open object's extra field
                assert (valid, problems, oracle) == (True, [], None), (kind, broken)
            else:
                assert oracle is not None and not valid, (kind, broken)
                assert problems == [(path, code)], (kind, broken)


def test_the_mutations_reach_every_kind_of_rule():
    """The generated payloads break every kind of rule somewhere (the test above samples them)."""
    kinds = set()
    for table, action in CASES:
        root = _schema(table, action)
        builder = Builder(root, random.Random(f"{table} {action}"))
        for _ in range(3):
            payload = builder.value(root)
            for steps, schema, value in builder.sites(root, payload, (), []):
                kinds.update(kind for kind, *_ in _mutations(builder.rng, schema, value, steps))
    assert kinds == MUTATION_KINDS


# ------------------------------------------------------ Over a real websocket, as a 2.0.1 station


@charger_test
async def test_a_201_stations_replies_are_linted_by_the_201_rules(start_server):
    server = start_server("--no-boot-data")
    station = await Charger.connect(server.url, "CS-1", subprotocols=("ocpp2.0.1",))
    server.wait_for(r"CS-1 \*\* connected from 127\.0\.0\.1:\d+ \(OCPP 2\.0\.1\)")
    replies = [
        {"status": "Accepted", "customData": {"vendorId": "ACME", "anything": [1, "goes"]}},
        {"status": "Hard", "statusInfo": {"reasonCode": "R" * 21, "customData": {"x": 1}}},
    ]
    for number, reply in enumerate(replies):
        server.type(f'raw [2,"r{number}","Reset",{{"type":"Immediate"}}]')
        call = await station.expect_call("Reset")
        await station.send_frame([3, call[1], reply])
        server.wait_for(r"CS-1 <- Reset\.conf .*" + reply["status"])
    server.wait_for(r"spec: Reset\.conf\.statusInfo\.customData\.vendorId is required")
    await station.close()
    output = server.settled_output()
    assert output.count("spec:") == 3, output  # none for the open customData's extra field
    assert 'spec: Reset.conf.status "Hard" is not allowed (one of Accepted, Rejected, Sch' in output
    assert "spec: Reset.conf.statusInfo.reasonCode is 21 characters long, the limit is 20" in output
    assert "spec: Reset.conf.statusInfo.customData.vendorId is required but missing" in output


def test_the_new_rules_say_what_is_wrong():
    needs = mock.Object(mock.V201_CHARGER_REQUESTS["NotifyEVChargingNeeds"])
    payload = {
        "evseId": 1,
        "chargingNeeds": {
            "requestedEnergyTransfer": "DC",
            "dcChargingParameters": {"evMaxCurrent": 100, "evMaxVoltage": 400, "bulkSoC": 101},
        },
    }
    assert [str(problem) for problem in mock.lint_payload(needs, payload)] == [
        "chargingNeeds.dcChargingParameters.bulkSoC is 101, allowed: 0 to 100"
    ]
    report = mock.Object(mock.V201_SERVER_REQUESTS["GetReport"])
    payload = {"requestId": 1, "componentCriteria": ["Active"] * 5}
    assert [str(problem) for problem in mock.lint_payload(report, payload)] == [
        "componentCriteria has 5 elements, the limit is 4"
    ]
    data = mock.Object(mock.V201_CHARGER_REQUESTS["DataTransfer"])
    assert mock.lint_payload(data, {"vendorId": "ACME", "data": {"any": ["JSON", 1, None]}}) == []
    assert needs.fields["chargingNeeds"].describe() == "object"
    assert report.fields["componentCriteria"].describe().startswith("array (up to 4) of one of Act")


@charger_test
async def test_strict_answers_a_201_stations_off_spec_calls_with_the_201_codes(start_server):
    server = start_server("--no-boot-data", "--strict")
    station = await Charger.connect(server.url, "CS-1", subprotocols=("ocpp2.0.1",))
    open_data = {"vendorId": "ACME", "anything": [1, "goes"]}
    station_info = {"model": "M", "vendorName": "V", "customData": open_data}
    boot = await station.call("BootNotification", {"reason": "PowerUp"})
    assert boot[2:4] == [
        "OccurrenceConstraintViolation",
        "BootNotification: chargingStation is required but missing",
    ]
    boot = await station.call(
        "BootNotification", {"reason": "PowerUp", "chargingStation": station_info}
    )
    assert boot[0] == 3 and boot[2]["status"] == "Accepted"
    needs = {"requestedEnergyTransfer": "DC", "dcChargingParameters": {
        "evMaxCurrent": 1, "evMaxVoltage": 1, "bulkSoC": 101}}  # fmt: skip
    report = {"requestId": 1, "generatedAt": NOW, "seqNo": 0, "reportData": [{
        "component": {"name": "C"}, "variable": {"name": "V"},
        "variableAttribute": [{"value": "1"}] * 5}]}  # fmt: skip
    calls = [
        ("NotifyEVChargingNeeds", {"evseId": 1, "chargingNeeds": needs}),
        ("NotifyReport", report),
        ("Heartbeat", {"extra": 1}),
        ("Heartbeat", {"customData": {"vendorId": 7}}),
    ]
    answers = [(await station.call(action, payload))[2] for action, payload in calls]
    await station.close()
    assert answers == [
        "PropertyConstraintViolation",
        "OccurrenceConstraintViolation",
        "FormatViolation",
        "TypeConstraintViolation",
    ]
