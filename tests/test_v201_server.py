"""OCPP 2.0.1 CSMS-initiated messages (issue 21, item 5): every one typed bare sends a payload valid
by the official 2.0.1 request schema (the ``ocpp`` package's v201/schemas, the oracle);
RequestStartTransaction / RequestStopTransaction are startRemote / stopRemote and the automation's
on a 2.0.1 station; a script waits for a TransactionEvent of one kind."""

import asyncio
import re
from types import SimpleNamespace

import pytest

import ocpp_mock_server as mock
from conftest import (
    SCHEMAS_201,
    Charger,
    InProcessServer,
    assert_v201_valid,
    charger_test,
    exit_status,
    http,
    http_port,
    run_scenario_in_process,
    without_blocking,
)

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


def test_the_table_has_every_csms_initiated_message():
    assert len(V201_SERVER_ACTIONS) == 40
    assert sorted(mock.V201_SERVER_ACTION_DEFAULTS) == sorted(V201_SERVER_ACTIONS)
    for action in V201_SERVER_ACTIONS:
        assert (SCHEMAS_201 / f"{action}Request.json").exists(), action


def _stand_in_system():
    """A CentralSystem's fields the defaults read, without a server."""
    return SimpleNamespace(
        options=mock.parse_settings(["--port", "0"]), next_request_id=7, next_remote_start_id=3,
        last_reservation_id=None, peek_reservation_id=lambda: 5, last_signed_chain={}, http=None,
        port=60003,
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
    for action in mock.V201_SERVER_ACTION_DEFAULTS:
        for on in (session, None):
            try:
                payload = mock.bare_payload(mock.OCPP201, action, system, on)
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
    server = InProcessServer("--script", str(script), "--no-boot-data")
    charger = await Charger.connect(server.url, "CP-F")
    await charger.boot(answer_boot_data=False)
    await charger.call("StatusNotification", _status(1, "Preparing"))
    await charger.call("StatusNotification", _status(1, "Charging"))
    assert await without_blocking(exit_status, server) == 1  # it ends by itself
    server.wait_for(
        r"late\.txt:1 FAILED .*: expected StatusNotification status=Faulted x1 within 0\.5 s, 0 "
        r"arrived; 2 others, the latest with status=\"Charging\""
    )
    server.wait_for(r"scenario late\.txt: FAIL at line 1")
    server.stop()
    await charger.close()


# ------------------------------------------------------------------ A hand-written 2.0.1 station

NOW = "2026-12-03T12:00:00.000Z"
ACCEPTED = {"status": "Accepted"}


def _results(key: str, items_key: str, status_key: str, **extra):
    """A reply of one result per item of the request's ``items_key``, each Accepted."""
    return lambda payload: {key: [
        {status_key: "Accepted", "component": item["component"], "variable": item["variable"],
         **extra}
        for item in payload[items_key]
    ]}


# A schema-valid reply to each CSMS-initiated message; the others get {"status": "Accepted"}.
STATION_REPLIES = {
    "GetVariables": _results("getVariableResult", "getVariableData", "attributeStatus",
                             attributeValue="60"),
    "SetVariables": _results("setVariableResult", "setVariableData", "attributeStatus"),
    "SetVariableMonitoring": lambda payload: {"setMonitoringResult": [
        {"id": 7, "status": "Accepted", "type": item["type"], "severity": item["severity"],
         "component": item["component"], "variable": item["variable"]}
        for item in payload["setMonitoringData"]]},
    "ClearVariableMonitoring": lambda payload: {"clearMonitoringResult": [
        {"status": "Accepted", "id": monitor} for monitor in payload["id"]]},
    "GetLocalListVersion": lambda payload: {"versionNumber": 1},
    "GetTransactionStatus": lambda payload: {"messagesInQueue": False},
    "GetInstalledCertificateIds": lambda payload: {
        "status": "Accepted",
        "certificateHashDataChain": [{"certificateType": "CSMSRootCertificate",
                                      "certificateHashData": dict(INSTALLED_HASH)}]},
    "UnlockConnector": lambda payload: {"status": "Unlocked"},
    "UnpublishFirmware": lambda payload: {"status": "Unpublished"},
    "CostUpdated": lambda payload: {},
    "DataTransfer": lambda payload: {"status": "UnknownVendorId"},
}
INSTALLED_HASH = {"hashAlgorithm": "SHA256", "issuerNameHash": "ab" * 32,
                  "issuerKeyHash": "cd" * 32, "serialNumber": "0123"}


class Station:
    """A 2.0.1 charging station over a real websocket (subprotocol ocpp2.0.1): sends its CALLs and
    answers each CALL of the server schema-valid, after checking it by the oracle."""

    def __init__(self, charger: Charger):
        self.charger = charger
        self.received = []  # the server's CALLs, in order
        self.seq_no = 0

    @classmethod
    async def connect(cls, url: str, station_id: str = "CS-1") -> "Station":
        return cls(await Charger.connect(url, station_id, subprotocols=("ocpp2.0.1",)))

    async def boot(self):
        reply = await self.charger.call("BootNotification", {
            "chargingStation": {"model": "Hand-1", "vendorName": "Test"}, "reason": "PowerUp"})
        assert reply.payload["status"] == "Accepted", reply
        return reply

    async def answer_next(self, action: str = None, timeout: float = 5.0):
        """The server's next CALL (of ``action``, if given), checked by the oracle and answered."""
        call = await (self.charger.expect_call(action, timeout) if action
                      else self._any_call(timeout))
        assert_v201_valid(call.action + "Request", call.payload)
        reply = STATION_REPLIES.get(call.action, lambda payload: dict(ACCEPTED))(call.payload)
        assert_v201_valid(call.action + "Response", reply)
        await self.charger.answer(call, reply)
        self.received.append(call)
        return call

    async def _any_call(self, timeout: float):
        if self.charger.server_calls:
            return self.charger.server_calls.pop(0)
        frame = await self.charger.receive(timeout)
        assert frame.type_id == 2, f"expected a CALL from the server, got {frame!r}"
        return frame

    async def transaction_event(self, event_type: str, transaction_id: str, trigger: str,
                                **fields):
        payload = {"eventType": event_type, "timestamp": NOW, "triggerReason": trigger,
                   "seqNo": self.seq_no, "transactionInfo": {"transactionId": transaction_id},
                   **fields}
        self.seq_no += 1
        assert_v201_valid("TransactionEventRequest", payload)
        return await self.charger.call("TransactionEvent", payload)

    async def start_transaction(self, transaction_id: str, remote_start_id=None):
        fields = {"evse": {"id": 1, "connectorId": 1},
                  "idToken": {"idToken": "1", "type": "ISO14443"}}
        if remote_start_id is not None:
            fields["transactionInfo"] = {"transactionId": transaction_id,
                                         "remoteStartId": remote_start_id}
        trigger = "RemoteStart" if remote_start_id is not None else "Authorized"
        return await self.transaction_event("Started", transaction_id, trigger, **fields)

    async def end_transaction(self, transaction_id: str):
        return await self.transaction_event(
            "Ended", transaction_id, "RemoteStop",
            transactionInfo={"transactionId": transaction_id, "stoppedReason": "Remote"})

    async def close(self):
        await self.charger.close()


# --------------------------------------------------- End to end, over a real ocpp2.0.1 websocket

async def _booted_station(server, station_id: str = "CS-1") -> Station:
    station = await Station.connect(server.url, station_id)
    await station.boot()
    return station


@charger_test
async def test_every_command_typed_bare_reaches_a_2_0_1_station_valid(start_server):
    """The 40 CSMS-initiated messages, typed bare at the console, each arrive as a CALL valid by
    the official 2.0.1 schema (the station checks it); the ones that need an open transaction
    take the one open."""
    server = start_server("--no-boot-data")
    station = await _booted_station(server)
    await station.start_transaction("TX-A")
    for action in V201_SERVER_ACTIONS:
        server.type(action)
    for action in V201_SERVER_ACTIONS:
        call = await station.answer_next()
        assert call.action == action
    by_action = {call.action: call.payload for call in station.received}
    # Typed at once, queued behind each other: each has a requestId of its own.
    request_ids = [call.payload["requestId"] for call in station.received
                   if "requestId" in call.payload]
    assert len(request_ids) == 9 and len(set(request_ids)) == 9, request_ids
    assert by_action["RequestStopTransaction"] == {"transactionId": "TX-A"}
    assert by_action["CostUpdated"]["transactionId"] == "TX-A"
    assert by_action["RequestStartTransaction"]["idToken"] == {"idToken": "1", "type": "ISO14443"}
    assert by_action["SetNetworkProfile"]["connectionData"]["ocppCsmsUrl"] == server.url + "/"
    server.wait_for(r"CS-1 <- ClearDisplayMessage\.conf")
    server.wait_for(r"CS-1 <- DataTransfer\.conf")
    assert "spec:" not in server.settled_output(), server.output()
    await station.close()


@charger_test
async def test_every_action_posted_bare_to_the_api_reaches_a_2_0_1_station_valid(start_server):
    """POST /api/chargers/{id}/{Action} with an empty body sends the action's defaults, as typing
    it bare does; startRemote and stopRemote name the 2.0.1 actions there too."""
    server = start_server("--no-boot-data")
    port = http_port(server)
    station = await _booted_station(server)
    await station.start_transaction("TX-H")
    for action in (*V201_SERVER_ACTIONS, "startRemote", "stopRemote"):
        reply = asyncio.ensure_future(http(server, "POST", f"/api/chargers/CS-1/{action}", {},
                                           port=port))
        call = await station.answer_next()
        assert call.action == {"startRemote": "RequestStartTransaction",
                               "stopRemote": "RequestStopTransaction"}.get(action, action)
        answered = await reply
        assert answered.status == 200 and "result" in answered.json, answered
        assert answered.json["request"] == call.payload
    await station.close()


@charger_test
async def test_what_a_station_accepted_is_what_the_next_bare_commands_use(start_server):
    """The server remembers from a 2.0.1 station's replies: the reservation it made (for
    CancelReservation and the next ReserveNow), an accepted HeartbeatInterval (for the heartbeat
    check) and a triggered message (exempt from the timing checks once)."""
    server = start_server("--no-boot-data")
    station = await _booted_station(server)
    for line in ("ReserveNow", "CancelReservation", "ReserveNow", "TriggerMessage",
                 'SetVariables {"setVariableData":[{"component":{"name":"OCPPCommCtrlr"},'
                 '"variable":{"name":"HeartbeatInterval"},"attributeValue":"17"}]}'):
        server.type(line)
    first, cancel, second = [(await station.answer_next()).payload for _ in range(3)]
    assert (first["id"], cancel["reservationId"], second["id"]) == (1, 1, 2)
    await station.answer_next("TriggerMessage")
    await station.answer_next("SetVariables")
    server.wait_for(r"CS-1 <- SetVariables\.conf")
    history = server.call_in_loop(lambda: server.system.states["CS-1"].history)
    assert history.heartbeat_interval == 17
    assert "StatusNotification" in history.triggered
    await station.close()


@charger_test
async def test_a_station_s_listed_certificate_is_what_delete_certificate_sends(start_server):
    server = start_server("--no-boot-data")
    station = await _booted_station(server)
    server.type("GetInstalledCertificateIds")
    await station.answer_next("GetInstalledCertificateIds")
    server.wait_for(r"CS-1 <- GetInstalledCertificateIds\.conf")  # remembered once read
    server.type("DeleteCertificate")
    call = await station.answer_next("DeleteCertificate")
    assert call.payload == {"certificateHashData": INSTALLED_HASH}
    await station.close()


@charger_test
async def test_start_remote_and_stop_remote_on_a_2_0_1_station(start_server):
    """startRemote is RequestStartTransaction (--id-tag as an ISO14443 idToken, EVSE 1, a
    remoteStartId counter), stopRemote is RequestStopTransaction of the one open transaction."""
    server = start_server("--no-boot-data", "--id-tag", "CARD-7")
    station = await _booted_station(server)
    server.type("stopRemote")
    server.wait_for(r"no transaction is open on CS-1; give one: RequestStopTransaction "
                    r"transactionId=N")
    server.type("startRemote")
    first = await station.answer_next("RequestStartTransaction")
    assert first.payload == {"idToken": {"idToken": "CARD-7", "type": "ISO14443"},
                             "remoteStartId": 1, "evseId": 1}
    await station.start_transaction("TX-1", remote_start_id=1)
    server.type("stopRemote")
    stop = await station.answer_next("RequestStopTransaction")
    assert stop.payload == {"transactionId": "TX-1"}
    server.type("startRemote evseId=2")
    server.type("startRemote evseId=3")  # queued behind the one before: the next id
    second = await station.answer_next("RequestStartTransaction")
    assert second.payload["remoteStartId"] == 2 and second.payload["evseId"] == 2
    third = await station.answer_next("RequestStartTransaction")
    assert third.payload["remoteStartId"] == 3 and third.payload["evseId"] == 3
    await station.start_transaction("TX-2", remote_start_id=2)
    server.type("stopRemote")
    server.wait_for(r"CS-1 has 2 open transactions \(TX-1 on (EVSE 1 )?connector 1, TX-2 on "
                    r"(EVSE 1 )?connector 1\): say which, e.g. stopRemote transactionId=TX-2")
    server.type("stopRemote transactionId=TX-2")
    stop = await station.answer_next("RequestStopTransaction")
    assert stop.payload == {"transactionId": "TX-2"}
    await station.close()


@pytest.mark.slow(1)
@charger_test
async def test_auto_start_and_auto_stop_on_a_2_0_1_station(start_server):
    server = start_server("--no-boot-data", "--auto-start-after", "0", "--auto-stop-after", "0.3")
    station = await _booted_station(server)
    start = await station.answer_next("RequestStartTransaction")
    await station.start_transaction("TX-AUTO", remote_start_id=start.payload["remoteStartId"])
    stop = await station.answer_next("RequestStopTransaction")
    assert stop.payload == {"transactionId": "TX-AUTO"}
    await station.end_transaction("TX-AUTO")
    await station.charger.no_frame_within(0.5)  # once per connection: no second start
    await station.close()


@charger_test
async def test_a_script_waits_for_the_transaction_event_that_ends_it(tmp_path):
    script = tmp_path / "v201.txt"
    script.write_text(
        "startRemote\n"
        "wait TransactionEvent eventType=Ended\n"
        "expect transactionInfo.stoppedReason=Remote\n"
        "wait TransactionEvent eventType=Started\n"  # passed over by the wait before, still there
        "expect transactionInfo.transactionId=TX-S\n"
    )
    server = InProcessServer("--script", str(script), "--no-boot-data", "--ocpp", "2.0.1")
    station = await _booted_station(server)
    start = await station.answer_next("RequestStartTransaction")
    await station.start_transaction("TX-S", remote_start_id=start.payload["remoteStartId"])
    await station.transaction_event("Updated", "TX-S", "MeterValuePeriodic")
    await station.end_transaction("TX-S")
    assert await without_blocking(exit_status, server) == 0  # it ends by itself
    server.wait_for(r"scenario v201\.txt: PASS, 5 of 5 steps passed")
    server.stop()
    await station.close()


@pytest.mark.parametrize(
    "text, message",
    [
        ("wait StatusNotification stauts=Available\n",
         r"bad\.txt:1: StatusNotification has no field stauts \(did you mean status\?\)"),
        ("wait Reset.conf status=Accepted x2 extra\n", r"bad\.txt:1: usage: wait <Action>"),
        ("wait StartTransaction idTagInfo.statu=Accepted\n",
         r"bad\.txt:1: StartTransaction has no field idTagInfo\.statu"),
    ],
)
def test_a_wait_with_a_field_its_message_does_not_have_is_an_invalid_script(tmp_path, text,
                                                                             message):
    script = tmp_path / "bad.txt"
    script.write_text(text)
    status, output = run_scenario_in_process(script, start_charger=False, timeout=10)
    assert status == 2, output
    assert re.search(message, output), output
