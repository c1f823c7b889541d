"""Server-initiated actions: what each action sent bare or by its shortcut puts on the wire.

Every action typed bare is valid by the official schema; startRemote/stopRemote, reservation ids,
and the FlexiCharge dialect's key spellings.
"""

import time

import ocpp_mock_server as mock
from conftest import (
    CHARGER_REPLY_SAMPLES,
    CHARGER_REQUEST_SAMPLES,
    Charger,
    assert_valid,
    booted_charger,
    charger_test,
)


@charger_test
async def test_every_server_action_typed_bare_is_valid_by_the_official_schema(start_server):
    server = start_server()

    charger = await booted_charger(server)
    start = await charger.call("StartTransaction", CHARGER_REQUEST_SAMPLES["StartTransaction"])
    transaction_id = start[2]["transactionId"]
    sent = {}
    for index, action in enumerate(mock.SERVER_ACTION_DEFAULTS):
        typed = action.lower() if index % 2 else action  # names are case-insensitive
        server.type(typed)
        call = await charger.expect_call(action)
        assert_valid(action, call.payload)
        sent[action] = call.payload
        await charger.answer(call, CHARGER_REPLY_SAMPLES[action])
        server.wait_for(rf"CP-1 <- {action}\.conf")
    assert len(sent) == 26
    assert sent["Reset"] == {"type": "Soft"}
    assert sent["RemoteStopTransaction"] == {"transactionId": transaction_id}
    assert sent["RemoteStartTransaction"] == {"connectorId": 1, "idTag": "1"}
    assert sent["CancelReservation"]["reservationId"] == sent["ReserveNow"]["reservationId"]
    assert (
        sent["SetChargingProfile"]["csChargingProfiles"]["chargingProfilePurpose"]
        == "TxDefaultProfile"
    )
    await charger.close()


@charger_test
async def test_start_remote_and_stop_remote(start_server):
    server = start_server("--id-tag", "ABC")

    charger = await booted_charger(server)
    server.type("startRemote")
    call = await charger.expect_call("RemoteStartTransaction")
    assert call.payload == {"connectorId": 1, "idTag": "ABC"}
    await charger.answer(call, {"status": "Accepted"})
    start = await charger.call(
        "StartTransaction", dict(CHARGER_REQUEST_SAMPLES["StartTransaction"], idTag="ABC")
    )
    server.type("stopRemote")
    call = await charger.expect_call("RemoteStopTransaction")
    assert call.payload == {"transactionId": start[2]["transactionId"]}
    await charger.answer(call, {"status": "Rejected"})
    server.wait_for(r'CP-1 <- RemoteStopTransaction\.conf \{"status":"Rejected"\}')
    await charger.close()


@charger_test
async def test_reserve_now_and_cancel_reservation_use_consecutive_ids(start_server):
    server = start_server()

    charger = await booted_charger(server)
    ids = []
    for _ in range(2):
        server.type("ReserveNow")
        call = await charger.expect_call("ReserveNow")
        ids.append(call.payload["reservationId"])
        await charger.answer(call, {"status": "Accepted"})
    assert ids[1] == ids[0] + 1
    server.type("CancelReservation")
    call = await charger.expect_call("CancelReservation")
    assert call.payload == {"reservationId": ids[1]}
    await charger.answer(call, {"status": "Accepted"})
    await charger.close()


@charger_test
async def test_flexicharge_dialect_uses_its_key_spellings(start_server):
    server = start_server()

    charger = await Charger.connect(server.url)
    await charger.boot(flexicharge=True)
    server.wait_for(r"speaks the FlexiCharge dialect")
    start = await charger.call(
        "StartTransaction",
        {
            "connectorId": "1",
            "id_tag": None,
            "meterStart": 0,
            "timestamp": 1665917012.1,
            "reservationId": None,
        },
    )
    server.type("stopRemote")
    call = await charger.expect_call("RemoteStopTransaction")
    assert call.payload == {"transactionID": start[3]["transactionId"]}
    await charger.answer(call, {"status": "Accepted"}, flexicharge=True)
    server.type("ReserveNow")
    call = await charger.expect_call("ReserveNow")
    assert set(call.payload) == {"connectorID", "expiryDate", "idTag", "reservationID"}
    assert (
        isinstance(call.payload["expiryDate"], int)
        and call.payload["expiryDate"] > time.time() + 3000
    )
    await charger.answer(call, {"status": "Accepted"}, flexicharge=True)
    server.type("startRemote")
    call = await charger.expect_call("RemoteStartTransaction")
    assert call.payload == {"connectorId": 1, "idTag": "1"}  # as the fixture shows it accepted
    await charger.close()
