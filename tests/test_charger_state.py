"""Charger state: what the server remembers per charge point, across reconnects.

A reconnect replaces the old session (a deaf one within a second), an open transaction outlives it,
two connectors are tracked at once, and gone charge points are remembered up to a bound.
"""

import time

import pytest
import websockets

import ocpp_mock_server as mock
from conftest import (
    CHARGER_REQUEST_SAMPLES,
    Charger,
    _raw_handshake,
    charger_test,
    run,
)


@charger_test
async def test_a_reconnecting_charger_replaces_its_old_session(start_server):
    server = start_server("--no-boot-data")

    first = await Charger.connect(server.url)
    await first.call(
        "StatusNotification", {"connectorId": 1, "errorCode": "NoError", "status": "Charging"}
    )
    second = await Charger.connect(server.url)
    with pytest.raises(websockets.ConnectionClosed):
        await first.receive()
    assert first.ws.close_code == 1000
    assert (await second.call("Heartbeat", {}))[0] == 3
    mark = server.mark()
    server.type("chargers")
    server.wait_for(r">> CP-1  \(127\.0\.0\.1", since=mark)
    server.settled_output()  # every line of the listing is out
    assert server.output(mark).count(">> CP-1  (") == 1
    await second.close()

    server.wait_for(r"CP-1 \*\* reconnected; the new connection replaces the old one")


# Item 10: state outlives a connection.
@charger_test
async def test_a_transaction_outlives_a_reconnect_and_can_still_be_stopped(in_process):
    server = in_process("--no-boot-data")

    charger = await Charger.connect(server.url, "CP-T")
    await charger.call("BootNotification", CHARGER_REQUEST_SAMPLES["BootNotification"])
    started = await charger.call("StartTransaction", CHARGER_REQUEST_SAMPLES["StartTransaction"])
    transaction_id = started.payload["transactionId"]
    await charger.close()
    server.wait_for(r"CP-T \*\* disconnected")
    mark = server.mark()
    server.type("chargers")
    server.wait_for(r">> CP-T  \(disconnected\)", mark)
    server.wait_for(rf">>   transaction {transaction_id} on connector 1", mark)
    charger = await Charger.connect(server.url, "CP-T")  # back, without a new boot
    mark = server.mark()
    server.type("chargers")
    server.wait_for(r">>   boot: Accepted  Test Mock-1", mark)
    server.wait_for(rf">>   transaction {transaction_id} on connector 1", mark)
    server.type("stopRemote")
    call = await charger.expect_call("RemoteStopTransaction")
    assert call.payload == {"transactionId": transaction_id}
    await charger.answer(call, {"status": "Accepted"})
    await charger.close()


def test_replacing_a_deaf_connection_waits_at_most_a_second(in_process):
    server = in_process("--no-boot-data")
    deaf = _raw_handshake(server.port, "/CP-DEAF")  # never reads, never answers a close frame
    try:

        async def scenario():
            started = time.monotonic()
            charger = await Charger.connect(server.url, "CP-DEAF")
            assert (await charger.call("Heartbeat", {}))[0] == 3
            assert time.monotonic() - started < 1.0  # the new connection is served at once
            # And the old one is cut (1 s, 3 s on websockets 10.3)
            server.wait_for(r"CP-DEAF \*\* disconnected")
            await charger.close()

        run(scenario())
    finally:
        deaf.close()


@charger_test
async def test_charge_points_that_are_gone_are_remembered_up_to_a_bound(in_process, monkeypatch):
    monkeypatch.setattr(mock, "REMEMBERED_CHARGE_POINTS", 3)
    server = in_process("--no-boot-data")

    for number in range(6):
        charger = await Charger.connect(server.url, f"CP-{number}")
        await charger.call("Heartbeat", {})
        await charger.close()
        server.wait_for(rf"CP-{number} \*\* disconnected")

    remembered = server.call_in_loop(lambda: list(server.system.states))
    assert remembered[-3:] == ["CP-3", "CP-4", "CP-5"] and len(remembered) <= 4, remembered


# Item 16: several transactions at once.
@charger_test
async def test_two_connectors_charging_at_once_are_both_tracked(in_process):
    server = in_process("--no-boot-data")

    charger = await Charger.connect(server.url, "CP-2C")
    first = await charger.call("StartTransaction", CHARGER_REQUEST_SAMPLES["StartTransaction"])
    second = await charger.call(
        "StartTransaction", dict(CHARGER_REQUEST_SAMPLES["StartTransaction"], connectorId=2)
    )
    first_id, second_id = first.payload["transactionId"], second.payload["transactionId"]
    mark = server.mark()
    server.type("chargers")
    server.wait_for(rf">>   transaction {first_id} on connector 1", mark)
    server.wait_for(rf">>   transaction {second_id} on connector 2", mark)
    server.type("stopRemote")
    server.wait_for(
        rf">> CP-2C has 2 open transactions \({first_id} on connector 1, {second_id} on connector "
        rf"2\): say which"
    )
    await charger.call(
        "StopTransaction", dict(CHARGER_REQUEST_SAMPLES["StopTransaction"], transactionId=first_id)
    )
    server.type("stopRemote")  # now only the second is open
    call = await charger.expect_call("RemoteStopTransaction")
    assert call.payload == {"transactionId": second_id}
    await charger.answer(call, {"status": "Accepted"})
    await charger.close()

    assert (
        "closing it anyway" not in server.settled_output()
        and "which is not open" not in server.output()
    )
