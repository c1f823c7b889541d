"""OCPP 2.0.1 charging-station-initiated messages: every one answered, transactions the 2.0.1 way.

Every handler's reply is valid by the official 2.0.1 response schema (the `ocpp` package's
v201/schemas), off-spec payloads never break a handler, the authorization rules decide 2.0.1
idTokens, TransactionEvent Started/Updated/Ended is shown by `chargers`, the events, the API and
the charts as a 1.6 transaction is, several at once on several EVSEs, and a charge point built on
mobilityhouse `ocpp`'s v201 classes runs a whole session against the server.
"""

import asyncio
import json

import pytest

import ocpp_mock_server as mock
from conftest import (
    SCHEMAS_201,
    TIMEOUT,
    Charger,
    assert_v201_valid,
    assert_valid,
    charger_test,
    headless_browser,
    http,
    http_port,
    read_transcript,
    run,
    wait_in_browser,
)

SUBPROTOCOLS = ("ocpp2.0.1",)
NOW = "2026-12-03T14:00:00Z"

CHARGING_STATION = {
    "vendorName": "Test",
    "model": "Mock-201",
    "serialNumber": "SN-201",
    "firmwareVersion": "2.0.1-a",
}
COMPONENT = {"name": "EVSE"}
VARIABLE = {"name": "Power"}
SCHEDULE = {
    "id": 1,
    "chargingRateUnit": "W",
    "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 11000.0}],
}

# A valid request of every action a 2.0.1 charging station sends.
V201_REQUEST_SAMPLES = {
    "BootNotification": {"chargingStation": CHARGING_STATION, "reason": "PowerUp"},
    "Heartbeat": {},
    "StatusNotification": {
        "timestamp": NOW,
        "connectorStatus": "Available",
        "evseId": 1,
        "connectorId": 1,
    },
    "Authorize": {"idToken": {"idToken": "TAG-1", "type": "ISO14443"}},
    "TransactionEvent": {
        "eventType": "Started",
        "timestamp": NOW,
        "triggerReason": "Authorized",
        "seqNo": 0,
        "transactionInfo": {"transactionId": "SAMPLE-TX"},
        "evse": {"id": 1, "connectorId": 1},
        "idToken": {"idToken": "TAG-1", "type": "ISO14443"},
    },
    "MeterValues": {
        "evseId": 0,
        "meterValue": [{"timestamp": NOW, "sampledValue": [{"value": 1234.5}]}],
    },
    "NotifyReport": {
        "requestId": 1,
        "generatedAt": NOW,
        "seqNo": 0,
        "reportData": [
            {
                "component": COMPONENT,
                "variable": VARIABLE,
                "variableAttribute": [{"value": "7400"}],
            }
        ],
    },
    "NotifyEvent": {
        "generatedAt": NOW,
        "seqNo": 0,
        "eventData": [
            {
                "eventId": 1,
                "timestamp": NOW,
                "trigger": "Alerting",
                "actualValue": "high",
                "component": COMPONENT,
                "eventNotificationType": "HardWiredNotification",
                "variable": VARIABLE,
            }
        ],
    },
    "NotifyMonitoringReport": {"requestId": 1, "seqNo": 0, "generatedAt": NOW},
    "NotifyCustomerInformation": {
        "data": "no data",
        "seqNo": 0,
        "generatedAt": NOW,
        "requestId": 1,
    },
    "NotifyDisplayMessages": {"requestId": 1},
    "SecurityEventNotification": {"type": "FirmwareUpdated", "timestamp": NOW},
    "SignCertificate": {"csr": "not a certificate request"},
    "FirmwareStatusNotification": {"status": "Installed"},
    "PublishFirmwareStatusNotification": {"status": "Published"},
    "LogStatusNotification": {"status": "Uploaded", "requestId": 1},
    "ReservationStatusUpdate": {"reservationId": 1, "reservationUpdateStatus": "Expired"},
    "NotifyChargingLimit": {"chargingLimit": {"chargingLimitSource": "EMS"}},
    "ClearedChargingLimit": {"chargingLimitSource": "EMS"},
    "NotifyEVChargingNeeds": {
        "chargingNeeds": {"requestedEnergyTransfer": "AC_three_phase"},
        "evseId": 1,
    },
    "NotifyEVChargingSchedule": {"timeBase": NOW, "chargingSchedule": SCHEDULE, "evseId": 1},
    "ReportChargingProfiles": {
        "requestId": 1,
        "chargingLimitSource": "CSO",
        "evseId": 1,
        "chargingProfile": [
            {
                "id": 1,
                "stackLevel": 0,
                "chargingProfilePurpose": "TxDefaultProfile",
                "chargingProfileKind": "Absolute",
                "chargingSchedule": [SCHEDULE],
            }
        ],
    },
    "Get15118EVCertificate": {
        "iso15118SchemaVersion": "urn:iso:15118:2:2013:MsgDef",
        "action": "Install",
        "exiRequest": "AAAA",
    },
    "GetCertificateStatus": {
        "ocspRequestData": {
            "hashAlgorithm": "SHA256",
            "issuerNameHash": "00" * 32,
            "issuerKeyHash": "11" * 32,
            "serialNumber": "01",
            "responderURL": "http://127.0.0.1/ocsp",
        }
    },
    "DataTransfer": {"vendorId": "com.example", "messageId": "Hello", "data": {"a": 1}},
}


def transaction_event(event_type: str, transaction_id: str, seq_no: int, **fields) -> dict:
    """A TransactionEvent of ``event_type`` for ``transaction_id`` (fields added or replaced)."""
    payload = {
        "eventType": event_type,
        "timestamp": NOW,
        "triggerReason": {"Started": "Authorized", "Updated": "MeterValuePeriodic"}.get(
            event_type, "StopAuthorized"
        ),
        "seqNo": seq_no,
        "transactionInfo": {"transactionId": transaction_id},
    }
    payload.update(fields)
    return payload


def energy(wh, **more) -> list:
    """A meterValue with an Energy.Active.Import.Register reading of ``wh`` and more readings
    (measurand: (value, unit, multiplier))."""
    sampled = [{"value": wh, "measurand": "Energy.Active.Import.Register"}]
    for measurand, (value, unit, multiplier) in more.items():
        sampled.append(
            {
                "value": value,
                "measurand": measurand.replace("_", "."),
                "unitOfMeasure": {"unit": unit, "multiplier": multiplier},
            }
        )
    return [{"timestamp": NOW, "sampledValue": sampled}]


async def v201_charger(server, charger_id: str = "CS-201") -> Charger:
    """A 2.0.1 station connected and booted (its BootData, if any, answered)."""
    charger = await Charger.connect(server.url, charger_id, subprotocols=SUBPROTOCOLS)
    assert charger.ws.subprotocol == "ocpp2.0.1"
    reply = await charger.call("BootNotification", V201_REQUEST_SAMPLES["BootNotification"])
    assert reply.payload["status"] == "Accepted"
    assert_v201_valid("BootNotificationResponse", reply.payload)
    return charger


def collect_events(server, *types: str) -> list:
    """The events of ``types`` published from now on, as a list that grows."""
    events = []
    server.call_in_loop(server.system.bus.subscribe, events.append, *types)
    return events


def test_the_handler_table_names_every_charging_station_message():
    assert set(mock.V201_CHARGER_ACTION_HANDLERS) == set(V201_REQUEST_SAMPLES)
    for action, payload in V201_REQUEST_SAMPLES.items():
        assert_v201_valid(action + "Request", payload)


@charger_test
async def test_every_v201_handler_reply_is_valid_by_the_official_schema(in_process):
    server = in_process("--no-boot-data")
    charger = await v201_charger(server)
    for action, payload in V201_REQUEST_SAMPLES.items():
        reply = await charger.call(action, payload)
        assert reply[0] == 3, reply
        assert_v201_valid(action + "Response", reply.payload)
    await charger.close()
    assert "!! spec" not in server.output(), server.output()


@charger_test
async def test_v201_replies_say_what_they_mean(in_process):
    server = in_process("--no-boot-data")
    charger = await v201_charger(server)
    samples = V201_REQUEST_SAMPLES
    heartbeat = await charger.call("Heartbeat", {})
    assert heartbeat.payload["currentTime"].endswith("Z")
    authorize = await charger.call("Authorize", samples["Authorize"])
    assert authorize.payload == {"idTokenInfo": {"status": "Accepted"}}
    certificate = await charger.call("Get15118EVCertificate", samples["Get15118EVCertificate"])
    assert certificate.payload["status"] == "Failed" and certificate.payload["exiResponse"] == ""
    status = await charger.call("GetCertificateStatus", samples["GetCertificateStatus"])
    assert status.payload["status"] == "Failed"
    server.wait_for(r"CS-201 !! an ISO 15118 certificate request is answered Failed")
    assert server.output().count("ISO 15118 certificate request") == 1  # once per connection
    v2g = await charger.call("SignCertificate", {"csr": "x", "certificateType": "V2GCertificate"})
    assert v2g.payload["status"] == "Rejected"
    bad_csr = await charger.call("SignCertificate", samples["SignCertificate"])
    assert bad_csr.payload == {"status": "Rejected"}
    server.wait_for(r"SignCertificate: the csr is not a PEM certificate request")
    await charger.close()


OFF_SPEC_VALUES = (None, 5, "x", [], {}, {"idToken": 7}, [{"sampledValue": "no"}], True)


@charger_test
async def test_off_spec_payloads_are_answered_never_an_internal_error(in_process):
    server = in_process("--no-boot-data")
    charger = await v201_charger(server)
    fields = (
        "idToken",
        "evse",
        "transactionInfo",
        "meterValue",
        "eventType",
        "evseId",
        "connectorId",
        "connectorStatus",
        "certificateType",
        "csr",
        "chargingStation",
    )
    for action, sample in V201_REQUEST_SAMPLES.items():
        replies = [await charger.call(action, {})]
        for index, value in enumerate(OFF_SPEC_VALUES):
            payload = dict(sample, **{fields[index % len(fields)]: value})
            payload[fields[(index + 3) % len(fields)]] = value
            replies.append(await charger.call(action, payload))
        for reply in replies:
            assert reply[0] == 3, (action, reply)
    await charger.close()
    assert "failed:" not in server.output() and "InternalError" not in server.output()


@charger_test
async def test_status_notification_is_kept_per_evse_and_connector(in_process):
    server = in_process("--no-boot-data")
    changes = collect_events(server, "state_changed")
    charger = await v201_charger(server)
    for evse, connector, status in ((1, 1, "Occupied"), (2, 1, "Available"), (1, 2, "Faulted")):
        await charger.call(
            "StatusNotification",
            dict(
                V201_REQUEST_SAMPLES["StatusNotification"],
                evseId=evse,
                connectorId=connector,
                connectorStatus=status,
            ),
        )
    record = (await http(server, "GET", "/api/chargers/CS-201")).json
    assert record["connectors"] == {"1/1": "Occupied", "1/2": "Faulted", "2/1": "Available"}
    assert record["boot"]["chargingStation"] == CHARGING_STATION
    server.type("chargers")
    server.wait_for(r"connectors: 1/1 Occupied, 1/2 Faulted, 2/1 Available")
    server.wait_for(r"boot: Accepted  Test Mock-201  serial SN-201  firmware 2\.0\.1-a")
    fields = [event.fields["field"] for event in changes if event.fields["field"] != "boot"]
    assert fields == ["connector 1/1", "connector 2/1", "connector 1/2"]
    await charger.close()


@charger_test
async def test_a_whole_transaction_is_shown_as_a_16_one_is(in_process, tmp_path):
    log = tmp_path / "transcript.jsonl"
    server = in_process("--no-boot-data", "--log", str(log))
    events = collect_events(
        server, "transaction_started", "meter_values", "transaction_stopped", "authorization"
    )
    charger = await v201_charger(server)
    token = {"idToken": "TAG-7", "type": "ISO14443"}
    started = await charger.call(
        "TransactionEvent",
        transaction_event(
            "Started",
            "TX-7",
            0,
            evse={"id": 2, "connectorId": 1},
            idToken=token,
            meterValue=energy(1000),
        ),
    )
    assert started.payload == {"idTokenInfo": {"status": "Accepted"}}
    updated = await charger.call(
        "TransactionEvent",
        transaction_event(
            "Updated",
            "TX-7",
            1,
            meterValue=energy(1500, Power_Active_Import=(7.4, "W", 3), SoC=(55, "Percent", 0)),
        ),
    )
    assert updated.payload == {}
    listing = (await http(server, "GET", "/api/chargers/CS-201")).json
    assert listing["transactions"] == [
        {
            "transactionId": "TX-7",
            "evseId": 2,
            "connectorId": 1,
            "idTag": "TAG-7",
            "meterStart": 1000,
        }
    ]
    charts = server.call_in_loop(server.system.charts.records, server.system.states)
    assert [(chart["transactionId"], chart["points"][-1][1:]) for chart in charts] == [
        ("TX-7", (1500.0, 7400.0, 55.0))
    ]
    server.type("chargers")
    server.wait_for(r"transaction TX-7 on EVSE 2 connector 1, idTag \"TAG-7\", meterStart 1000")
    server.wait_for(
        r"last meter values: EVSE 2 connector 1, transaction TX-7: Energy\.Active\.Import\.Register"
        r" 1500 Wh, Power\.Active\.Import 7\.4 kW, SoC 55 Percent"
    )
    ended = await charger.call(
        "TransactionEvent",
        transaction_event(
            "Ended",
            "TX-7",
            2,
            transactionInfo={"transactionId": "TX-7", "stoppedReason": "Local"},
            meterValue=energy(2000),
        ),
    )
    assert ended.payload == {}
    assert (await http(server, "GET", "/api/chargers/CS-201")).json["transactions"] == []
    await charger.close()
    shown = [(event.type, event.fields) for event in events]
    assert shown[0] == (
        "authorization",
        {
            "action": "TransactionEvent",
            "idTag": "TAG-7",
            "status": "Accepted",
            "rule": mock.AuthorizationRules.DEFAULT_RULE,
        },
    )
    assert shown[1] == (
        "transaction_started",
        {
            "transactionId": "TX-7",
            "evseId": 2,
            "connectorId": 1,
            "idTag": "TAG-7",
            "meterStart": 1000,
        },
    )
    assert [kind for kind, _ in shown[2:]] == ["meter_values"] * 3 + ["transaction_stopped"]
    assert shown[3][1] == {
        "evseId": 2,
        "connectorId": 1,
        "transactionId": "TX-7",
        "readings": [
            ["Energy.Active.Import.Register", 1500, "Wh", None],
            ["Power.Active.Import", 7.4, "kW", None],
            ["SoC", 55, "Percent", None],
        ],
    }
    assert shown[-1][1] == {
        "transactionId": "TX-7",
        "evseId": 2,
        "connectorId": 1,
        "meterStop": 2000,
        "reason": "Local",
    }
    records = read_transcript(log)
    assert any(
        record.get("event") == "authorization" and record["idTag"] == "TAG-7" for record in records
    )
    assert sum('"TransactionEvent"' in record.get("frame", "") for record in records) == 3


@charger_test
async def test_two_transactions_on_two_evses_at_once(in_process):
    server = in_process("--no-boot-data")
    charger = await v201_charger(server)
    for number, evse in (("A", 1), ("B", 2)):
        await charger.call(
            "TransactionEvent",
            transaction_event(
                "Started",
                "TX-" + number,
                0,
                evse={"id": evse, "connectorId": 1},
                idToken={"idToken": "TAG-" + number, "type": "ISO14443"},
            ),
        )
    listing = (await http(server, "GET", "/api/chargers/CS-201")).json["transactions"]
    assert [(tx["transactionId"], tx["evseId"]) for tx in listing] == [("TX-A", 1), ("TX-B", 2)]
    await charger.call(
        "TransactionEvent", transaction_event("Updated", "TX-B", 1, meterValue=energy(10))
    )
    await charger.call("TransactionEvent", transaction_event("Ended", "TX-A", 1))
    listing = (await http(server, "GET", "/api/chargers/CS-201")).json["transactions"]
    assert [tx["transactionId"] for tx in listing] == ["TX-B"]
    server.type("chargers")
    server.wait_for(r"transaction TX-B on EVSE 2 connector 1")
    again = await charger.call("TransactionEvent", transaction_event("Ended", "TX-A", 2))
    assert again.payload == {}
    server.wait_for(
        r"TransactionEvent Ended names transaction \"TX-A\", which is not open here "
        r"\(open: TX-B\)"
    )
    await charger.close()


@charger_test
async def test_authorization_rules_decide_v201_id_tokens_whatever_their_type(in_process, tmp_path):
    tags = tmp_path / "tags.json"
    tags.write_text(
        json.dumps(
            {
                "FILED": {
                    "status": "Accepted",
                    "expiryDate": "2027-01-01T00:00:00Z",
                    "parentIdTag": "GROUP-1",
                },
                "LATE": "NotAtThisTime",
            }
        )
    )
    server = in_process(
        "--no-boot-data",
        "--tags",
        str(tags),
        "--tag",
        "BLOCK=Blocked",
        "--tag",
        "BROKE=NoCredit",
        "--unknown-tags",
        "Unknown",
    )
    charger = await v201_charger(server)
    expected = {
        ("BLOCK", "ISO14443"): {"status": "Blocked"},
        ("BROKE", "eMAID"): {"status": "NoCredit"},
        ("LATE", "KeyCode"): {"status": "NotAtThisTime"},
        ("NOBODY", "Central"): {"status": "Unknown"},
        ("FILED", "MacAddress"): {
            "status": "Accepted",
            "cacheExpiryDateTime": "2027-01-01T00:00:00Z",
            "groupIdToken": {"idToken": "GROUP-1", "type": "Central"},
        },
    }
    for (tag, kind), info in expected.items():
        reply = await charger.call("Authorize", {"idToken": {"idToken": tag, "type": kind}})
        assert reply.payload == {"idTokenInfo": info}, tag
        assert_v201_valid("AuthorizeResponse", reply.payload)
    started = await charger.call(
        "TransactionEvent",
        transaction_event("Started", "TX-1", 0, idToken={"idToken": "BROKE", "type": "Local"}),
    )
    assert started.payload == {"idTokenInfo": {"status": "NoCredit"}}
    server.wait_for(
        r"CS-201 \*\* TransactionEvent idTag \"BROKE\": NoCredit \(--tag BROKE=NoCredit\)"
    )
    # A 1.6 charger on the same server gets the idTagInfo status nearest to each 2.0.1 one.
    old = await Charger.connect(server.url, "CP-16")
    for tag, status in (
        ("BROKE", "Blocked"),
        ("LATE", "Blocked"),
        ("NOBODY", "Invalid"),
        ("BLOCK", "Blocked"),
    ):
        reply = await old.call("Authorize", {"idTag": tag})
        assert reply.payload["idTagInfo"]["status"] == status, tag
    server.wait_for(
        r"CP-16 \*\* Authorize idTag \"BROKE\": Blocked \(--tag BROKE=NoCredit; "
        r"NoCredit answered as Blocked, an idTagInfo status\)"
    )
    await old.close()
    await charger.close()


@charger_test
async def test_concurrent_tx_spans_evses_but_not_the_transaction_itself(in_process):
    server = in_process("--no-boot-data", "--concurrent-tx")
    charger = await v201_charger(server)
    token = {"idToken": "TWICE", "type": "ISO14443"}
    first = await charger.call(
        "TransactionEvent",
        transaction_event("Started", "TX-1", 0, evse={"id": 1, "connectorId": 1}, idToken=token),
    )
    assert first.payload["idTokenInfo"]["status"] == "Accepted"
    same = await charger.call(
        "TransactionEvent", transaction_event("Updated", "TX-1", 1, idToken=token)
    )
    assert same.payload["idTokenInfo"]["status"] == "Accepted"
    second = await charger.call(
        "TransactionEvent",
        transaction_event("Started", "TX-2", 0, evse={"id": 2, "connectorId": 1}, idToken=token),
    )
    assert second.payload["idTokenInfo"]["status"] == "ConcurrentTx"
    server.wait_for(
        r"ConcurrentTx \(--concurrent-tx: transaction TX-1 on CS-201 EVSE 1 "
        r"connector 1\)"
    )
    await charger.close()


@pytest.mark.parametrize("flag", ["--tag", "--unknown-tags"])
def test_the_flags_take_the_v201_statuses_and_name_them(flag):
    value = "T=NotAllowedTypeEVSE" if flag == "--tag" else "NotAllowedTypeEVSE"
    options = mock.parse_settings([flag, value])
    assert "NotAllowedTypeEVSE" in json.dumps(
        [options.unknown_tags, list(options.tag_rules.values())]
    )
    assert "NotAtThisLocation" in mock.build_parser().format_help()


def test_a_v201_reading_charts_with_its_unit_of_measure():
    payload = {
        "meterValue": energy(2.5, Power_Active_Import=(11, "W", 3), Current_Import=(16, "A", 0))
    }
    payload["meterValue"][0]["sampledValue"][0]["unitOfMeasure"] = {"unit": "Wh", "multiplier": 3}
    assert mock.chart_point(payload) == (2500.0, 11000.0, None)
    assert mock.render_meter_values(dict(payload, evseId=1, connectorId=2)) == (
        "EVSE 1 connector 2: Energy.Active.Import.Register 2.5 kWh, Power.Active.Import 11 kW, "
        "Current.Import 16 A"
    )


# --------------------------------------------- a charge point on mobilityhouse `ocpp`'s v201


@charger_test
async def test_a_mobilityhouse_v201_charge_point_runs_a_whole_session(in_process):
    import websockets
    from ocpp.v201 import ChargePoint, call, datatypes, enums

    server = in_process("--no-boot-data", "--heartbeat-interval", "300")
    async with websockets.connect(server.url + "/MH-201", subprotocols=["ocpp2.0.1"]) as websocket:
        station = ChargePoint("MH-201", websocket)
        listening = asyncio.ensure_future(station.start())
        try:
            await asyncio.wait_for(mobilityhouse_session(station, call, datatypes, enums), TIMEOUT)
        finally:
            listening.cancel()
    server.wait_for(r"MH-201 \*\* disconnected")
    assert "!! spec" not in server.output(), server.output()


async def mobilityhouse_session(station, call, datatypes, enums):
    boot = await station.call(
        call.BootNotification(
            charging_station=datatypes.ChargingStationType(vendor_name="MH", model="V201"),
            reason=enums.BootReasonEnumType.power_up,
        )
    )
    assert boot.status == "Accepted" and boot.interval == 300
    status = await station.call(
        call.StatusNotification(
            timestamp=NOW,
            connector_status=enums.ConnectorStatusEnumType.occupied,
            evse_id=1,
            connector_id=1,
        )
    )
    assert status is not None
    token = datatypes.IdTokenType(id_token="MH-TAG", type=enums.IdTokenEnumType.iso14443)
    authorized = await station.call(call.Authorize(id_token=token))
    assert authorized.id_token_info["status"] == "Accepted"
    sample = [
        datatypes.MeterValueType(
            timestamp=NOW,
            sampled_value=[
                datatypes.SampledValueType(
                    value=100.0,
                    measurand=enums.MeasurandEnumType.energy_active_import_register,
                )
            ],
        )
    ]
    for seq_no, (kind, trigger) in enumerate(
        (
            (enums.TransactionEventEnumType.started, enums.TriggerReasonEnumType.authorized),
            (
                enums.TransactionEventEnumType.updated,
                enums.TriggerReasonEnumType.meter_value_periodic,
            ),
            (enums.TransactionEventEnumType.ended, enums.TriggerReasonEnumType.stop_authorized),
        )
    ):
        reply = await station.call(
            call.TransactionEvent(
                event_type=kind,
                timestamp=NOW,
                trigger_reason=trigger,
                seq_no=seq_no,
                transaction_info=datatypes.TransactionType(transaction_id="MH-TX"),
                evse=datatypes.EVSEType(id=1, connector_id=1),
                id_token=token if seq_no == 0 else None,
                meter_value=sample,
            )
        )
        if seq_no == 0:
            assert reply.id_token_info["status"] == "Accepted"
    heartbeat = await station.call(call.Heartbeat())
    assert heartbeat.current_time.endswith("Z")


@charger_test
async def test_a_transaction_the_server_missed_the_start_of_is_opened_by_its_update(in_process):
    server = in_process("--no-boot-data")
    started = collect_events(server, "transaction_started")
    charger = await v201_charger(server)
    reply = await charger.call(
        "TransactionEvent",
        transaction_event(
            "Updated", "TX-LATE", 5, evse={"id": 1, "connectorId": 1}, meterValue=energy(42)
        ),
    )
    assert reply.payload == {}
    server.wait_for(
        r"CS-201 !! TransactionEvent \"Updated\" names transaction \"TX-LATE\", which was not "
        r"open here; it is now \(further ones opened quietly\)"
    )
    await charger.call("TransactionEvent", transaction_event("Updated", "TX-LATER", 1))
    assert [event.fields["transactionId"] for event in started] == ["TX-LATE", "TX-LATER"]
    assert server.output().count("which was not open here") == 1  # one line, not one each
    await charger.call("TransactionEvent", transaction_event("Ended", "TX-LATE", 6))
    listing = (await http(server, "GET", "/api/chargers/CS-201")).json["transactions"]
    assert [tx["transactionId"] for tx in listing] == ["TX-LATER"]
    await charger.close()


@charger_test
async def test_a_stations_transaction_id_is_shown_escaped(in_process):
    server = in_process("--no-boot-data")
    charger = await v201_charger(server)
    sneaky = "TX\x1b[2J\u202eX"
    await charger.call(
        "TransactionEvent",
        transaction_event("Started", sneaky, 0, meterValue=energy(1)),
    )
    await charger.call("TransactionEvent", transaction_event("Ended", "OTHER", 1))
    server.type("chargers")
    server.wait_for(r"last meter values: connector null, transaction TX\\x1b\[2J\\u202eX")
    assert "\x1b" not in server.output() and "\u202e" not in server.output()
    await charger.close()


@charger_test
async def test_a_16_charger_gets_the_nearest_id_tag_info_status_of_a_v201_one(in_process, tmp_path):
    tags = tmp_path / "tags.json"
    tags.write_text(json.dumps({"LATE": "NotAtThisTime", "AWAY": "NotAtThisLocation"}))
    server = in_process(
        "--no-boot-data",
        "--tags",
        str(tags),
        "--tag",
        "BROKE=NoCredit",
        "--tag",
        "BLOCK=Blocked",
        "--unknown-tags",
        "Unknown",
    )
    charger = await Charger.connect(server.url, "CP-16")
    for tag, status in (
        ("BROKE", "Blocked"),
        ("LATE", "Blocked"),
        ("AWAY", "Invalid"),
        ("NOBODY", "Invalid"),
        ("BLOCK", "Blocked"),
    ):
        reply = await charger.call("Authorize", {"idTag": tag})
        assert reply.payload == {"idTagInfo": {"status": status}}, tag
        assert_valid("AuthorizeResponse", reply.payload)
    started = await charger.call(
        "StartTransaction",
        {"connectorId": 1, "idTag": "BROKE", "meterStart": 0, "timestamp": NOW},
    )
    assert started.payload["idTagInfo"] == {"status": "Blocked"}
    assert_valid("StartTransactionResponse", started.payload)
    server.wait_for(
        r"CP-16 \*\* Authorize idTag \"BROKE\": Blocked \(--tag BROKE=NoCredit; "
        r"NoCredit answered as Blocked, an idTagInfo status\)"
    )
    server.wait_for(r"CP-16 \*\* Authorize idTag \"BLOCK\": Blocked \(--tag BLOCK=Blocked\)")
    server.wait_for(
        r"Authorize idTag \"NOBODY\": Invalid \(--unknown-tags Unknown; Unknown answered"
    )
    await charger.close()


@charger_test
async def test_auto_stop_after_stops_a_stations_transaction_by_its_string_id(in_process):
    server = in_process("--no-boot-data", "--auto-stop-after", "0.1")
    charger = await v201_charger(server)
    await charger.call(
        "TransactionEvent",
        transaction_event("Started", "TX-AUTO", 0, evse={"id": 1, "connectorId": 1}),
    )
    stop = await charger.expect_call("RequestStopTransaction")
    assert stop.payload == {"transactionId": "TX-AUTO"}
    assert_v201_valid("RequestStopTransactionRequest", stop.payload)
    server.wait_for(r"RequestStopTransaction for transaction TX-AUTO in 0\.1 s")
    await charger.answer(stop, {"status": "Accepted"})
    await charger.close()


@pytest.mark.slow(4)
def test_the_page_shows_a_stations_transaction_its_evses_and_its_charts(in_process):
    from selenium.webdriver.common.by import By

    browser = headless_browser()
    server = in_process("--no-boot-data")

    def charts():
        return browser.execute_script(
            "return Object.fromEntries([...charts.entries()].map(([key, chart]) => "
            "[key, chart.points.map((point) => [point.energy, point.power])]))"
        )

    async def scenario():
        charger = await v201_charger(server)
        await charger.call(
            "StatusNotification",
            dict(V201_REQUEST_SAMPLES["StatusNotification"], evseId=2, connectorStatus="Occupied"),
        )
        await charger.call(
            "TransactionEvent",
            transaction_event(
                "Started", "TX-7", 0, evse={"id": 2, "connectorId": 1}, meterValue=energy(1000)
            ),
        )
        browser.get(f"http://127.0.0.1:{http_port(server)}/")
        card = 'section.card[data-charger="CS-201"]'
        wait_in_browser(
            browser,
            lambda: (
                "transaction TX-7 on EVSE 2 connector 1"
                in browser.find_element(By.CSS_SELECTOR, card).text
            ),
            "the card's transaction",
        )
        wait_in_browser(
            browser,
            lambda: "2/1: Occupied" in browser.find_element(By.CSS_SELECTOR, card).text,
            "the EVSE's connector",
        )
        assert charts() == {"CS-201 \u00b7 transaction TX-7": [[1000, None]]}
        wait_in_browser(
            browser, lambda: browser.find_element(By.ID, "status").text == "live", "live"
        )
        await charger.call(
            "TransactionEvent",
            transaction_event(
                "Updated", "TX-7", 1, meterValue=energy(1500, Power_Active_Import=(7.4, "W", 3))
            ),
        )
        await charger.call("MeterValues", V201_REQUEST_SAMPLES["MeterValues"])
        wait_in_browser(browser, lambda: len(charts()) == 2, "the live readings")
        assert charts() == {
            "CS-201 \u00b7 transaction TX-7": [[1000, None], [1500, 7400]],
            "CS-201 \u00b7 EVSE 0": [[1234.5, None]],
        }
        await charger.close()

    try:
        run(scenario())
    finally:
        browser.quit()


# ----------------------------- every CSMS-initiated message to a mobilityhouse `ocpp` v201 station


def _minimal(schema: dict, definitions: dict):
    """The smallest value a response schema allows: required fields only, the first enum value."""
    if "$ref" in schema:
        return _minimal(definitions[schema["$ref"].split("/")[-1]], definitions)
    if "enum" in schema:
        return schema["enum"][0]
    kind = schema.get("type")
    if kind == "object":
        properties = schema.get("properties", {})
        return {name: _minimal(properties[name], definitions)
                for name in schema.get("required", ())}
    if kind == "array":
        return [_minimal(schema["items"], definitions)] * schema.get("minItems", 0)
    return {"string": "x", "integer": 1, "number": 1.0, "boolean": False}[kind]


def _station_answering_everything(websocket):
    """An `ocpp` v201 ChargePoint with a handler for every CSMS-initiated action: the library checks
    each CALL against the official schema before the handler runs (a CALLERROR if it fails) and
    answers with the smallest reply the response schema allows."""
    from ocpp.charge_point import camel_to_snake_case
    from ocpp.v201 import ChargePoint, call_result

    station = ChargePoint("MH-ALL", websocket)
    received = {}
    for action in mock.OCPP201.server_requests:
        schema = json.loads((SCHEMAS_201 / f"{action}Response.json").read_text())
        reply = camel_to_snake_case(_minimal(schema, schema.get("definitions", {})))

        def handler(_action=action, _reply=reply, **payload):
            received[_action] = payload
            return getattr(call_result, _action)(**_reply)

        station.route_map[action] = {"_on_action": handler}
    return station, received


# What the server cannot pick itself when no transaction is open (it says so and sends nothing).
NEEDS_A_TRANSACTION = {"CostUpdated": ("transactionId=TX-1",),
                       "RequestStopTransaction": ("transactionId=TX-1",)}


@charger_test
async def test_a_mobilityhouse_v201_station_takes_every_csms_initiated_message(in_process):
    import websockets

    server = in_process("--no-boot-data", "--ocpp", "2.0.1")
    async with websockets.connect(server.url + "/MH-ALL", subprotocols=["ocpp2.0.1"]) as websocket:
        station, received = _station_answering_everything(websocket)
        listening = asyncio.ensure_future(station.start())
        try:
            server.wait_for(r"MH-ALL \*\* connected")
            for action in mock.OCPP201.server_requests:
                server.type(" ".join((action, *NEEDS_A_TRANSACTION.get(action, ()))))
                await asyncio.to_thread(server.wait_for, rf"MH-ALL <- {action}\.conf ")
        finally:
            listening.cancel()
    assert sorted(received) == sorted(mock.OCPP201.server_requests)
    assert len(received) >= 40
    output = server.output()
    assert "CALLERROR" not in output and "!! spec" not in output, output

