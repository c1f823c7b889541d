"""The demo charger speaking OCPP 2.0.1 (``--ocpp 2.0.1``), against a small 2.0.1 CSMS written
here: every frame it sends is valid by the official 2.0.1 schemas (the ``ocpp`` package's
``v201/schemas``), and it answers all 40 CSMS-initiated messages."""

import asyncio
import json
import subprocess
import sys
import uuid

import pytest
import websockets

import ocpp_mock_server as mock
from conftest import (
    DEMO_CHARGER,
    SCENARIOS,
    InProcessDemo,
    ServerProcess,
    assert_v201_valid,
    read_transcript,
    run_scenario,
)

_validators: dict = {}
NOW = "2026-12-03T12:00:00.000Z"
PEM = "-----BEGIN CERTIFICATE-----\nMIIBdemo\n-----END CERTIFICATE-----\n"
HASH = {
    "hashAlgorithm": "SHA256",
    "issuerNameHash": "00" * 32,
    "issuerKeyHash": "11" * 32,
    "serialNumber": "01",
}
PROFILE = {
    "id": 7,
    "stackLevel": 0,
    "chargingProfilePurpose": "TxDefaultProfile",
    "chargingProfileKind": "Absolute",
    "chargingSchedule": [
        {
            "id": 1,
            "startSchedule": NOW,
            "chargingRateUnit": "A",
            "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 16.0}],
        }
    ],
}
HEARTBEAT_VARIABLE = {
    "component": {"name": "OCPPCommCtrlr"},
    "variable": {"name": "HeartbeatInterval"},
}




# Every CSMS-initiated message of OCPP 2.0.1 (blocks A to P, and DataTransfer), in an order a
# session can take them: what needs a transaction comes while one runs; Reset comes last.
CSMS_MESSAGES = [
    ("GetBaseReport", {"requestId": 1, "reportBase": "FullInventory"}),
    (
        "GetReport",
        {"requestId": 2, "componentVariable": [{"component": {"name": "SecurityCtrlr"}}]},
    ),
    (
        "GetVariables",
        {
            "getVariableData": [
                HEARTBEAT_VARIABLE,
                {"component": {"name": "OCPPCommCtrlr"}, "variable": {"name": "NoSuchVariable"}},
                {"component": {"name": "NoSuchCtrlr"}, "variable": {"name": "Enabled"}},
            ]
        },
    ),
    (
        "SetVariables",
        {
            "setVariableData": [
                dict(HEARTBEAT_VARIABLE, attributeValue="30"),
                {
                    "attributeValue": "3",
                    "component": {"name": "SecurityCtrlr"},
                    "variable": {"name": "SecurityProfile"},
                },
            ]
        },
    ),
    ("GetVariables", {"getVariableData": [HEARTBEAT_VARIABLE]}),
    (
        "SetNetworkProfile",
        {
            "configurationSlot": 1,
            "connectionData": {
                "ocppVersion": "OCPP20",
                "ocppTransport": "JSON",
                "ocppCsmsUrl": "ws://127.0.0.1:1/",
                "messageTimeout": 30,
                "securityProfile": 1,
                "ocppInterface": "Wired0",
            },
        },
    ),
    ("ClearCache", {}),
    (
        "SendLocalList",
        {
            "versionNumber": 4,
            "updateType": "Full",
            "localAuthorizationList": [
                {
                    "idToken": {"idToken": "AA11", "type": "ISO14443"},
                    "idTokenInfo": {"status": "Accepted"},
                }
            ],
        },
    ),
    ("GetLocalListVersion", {}),
    ("GetTransactionStatus", {}),
    ("ChangeAvailability", {"operationalStatus": "Inoperative", "evse": {"id": 1}}),
    ("ChangeAvailability", {"operationalStatus": "Operative"}),
    (
        "ReserveNow",
        {
            "id": 3,
            "expiryDateTime": NOW,
            "idToken": {"idToken": "AA11", "type": "ISO14443"},
            "evseId": 1,
        },
    ),
    ("CancelReservation", {"reservationId": 3}),
    ("UnlockConnector", {"evseId": 1, "connectorId": 1}),
    ("SetChargingProfile", {"evseId": 1, "chargingProfile": PROFILE}),
    ("GetChargingProfiles", {"requestId": 5, "chargingProfile": {"chargingProfileId": [7]}}),
    ("ClearChargingProfile", {"chargingProfileId": 7}),
    ("GetCompositeSchedule", {"duration": 3600, "evseId": 1}),
    (
        "UpdateFirmware",
        {
            "requestId": 6,
            "firmware": {"location": "http://127.0.0.1:1/fw.bin", "retrieveDateTime": NOW},
        },
    ),
    (
        "PublishFirmware",
        {"location": "http://127.0.0.1:1/fw.bin", "checksum": "0" * 32, "requestId": 7},
    ),
    ("UnpublishFirmware", {"checksum": "0" * 32}),
    ("CertificateSigned", {"certificateChain": PEM}),
    ("InstallCertificate", {"certificateType": "CSMSRootCertificate", "certificate": PEM}),
    ("GetInstalledCertificateIds", {}),
    ("GetInstalledCertificateIds", {"certificateType": ["V2GRootCertificate"]}),
    ("DeleteCertificate", {"certificateHashData": HASH}),
    (
        "GetLog",
        {
            "logType": "DiagnosticsLog",
            "requestId": 8,
            "log": {"remoteLocation": "http://127.0.0.1:1/upload"},
        },
    ),
    (
        "SetVariableMonitoring",
        {
            "setMonitoringData": [
                dict(HEARTBEAT_VARIABLE, value=10, type="UpperThreshold", severity=5)
            ]
        },
    ),
    ("GetMonitoringReport", {"requestId": 9}),
    ("SetMonitoringBase", {"monitoringBase": "All"}),
    ("SetMonitoringLevel", {"severity": 5}),
    ("ClearVariableMonitoring", {"id": [1, 99]}),
    (
        "CustomerInformation",
        {"requestId": 10, "report": True, "clear": False, "customerIdentifier": "someone"},
    ),
    (
        "SetDisplayMessage",
        {
            "message": {
                "id": 4,
                "priority": "NormalCycle",
                "message": {"format": "UTF8", "content": "Hello"},
            }
        },
    ),
    ("GetDisplayMessages", {"requestId": 11}),
    ("ClearDisplayMessage", {"id": 4}),
    ("DataTransfer", {"vendorId": "org.example", "messageId": "hello", "data": "x"}),
    ("TriggerMessage", {"requestedMessage": "Heartbeat"}),
    (
        "TriggerMessage",
        {"requestedMessage": "StatusNotification", "evse": {"id": 1, "connectorId": 1}},
    ),
    ("TriggerMessage", {"requestedMessage": "MeterValues"}),
    ("TriggerMessage", {"requestedMessage": "BootNotification"}),
    ("TriggerMessage", {"requestedMessage": "SignChargingStationCertificate"}),
    ("TriggerMessage", {"requestedMessage": "FirmwareStatusNotification"}),
    (
        "RequestStartTransaction",
        {"idToken": {"idToken": "AA11", "type": "ISO14443"}, "remoteStartId": 12},
    ),
    # ... while the transaction runs (the CSMS waits for its Started event first):
    (
        "RequestStartTransaction",
        {"idToken": {"idToken": "AA11", "type": "ISO14443"}, "remoteStartId": 13},
    ),
    ("TriggerMessage", {"requestedMessage": "TransactionEvent"}),
    ("GetTransactionStatus", {"transactionId": "RUNNING"}),
    ("CostUpdated", {"totalCost": 1.25, "transactionId": "RUNNING"}),
    ("RequestStopTransaction", {"transactionId": "RUNNING"}),
    ("Reset", {"type": "Immediate"}),
]
ALL_CSMS_ACTIONS = {
    "GetBaseReport",
    "GetReport",
    "GetVariables",
    "SetVariables",
    "SetNetworkProfile",
    "Reset",
    "ClearCache",
    "SendLocalList",
    "GetLocalListVersion",
    "GetTransactionStatus",
    "RequestStartTransaction",
    "RequestStopTransaction",
    "TriggerMessage",
    "UnlockConnector",
    "ChangeAvailability",
    "ReserveNow",
    "CancelReservation",
    "CostUpdated",
    "SetChargingProfile",
    "GetChargingProfiles",
    "ClearChargingProfile",
    "GetCompositeSchedule",
    "UpdateFirmware",
    "PublishFirmware",
    "UnpublishFirmware",
    "CertificateSigned",
    "InstallCertificate",
    "DeleteCertificate",
    "GetInstalledCertificateIds",
    "GetLog",
    "GetMonitoringReport",
    "SetMonitoringBase",
    "SetMonitoringLevel",
    "SetVariableMonitoring",
    "ClearVariableMonitoring",
    "CustomerInformation",
    "SetDisplayMessage",
    "GetDisplayMessages",
    "ClearDisplayMessage",
    "DataTransfer",
}


class Csms201:
    """A small OCPP 2.0.1 CSMS: it validates every frame of the charging station by the official
    schemas, answers its CALLs schema-valid, and sends CALLs of its own."""

    def __init__(self, boot_statuses=("Accepted",), boot_interval=1, boot_delay=0.0):
        self.calls: list = []  # (connection number, action, payload) of every CALL received
        self.boot_statuses = list(boot_statuses)
        self.boot_interval, self.boot_delay = boot_interval, boot_delay
        self.connections = 0
        self.offered: list = []  # the Sec-WebSocket-Protocol header of each connection
        self.websocket = None
        self.pending: dict = {}
        self.arrived = None  # an asyncio.Condition, made in the loop (Python 3.9 needs that)

    async def serve(self, websocket, *_):
        self.connections += 1
        self.websocket = websocket
        headers = getattr(websocket, "request", None)
        headers = headers.headers if headers is not None else websocket.request_headers
        self.offered.append(headers.get("Sec-WebSocket-Protocol"))
        try:
            async for text in websocket:
                await self.receive(websocket, json.loads(text))
        except websockets.ConnectionClosed:
            pass

    async def receive(self, websocket, message):
        if message[0] == 2:
            _, message_id, action, payload = message
            assert_v201_valid(f"{action}Request", payload)
            async with self.arrived:
                self.calls.append((self.connections, action, payload))
                self.arrived.notify_all()
            reply = await self.answer(action, payload)
            assert_v201_valid(f"{action}Response", reply)
            await websocket.send(json.dumps([3, message_id, reply]))
        else:
            self.pending.pop(message[1]).set_result(message[2] if message[0] == 3 else message)

    async def answer(self, action, payload):
        if action == "BootNotification":
            await asyncio.sleep(self.boot_delay)
            status = (
                self.boot_statuses.pop(0) if len(self.boot_statuses) > 1 else self.boot_statuses[0]
            )
            return {"currentTime": NOW, "interval": self.boot_interval, "status": status}
        accepted = {"idTokenInfo": {"status": "Accepted"}}
        return {
            "Heartbeat": {"currentTime": NOW},
            "Authorize": accepted,
            "TransactionEvent": accepted if "idToken" in payload else {},
            "SignCertificate": {"status": "Accepted"},
        }.get(action, {})

    async def call(self, action, payload, raw=False):
        """Send a CALL; its CALLRESULT's payload, checked by the schema (``raw``: a CALL that is
        not valid, and the reply, whatever it is)."""
        if not raw:
            assert_v201_valid(f"{action}Request", payload)
        message_id = str(uuid.uuid4())
        reply = asyncio.get_running_loop().create_future()
        self.pending[message_id] = reply
        await self.websocket.send(json.dumps([2, message_id, action, payload]))
        result = await asyncio.wait_for(reply, 5)
        if not raw:  # it answers every CSMS message with a schema-valid CALLRESULT
            assert_v201_valid(f"{action}Response", result)
        return result

    async def wait_for(self, action, count=1, timeout=10.0, connection=None, **fields):
        """The ``count``-th CALL of ``action`` whose top-level fields have these values (on the
        ``connection``-th connection, or any)."""

        def found():
            matching = [
                payload
                for number, name, payload in self.calls
                if name == action
                and connection in (None, number)
                and all(payload.get(key) == value for key, value in fields.items())
            ]
            return [matching[count - 1]] if len(matching) >= count else None

        async with self.arrived:
            await asyncio.wait_for(self.arrived.wait_for(found), timeout)
            return found()[0]  # in a list: an empty payload is falsy

    def actions(self):
        return [action for _, action, _ in self.calls]


async def run_demo(csms, *charger_args, until=None):
    """The demo charger against ``csms``; ``until(csms)`` drives it; its output."""
    csms.arrived = asyncio.Condition()
    async with websockets.serve(csms.serve, "127.0.0.1", 0, subprotocols=["ocpp2.0.1"]) as server:
        port = server.sockets[0].getsockname()[1]
        charger = InProcessDemo(
            f"ws://127.0.0.1:{port}/CP-201", "--ocpp", "2.0.1", "--meter-interval", "0.2",
            *charger_args,
        )
        try:
            await until(csms)
        finally:
            await charger.stop_soon()
    return charger.stdout


async def send_every_csms_message(csms):
    await csms.wait_for("StatusNotification", connectorStatus="Available")
    replies = {}
    for action, payload in CSMS_MESSAGES:
        if payload.get("transactionId") == "RUNNING":
            payload = dict(payload, transactionId=replies["running"])
        reply = await csms.call(action, payload)
        replies.setdefault(action, []).append(reply)
        if action == "RequestStartTransaction" and "running" not in replies:
            started = await csms.wait_for("TransactionEvent", eventType="Started")
            replies["running"] = started["transactionInfo"]["transactionId"]
            await csms.wait_for("TransactionEvent", eventType="Updated")
    await csms.wait_for("TransactionEvent", eventType="Ended")
    await csms.wait_for("BootNotification", reason="RemoteReset")
    await csms.wait_for("StatusNotification", connection=2)
    csms.replies = replies


@pytest.mark.slow(1)
def test_the_demo_charger_answers_all_40_csms_messages_and_every_frame_is_schema_valid():
    assert {action for action, _ in CSMS_MESSAGES} == ALL_CSMS_ACTIONS
    assert len(ALL_CSMS_ACTIONS) == 40
    csms = Csms201()
    output = asyncio.run(run_demo(csms, until=send_every_csms_message))
    assert "Traceback" not in output, output
    assert csms.offered[0] == "ocpp2.0.1"  # only 2.0.1, when asked for it
    replies = csms.replies
    boot = csms.calls[0]
    assert boot[1] == "BootNotification" and boot[2]["reason"] == "PowerUp", csms.calls[0]
    assert boot[2]["chargingStation"] == {
        "model": "DemoCharger",
        "vendorName": "DemoVendor",
        "firmwareVersion": "1.0.0",
        "serialNumber": "demo-001",
    }
    # the device model
    got = replies["GetVariables"][0]["getVariableResult"]
    assert [result["attributeStatus"] for result in got] == [
        "Accepted",
        "UnknownVariable",
        "UnknownComponent",
    ]
    set_results = replies["SetVariables"][0]["setVariableResult"]
    assert [result["attributeStatus"] for result in set_results] == ["Accepted", "Rejected"]
    reports = [payload for _, action, payload in csms.calls if action == "NotifyReport"]
    full = [payload for payload in reports if payload["requestId"] == 1]
    assert [part["seqNo"] for part in full] == list(range(len(full))) and len(full) > 1
    assert [part["tbc"] for part in full] == [True] * (len(full) - 1) + [False]
    variables = {
        (entry["component"]["name"], entry["variable"]["name"]): entry["variableAttribute"][0][
            "value"
        ]
        for part in full
        for entry in part["reportData"]
    }
    assert ("OCPPCommCtrlr", "HeartbeatInterval") in variables
    assert replies["GetVariables"][1]["getVariableResult"][0]["attributeValue"] == "30"  # set
    assert variables[("SecurityCtrlr", "SecurityProfile")] == "1"
    assert {
        entry["component"]["name"]
        for part in reports
        if part["requestId"] == 2
        for entry in part["reportData"]
    } == {"SecurityCtrlr"}
    # follow-ups
    for action in (
        "NotifyMonitoringReport",
        "NotifyCustomerInformation",
        "NotifyDisplayMessages",
        "ReportChargingProfiles",
        "SignCertificate",
        "MeterValues",
        "Heartbeat",
    ):
        assert action in csms.actions(), action
    statuses = [
        payload["status"]
        for _, action, payload in csms.calls
        if action == "FirmwareStatusNotification"
    ]
    assert sorted(statuses) == ["DownloadFailed", "Downloading", "Idle"]
    assert [
        payload["status"] for _, action, payload in csms.calls if action == "LogStatusNotification"
    ] == ["Uploading", "UploadFailure"]
    assert replies["RequestStartTransaction"][1] == {
        "status": "Accepted",
        "transactionId": replies["running"],
    }
    assert replies["GetTransactionStatus"][1]["ongoingIndicator"] is True
    assert replies["RequestStopTransaction"] == [{"status": "Accepted"}]
    assert replies["Reset"] == [{"status": "Accepted"}]


def transaction_events(csms):
    return [payload for _, action, payload in csms.calls if action == "TransactionEvent"]


async def one_transaction(csms):
    await csms.wait_for("StatusNotification", connectorStatus="Available")
    assert (
        await csms.call(
            "RequestStartTransaction",
            {"idToken": {"idToken": "AA11", "type": "ISO14443"}, "remoteStartId": 1},
        )
    )["status"] == "Accepted"
    started = await csms.wait_for("TransactionEvent", eventType="Started")
    await csms.wait_for("TransactionEvent", count=3, eventType="Updated")
    transaction_id = started["transactionInfo"]["transactionId"]
    assert await csms.call("RequestStopTransaction", {"transactionId": transaction_id}) == {
        "status": "Accepted"
    }
    await csms.wait_for("TransactionEvent", eventType="Ended")
    await csms.wait_for("StatusNotification", count=2, connectorStatus="Available")
    await csms.wait_for("Heartbeat")


@pytest.mark.slow(1)
def test_a_2_0_1_session_authorizes_starts_meters_stops_and_heartbeats():
    csms = Csms201()
    asyncio.run(run_demo(csms, until=one_transaction))
    assert csms.actions()[:3] == ["BootNotification", "StatusNotification", "Authorize"]
    authorize = csms.calls[2][2]
    assert authorize == {"idToken": {"idToken": "AA11", "type": "ISO14443"}}
    statuses = [
        (payload["connectorStatus"], payload["evseId"], payload["connectorId"])
        for _, action, payload in csms.calls
        if action == "StatusNotification"
    ]
    assert statuses == [("Available", 1, 1), ("Occupied", 1, 1), ("Available", 1, 1)]
    events = transaction_events(csms)
    started, ended = events[0], events[-1]
    assert [event["seqNo"] for event in events] == list(range(len(events)))
    assert {event["transactionInfo"]["transactionId"] for event in events} == {
        started["transactionInfo"]["transactionId"]
    }
    assert started["triggerReason"] == "RemoteStart" and started["idToken"]["idToken"] == "AA11"
    assert started["transactionInfo"]["remoteStartId"] == 1
    assert started["evse"] == {"id": 1, "connectorId": 1}
    updated = events[1:-1]
    assert {event["eventType"] for event in updated} == {"Updated"}
    assert {event["triggerReason"] for event in updated} == {"MeterValuePeriodic"}
    energy = [event["meterValue"][0]["sampledValue"][0] for event in events]
    assert {sample["measurand"] for sample in energy} == {"Energy.Active.Import.Register"}
    assert [sample["value"] for sample in energy] == sorted(sample["value"] for sample in energy)
    assert energy[-1]["value"] > energy[0]["value"]
    assert ended["eventType"] == "Ended" and ended["triggerReason"] == "RemoteStop"
    assert ended["transactionInfo"]["stoppedReason"] == "Remote"
    assert not any(event.get("offline") for event in events)


@pytest.mark.slow(2)
def test_a_pending_boot_waits_the_interval_and_sends_nothing_else_until_accepted():
    csms = Csms201(boot_statuses=("Pending", "Rejected", "Accepted"), boot_interval=1)
    loop_times = []

    async def until(csms):
        await csms.wait_for("BootNotification", count=1)
        loop_times.append(asyncio.get_running_loop().time())
        await csms.wait_for("BootNotification", count=3)
        loop_times.append(asyncio.get_running_loop().time())
        await csms.wait_for("StatusNotification")

    asyncio.run(run_demo(csms, until=until))
    assert csms.actions()[:4] == ["BootNotification"] * 3 + ["StatusNotification"]
    assert loop_times[1] - loop_times[0] >= 1.8  # two intervals of 1 s


async def away_and_back(csms):
    await csms.wait_for("StatusNotification", connectorStatus="Available")
    await csms.call(
        "RequestStartTransaction",
        {"idToken": {"idToken": "AA11", "type": "ISO14443"}, "remoteStartId": 1},
    )
    await csms.wait_for("TransactionEvent", eventType="Updated")
    csms.boot_delay = 0.5  # back, but slow to answer the boot: the meter (0.2 s) goes on
    await csms.websocket.close()
    await csms.wait_for("BootNotification", count=2)
    await csms.wait_for("TransactionEvent", eventType="Updated", offline=True)
    started = await csms.wait_for("TransactionEvent", eventType="Started")
    await csms.call(
        "RequestStopTransaction", {"transactionId": started["transactionInfo"]["transactionId"]}
    )
    await csms.wait_for("TransactionEvent", eventType="Ended")


@pytest.mark.slow(1.5)
def test_transaction_events_made_while_the_csms_is_away_are_sent_later_marked_offline():
    csms = Csms201()
    output = asyncio.run(run_demo(csms, "--reconnect", until=away_and_back))
    assert "server away: TransactionEvent kept to send later" in output, output
    events = transaction_events(csms)
    seq_nos = [event["seqNo"] for event in events]
    assert sorted(set(seq_nos)) == list(range(max(seq_nos) + 1)), seq_nos  # none lost
    assert seq_nos == sorted(seq_nos)  # in order
    offline = [event for event in events if event.get("offline")]
    assert offline and all(event["eventType"] == "Updated" for event in offline)
    assert events[-1]["eventType"] == "Ended" and "offline" not in events[-1]


@pytest.mark.parametrize(
    "flag, says",
    [
        (("--misbehave", "bad-transition"), "--misbehave bad-transition breaks a rule of OCPP 1.6"),
        (("--flexicharge",), "--flexicharge is a dialect of OCPP 1.6"),
    ],
)
def test_1_6_only_switches_are_refused_with_one_line_under_ocpp_2_0_1(flag, says):
    result = subprocess.run(
        [sys.executable, str(DEMO_CHARGER), "ws://127.0.0.1:9/CP-1", "--ocpp", "2.0.1", *flag],
        capture_output=True,
        text=True,
        timeout=10,
    )
    assert result.returncode == 2
    assert says in result.stderr and "Traceback" not in result.stderr


async def unreadable_then_readable(csms):
    await csms.wait_for("StatusNotification", connectorStatus="Available")
    csms.error = await csms.call("GetVariables", {"getVariableData": [5]}, raw=True)
    csms.unknown = await csms.call("NoSuchAction", {}, raw=True)
    csms.after = await csms.call("GetVariables", {"getVariableData": [HEARTBEAT_VARIABLE]})


def test_a_payload_it_cannot_read_gets_a_format_violation_and_it_goes_on():
    csms = Csms201()
    output = asyncio.run(run_demo(csms, until=unreadable_then_readable))
    assert csms.error[0] == 4 and csms.error[2] == "FormatViolation", csms.error
    assert csms.unknown[0] == 4 and csms.unknown[2] == "NotImplemented", csms.unknown
    assert csms.after["getVariableResult"][0]["attributeStatus"] == "Accepted"
    assert "could not read GetVariables" in output and "Traceback" not in output


async def heartbeat_interval_set(csms):
    await csms.wait_for("StatusNotification", connectorStatus="Available")
    read = {"getVariableData": [HEARTBEAT_VARIABLE]}
    csms.before = (await csms.call("GetVariables", read))["getVariableResult"][0]
    await csms.call(
        "SetVariables", {"setVariableData": [dict(HEARTBEAT_VARIABLE, attributeValue="1")]}
    )
    await csms.wait_for("Heartbeat", count=2, timeout=5)


@pytest.mark.slow(2)
def test_the_heartbeat_interval_is_the_boots_until_set_variables_changes_it():
    csms = Csms201(boot_interval=300)
    asyncio.run(run_demo(csms, until=heartbeat_interval_set))
    assert csms.before["attributeValue"] == "300"


# -- against the real server (needs its 2.0.1 tables: issue 21's other items)


serves_201 = pytest.mark.skipif(
    not (
        "TransactionEvent" in mock.V201_CHARGER_ACTION_HANDLERS
        and "RequestStartTransaction" in mock.V201_SERVER_ACTION_DEFAULTS
    ),
    reason="the server does not serve OCPP 2.0.1 stations yet",
)


def check_every_frame_is_valid_201(records, charger_id):
    """Every CALL and CALLRESULT of the charger's transcript, either way, by the 2.0.1 schemas;
    no CALLERROR either way. The actions of the CALLs, in order."""
    frames = [
        (record["dir"], json.loads(record["frame"]))
        for record in records
        if record["charger"] == charger_id and "frame" in record
    ]
    actions, calls = [], {}
    for direction, frame in frames:
        assert frame[0] in (2, 3), frame
        if frame[0] == 2:
            assert_v201_valid(f"{frame[2]}Request", frame[3])
            calls[(direction, frame[1])] = frame[2]
            actions.append((direction, frame[2], frame[3]))
        else:
            asker = "out" if direction == "in" else "in"
            assert_v201_valid(f"{calls[(asker, frame[1])]}Response", frame[2])
    return actions


@serves_201
@pytest.mark.slow(1)
def test_a_whole_2_0_1_session_of_the_demo_charger_against_the_server(tmp_path):
    log = tmp_path / "transcript.jsonl"
    (tmp_path / "files" / "CP-201").mkdir(parents=True)
    (tmp_path / "files" / "CP-201" / "firmware.bin").write_bytes(b"demo firmware")
    server = ServerProcess("--log", str(log), "--files-dir", str(tmp_path / "files")).wait_ready()
    charger = subprocess.Popen(
        [
            sys.executable,
            "-W",
            "error::DeprecationWarning",
            str(DEMO_CHARGER),
            server.url + "/CP-201",
            "--ocpp",
            "2.0.1",
            "--once",
            "--meter-interval",
            "0.2",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        server.wait_for(r"CP-201 <- StatusNotification", timeout=15)
        for line in ("GetBaseReport", "GetLog", "UpdateFirmware", "startRemote"):
            server.type(line)
        server.wait_for(r"CP-201 <- LogStatusNotification .*Uploaded", timeout=10)
        server.wait_for(r"CP-201 <- FirmwareStatusNotification .*Downloaded\b", timeout=10)
        server.wait_for(r"CP-201 <- TransactionEvent .*Updated", timeout=10)
        server.type("stopRemote")
        output, _ = charger.communicate(timeout=20)
    finally:
        if charger.poll() is None:
            charger.kill()
            charger.communicate()
    assert charger.returncode == 0, output
    assert "Traceback" not in output and "transaction " in output, output
    server.wait_for(r"CP-201 \*\* disconnected")
    assert server.stop() == 0
    assert "Traceback" not in server.output()
    assert list((tmp_path / "files").rglob("demo-diagnostics.log")), server.output()
    actions = check_every_frame_is_valid_201(read_transcript(log), "CP-201")
    events = [
        payload["eventType"]
        for direction, action, payload in actions
        if action == "TransactionEvent"
    ]
    assert events[0] == "Started" and events[-1] == "Ended" and "Updated" in events, events
    assert ("in", "NotifyReport") in [(direction, action) for direction, action, _ in actions]


@serves_201
@pytest.mark.slow(1)
def test_the_2_0_1_session_scenario_passes_against_the_demo_charger():
    status, output = run_scenario(
        SCENARIOS / "session-201.txt",
        "--ocpp",
        "2.0.1",
        charger_args=("--ocpp", "2.0.1", "--meter-interval", "0.2"),
    )
    assert status == 0, output
    assert ">> scenario session-201.txt: PASS" in output, output
    assert "Traceback" not in output


async def inoperative_then_start(csms):
    await csms.wait_for("StatusNotification", connectorStatus="Available")
    inoperative = {"operationalStatus": "Inoperative"}
    assert await csms.call("ChangeAvailability", inoperative) == {"status": "Accepted"}
    await csms.wait_for("StatusNotification", connectorStatus="Unavailable")
    start = {"idToken": {"idToken": "AA11", "type": "ISO14443"}, "remoteStartId": 1}
    csms.refused = await csms.call("RequestStartTransaction", start)
    assert await csms.call("ChangeAvailability", {"operationalStatus": "Operative"}) == {
        "status": "Accepted"
    }
    await csms.wait_for("StatusNotification", count=2, connectorStatus="Available")
    csms.accepted = await csms.call("RequestStartTransaction", start)
    await csms.wait_for("TransactionEvent", eventType="Started")


def test_an_inoperative_connector_refuses_a_remote_start_until_it_is_operative_again():
    csms = Csms201()
    asyncio.run(run_demo(csms, until=inoperative_then_start))
    assert csms.refused == {"status": "Rejected"} and csms.accepted == {"status": "Accepted"}


async def until_suspended(csms):
    await csms.wait_for("StatusNotification", connectorStatus="Available")
    start = {"idToken": {"idToken": "AA11", "type": "ISO14443"}, "remoteStartId": 1}
    await csms.call("RequestStartTransaction", start)
    await csms.wait_for("TransactionEvent", count=2, eventType="Updated")


def test_a_full_battery_is_a_charging_state_change_to_suspended_ev():
    csms = Csms201()
    asyncio.run(run_demo(csms, "--soc", "99", until=until_suspended))
    first, second = [
        event for event in transaction_events(csms) if event["eventType"] == "Updated"
    ][:2]
    assert first["triggerReason"] == "ChargingStateChanged"
    assert first["transactionInfo"]["chargingState"] == "SuspendedEV"
    assert second["triggerReason"] == "MeterValuePeriodic"
    assert first["meterValue"][0]["sampledValue"][1]["value"] == 0  # no power drawn
