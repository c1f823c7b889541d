"""Memory per connection (issue 20, 10,000 chargers): what a connection lets go of, and the tables
made on their first entry that must still work when it comes."""

import ocpp_mock_server as mock
from conftest import Charger, charger_test

BOOT = {"chargePointVendor": "V", "chargePointModel": "M"}


def _meter_values(transaction_id: int, energy: int, timestamp: str) -> dict:
    return {"connectorId": 1, "transactionId": transaction_id, "meterValue": [
        {"timestamp": timestamp, "sampledValue": [
            {"value": str(energy), "measurand": "Energy.Active.Import.Register", "unit": "Wh"}]}]}


@charger_test
async def test_a_connection_lets_go_of_its_handshake_headers_and_keeps_its_path(in_process):
    server = in_process("--quiet", "--no-http", "--no-boot-data")
    station = await Charger.connect(server.url + "/ocpp", "CS-MEM", subprotocols=("ocpp2.0.1",))
    assert (await station.call("Heartbeat", {}))[0] == 3
    session = server.system.sessions["CS-MEM"]
    held = server.call_in_loop(lambda: (len(mock.request_headers(session.websocket)),
                                        getattr(session.websocket, "response", None)))
    assert held == (0, None)
    # The path is still read: SetNetworkProfile's default names this server under the same prefix.
    payload = server.call_in_loop(mock.bare_payload, mock.OCPP201, "SetNetworkProfile",
                                  server.system, session)
    assert payload["connectionData"]["ocppCsmsUrl"] == f"ws://127.0.0.1:{server.port}/ocpp/"
    await station.close()


@charger_test
async def test_tables_most_chargers_never_fill_are_made_by_their_first_entry(in_process):
    server = in_process("--no-http", "--no-boot-data")
    charger = await Charger.connect(server.url, "CP-LAZY")
    assert (await charger.call("BootNotification", BOOT))[2]["status"] == "Accepted"
    state = server.system.states["CP-LAZY"]

    def tables():
        return (state.authorizations, state.certificate_ids, state.spec_texts,
                state.history.energy, state.history.transaction_times)

    assert server.call_in_loop(tables) == ((), (), (), None, None)
    await charger.call("Authorize", {"idTag": "TAG-1"})
    await charger.call("Heartbeat", {"unexpected": 1})
    start = await charger.call("StartTransaction", {
        "connectorId": 1, "idTag": "TAG-1", "meterStart": 100,
        "timestamp": "2026-01-01T00:00:10Z"})
    transaction_id = start[2]["transactionId"]
    await charger.call("MeterValues", _meter_values(transaction_id, 500, "2026-01-01T00:00:20Z"))
    await charger.call("MeterValues", _meter_values(transaction_id, 400, "2026-01-01T00:00:15Z"))
    server.wait_for(r"CP-LAZY !! check energy-decreases: .* fell from 500 Wh to 400 Wh")
    server.wait_for(r"CP-LAZY !! check transaction-order: MeterValues for transaction")
    authorizations, _, spec_texts, energy, times = server.call_in_loop(tables)
    assert [entry[:3] for entry in authorizations] == [
        ("Authorize", '"TAG-1"', "Accepted"), ("StartTransaction", '"TAG-1"', "Accepted")]
    assert any("Heartbeat.unexpected" in text for text in spec_texts), spec_texts
    assert energy == {(transaction_id, None): 400.0}  # the latest reading
    assert times == {transaction_id: "2026-01-01T00:00:20Z"}
    mark = server.mark()
    server.type("chargers")
    server.wait_for(r'>>   StartTransaction idTag "TAG-1": Accepted', since=mark)
    await charger.close()
