"""A verdict for every session (issue 23, item 3): when a transaction ends, on `summary` and at
exit, a summary per charger of energy, duration, peak power, messages each way, spec warnings and
behaviour-check violations by rule, and faults injected; in the output, the transcript, the API,
the event stream and the page."""

import re

import pytest

import ocpp_mock_server as mock
from conftest import (
    TIMEOUT,
    Charger,
    EventStream,
    assert_v201_valid,
    booted_charger,
    charger_test,
    headless_browser,
    http,
    http_port,
    read_transcript,
    run,
    urllib_quote,
    wait_in_browser,
)
from test_docs import block, differences, exchanges, sample_json

NOW = "2026-12-03T12:00:00.000Z"
FAULT = "@CP-1 Heartbeat error=InternalError"  # a fault that fires mid-transaction
GUIDE_VERDICT = (
    "docs/guide.md: CP-1 ** transaction 1 ended: 4.2 kWh in 12 min 3 s, peak 11.0 kW; 6 mess"
)
API_SUMMARY = "docs/api.md: $ curl -s $API/api/chargers/CP-1/summary"


def _without_duration(line):
    return re.sub(r" in [^,]+, peak ", " in T, peak ", line)


def _meter_values(transaction_id, energy, power=None, timestamp=NOW):
    sampled = [{"value": str(energy), "measurand": "Energy.Active.Import.Register", "unit": "Wh"}]
    if power is not None:
        sampled.append({"value": str(power), "measurand": "Power.Active.Import", "unit": "W"})
    sample = {"sampledValue": sampled}
    if timestamp is not None:
        sample["timestamp"] = timestamp
    return {"connectorId": 1, "transactionId": transaction_id, "meterValue": [sample]}


async def _charge_16(server, charger_id, stop=True):
    """A 1.6 transaction of 4.2 kWh with a peak of 11 kW reported, a spec warning met twice (a
    sample without its timestamp), the energy register falling twice (one behaviour check, met
    twice) and a Heartbeat (answered as FAULT says, if set); the charger, the transaction's id."""
    charger = await Charger.connect(server.url, urllib_quote(charger_id))
    await charger.boot()
    server.wait_for(rf"{re.escape(charger_id)} <- DataTransfer\.conf", timeout=TIMEOUT)
    started = await charger.call(
        "StartTransaction",
        {"connectorId": 1, "idTag": "TAG", "meterStart": 1000, "timestamp": NOW},
    )
    transaction_id = started.payload["transactionId"]
    for energy, power, timestamp in ((3000, 7400, NOW), (2900, 11000, None), (2800, None, None)):
        await charger.call("MeterValues", _meter_values(transaction_id, energy, power, timestamp))
    await charger.call("Heartbeat", {})
    if stop:
        stopped = {"transactionId": transaction_id, "meterStop": 5200, "timestamp": NOW}
        await charger.call("StopTransaction", stopped)
    return charger, transaction_id


def test_a_16_transaction_ends_with_its_verdict_in_the_output_and_the_transcript(
    in_process, tmp_path
):
    log = tmp_path / "session.jsonl"
    server = in_process("--log", str(log), "--no-http", "--fault", FAULT)

    async def session():
        charger, transaction_id = await _charge_16(server, "CP-1")
        await charger.close()
        return transaction_id

    transaction_id = run(session())
    line = server.wait_for(r"CP-1 \*\* transaction \d+ ended: .*").group(0)
    # From StartTransaction on: 6 frames in, 6 out (the Heartbeat answered as the fault says).
    assert _without_duration(line).endswith(
        f"transaction {transaction_id} ended: 4.2 kWh in T, peak 11.0 kW; 6 messages in, 6 out; "
        "2 spec warnings (MeterValues.meterValue[].timestamp x2); "
        "2 behaviour-check violations (energy-decreases x2); 1 fault injected"
    ), line
    assert _without_duration(line).endswith(_without_duration(block(GUIDE_VERDICT).strip()))
    assert server.stop() == 0
    ended = [r for r in read_transcript(log) if r.get("event") == "summary"][0]
    assert ended["scope"] == "transaction" and ended["charger"] == "CP-1"
    assert ended["transactionId"] == transaction_id and ended["transactions"] is None
    assert ended["energyWh"] == 4200 and ended["peakW"] == 11000
    assert ended["peakFrom"] == "Power.Active.Import"
    assert ended["specWarnings"] == {"MeterValues.meterValue[].timestamp": 2}
    assert ended["violations"] == {"energy-decreases": 2} and ended["faults"] == 1
    assert (ended["messagesIn"], ended["messagesOut"]) == (6, 6)
    assert set(ended) == {"ts", "charger", "event", *mock.SUMMARY_FIELDS}


def _transaction_event(event_type, seq_no, energy, **fields):
    payload = {
        "eventType": event_type,
        "timestamp": NOW,
        "triggerReason": "MeterValuePeriodic",
        "seqNo": seq_no,
        "transactionInfo": {"transactionId": "TX-7"},
        "evse": {"id": 1, "connectorId": 1},
        "meterValue": [{"timestamp": NOW, "sampledValue": [
            {"value": energy, "measurand": "Energy.Active.Import.Register",
             "unitOfMeasure": {"unit": "kWh"}}]}],
        **fields,
    }
    assert_v201_valid("TransactionEventRequest", payload)
    return payload


@charger_test
async def test_a_2_0_1_transaction_ends_with_its_verdict_on_the_event_stream(
    in_process, monkeypatch
):
    """Energy from the Started and Ended register readings (in kWh); no Power.Active.Import
    readings, so the peak is worked out from the energy over time (and the line says so)."""
    monkeypatch.setattr(mock, "DERIVED_POWER_SECONDS", 0.0)  # every pair of readings counts
    server = in_process()
    stream = await EventStream.open(server)
    station = await Charger.connect(server.url, "CS-V201", subprotocols=("ocpp2.0.1",))
    boot = {"chargingStation": {"model": "M", "vendorName": "V"}, "reason": "PowerUp"}
    assert (await station.call("BootNotification", boot)).payload["status"] == "Accepted"
    await station.call("TransactionEvent", _transaction_event("Started", 0, 10.0))
    await station.call("TransactionEvent", _transaction_event("Updated", 1, 11.5))
    ended = _transaction_event(
        "Ended", 2, 12.5, transactionInfo={"transactionId": "TX-7", "stoppedReason": "Local"}
    )
    await station.call("TransactionEvent", ended)
    events = await stream.until(lambda event: event["type"] == "summary")
    stopped = [event for event in events if event["type"] == "transaction_stopped"]
    summary = events[-1]
    assert stopped and summary["charger"] == "CS-V201" and summary["scope"] == "transaction"
    assert summary["transactionId"] == "TX-7" and summary["energyWh"] == 2500
    assert summary["peakFrom"] == "energy over time" and summary["peakW"] > 0
    assert (summary["messagesIn"], summary["messagesOut"]) == (3, 3)
    assert summary["specWarnings"] == {} and summary["violations"] == {}
    text = _without_duration(summary["text"])
    assert text.startswith("transaction TX-7 ended: 2.5 kWh in T, peak "), text
    assert "(from energy over time); 3 messages in, 3 out; 0 spec warnings;" in summary["text"]
    server.wait_for(r"CS-V201 \*\* transaction TX-7 ended: 2\.5 kWh")
    stream.close()
    await station.close()


@charger_test
async def test_summary_at_the_console_mid_session_and_for_one_charger(in_process):
    server = in_process("--no-http", "--fault", FAULT)
    charger, transaction_id = await _charge_16(server, "CP-1", stop=False)
    other = await booted_charger(server, "CP-OTHER")
    mark = server.mark()
    server.type("summary")
    line = server.wait_for(r">> CP-1 summary: .*", since=mark).group(0)
    assert "summary: 0 transactions ended, 1 open; " in line
    assert "2 spec warnings (MeterValues.meterValue[].timestamp x2); " in line
    assert "2 behaviour-check violations (energy-decreases x2); 1 fault injected; " in line
    assert "first connected " in line
    server.wait_for(r">> CP-OTHER summary: 0 transactions ended; \d+ messages in", since=mark)
    await charger.call(
        "StopTransaction", {"transactionId": transaction_id, "meterStop": 5200, "timestamp": NOW}
    )
    server.wait_for(rf"CP-1 \*\* transaction {transaction_id} ended")
    mark = server.mark()
    server.type("summary @CP-1")
    server.wait_for(r">> CP-1 summary: 1 transaction ended \(4\.2 kWh, peak 11\.0 kW\); ",
                    since=mark)
    server.wait_for(rf">>   latest transaction {transaction_id} ended: 4\.2 kWh", since=mark)
    server.type("summary @CP-NOBODY")
    server.wait_for(r'no charge point "CP-NOBODY" has connected', since=mark)
    assert "CP-OTHER summary" not in server.output(mark)
    await charger.close()
    await other.close()


@charger_test
async def test_the_api_serves_the_verdict_and_the_charger_record_carries_it(in_process):
    server = in_process("--fault", FAULT)
    charger, transaction_id = await _charge_16(server, "CP-1")
    server.wait_for(rf"CP-1 \*\* transaction {transaction_id} ended")
    reply = await http(server, "GET", "/api/chargers/CP-1/summary")
    assert reply.status == 200, reply
    summary = reply.json
    assert summary["charger"] == "CP-1" and summary["scope"] == "charger"
    assert summary["transactions"] == 1 and summary["energyWh"] == 4200
    assert summary["peakW"] == 11000 and summary["faults"] == 1
    assert summary["violations"] == {"energy-decreases": 2}
    assert summary["lastTransaction"]["transactionId"] == transaction_id
    assert summary["lastTransaction"]["energyWh"] == 4200
    assert summary["messagesIn"] > summary["lastTransaction"]["messagesIn"]  # the boot too
    record = (await http(server, "GET", "/api/chargers/CP-1")).json
    assert record["summary"]["lastTransaction"] == summary["lastTransaction"]
    assert (await http(server, "GET", "/api/chargers/CP-NONE/summary")).status == 404
    assert (await http(server, "POST", "/api/chargers/CP-1/summary", body={})).status == 405
    ((line, sample),) = exchanges(block(API_SUMMARY))  # api.md's sample is this answer
    assert line.endswith(" $API/api/chargers/CP-1/summary")
    shown = sample_json(sample)
    shown["durationS"] = summary["durationS"]  # the only number that varies from run to run
    assert differences(shown, summary) == [], summary
    await charger.close()


def test_at_exit_each_charger_that_connected_gets_its_verdict(in_process, tmp_path):
    log = tmp_path / "session.jsonl"
    server = in_process("--log", str(log), "--no-http")

    async def session():
        charger, _ = await _charge_16(server, "CP-1")
        idle = await booted_charger(server, "CP-IDLE")
        await charger.close()
        await idle.close()

    run(session())
    assert server.stop() == 0
    server.wait_for(r"CP-1 \*\* at exit: 1 transaction ended \(4\.2 kWh, peak 11\.0 kW\); ")
    server.wait_for(r"CP-IDLE \*\* at exit: 0 transactions ended; \d+ messages in, \d+ out; ")
    exits = {record["charger"]: record for record in read_transcript(log)
             if record.get("event") == "summary" and record["scope"] == "exit"}
    assert set(exits) == {"CP-1", "CP-IDLE"}
    assert exits["CP-1"]["transactions"] == 1 and exits["CP-1"]["energyWh"] == 4200
    assert exits["CP-IDLE"]["transactions"] == 0 and exits["CP-IDLE"]["energyWh"] is None
    assert exits["CP-IDLE"]["messagesIn"] == 2  # BootNotification, DataTransfer.conf


@pytest.mark.slow(7)
def test_the_page_shows_the_verdict_as_text_whatever_the_charger_id(in_process):
    browser = headless_browser()
    hostile = '<img src=x onerror="document.title=1">'
    server = in_process()

    async def session():
        charger, _ = await _charge_16(server, hostile)
        await charger.close()

    def shown(script):  # read in one go: a card's parts are redrawn whenever its charger changes
        return browser.execute_script(script)

    try:
        run(session())
        server.wait_for(r"\*\* transaction \d+ ended: 4\.2 kWh")
        browser.get(f"http://127.0.0.1:{http_port(server)}/")
        verdicts = "return [...document.querySelectorAll('section.card .verdict')]" \
            ".map((block) => block.textContent).join('|')"
        text = wait_in_browser(
            browser, lambda: "transaction 1 ended" in shown(verdicts) and shown(verdicts),
            "the verdict block",
        )
        assert "summary: 1 transaction ended (4.2 kWh, peak 11.0 kW)" in text, text
        assert "transaction 1 ended: 4.2 kWh in " in text, text
        title = shown("return document.querySelector('section.card h3').firstChild.textContent")
        assert title == hostile
        assert shown("return document.querySelectorAll('img').length") == 0
        assert browser.title != "1"
    finally:
        browser.quit()


@charger_test
async def test_readings_at_the_limits_of_numbers_still_make_a_verdict(in_process):
    """Two transactions without meterStart and meterStop (off-spec: the energy comes from the
    readings) whose energies overflow the float's range in opposite directions: the lines say inf
    and nan, the records null; the charger is answered throughout."""
    server = in_process("--no-http")
    charger = await booted_charger(server, "CP-1")
    for first, last, energy in (("-1.7e308", "1.7e308", "inf"), ("1.7e308", "-1.7e308", "-inf")):
        started = await charger.call("StartTransaction", {"connectorId": 1, "idTag": "T"})
        transaction_id = started.payload["transactionId"]
        for reading in (first, last):
            sample = _meter_values(transaction_id, reading, "1.7e308")
            assert (await charger.call("MeterValues", sample)).type_id == 3
        stopped = {"transactionId": transaction_id, "timestamp": NOW}
        assert (await charger.call("StopTransaction", stopped)).type_id == 3
        server.wait_for(
            rf"CP-1 \*\* transaction {transaction_id} ended: {energy} Wh in \d+ s, "
            r"peak 1\.7e\+305 kW; "
        )
    server.type("summary")
    server.wait_for(r">> CP-1 summary: 2 transactions ended \(nan Wh, peak 1\.7e\+305 kW\); ")
    reply = await charger.call("Heartbeat", {})
    assert reply.type_id == 3
    record = server.call_in_loop(mock.charger_verdict, server.system.states["CP-1"])
    assert record["energyWh"] is None and record["peakW"] == 1.7e308
    assert server.system.states["CP-1"].tally.last["energyWh"] is None
    await charger.close()
