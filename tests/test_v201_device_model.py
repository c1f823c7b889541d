"""OCPP 2.0.1 device model (issue 22, item 1) and the Notify... messages sent in parts (item 6):
what a station reports is kept, assembled in seqNo order, shown, listed, searched; `set` and `get`
send SetVariables and GetVariables in short spellings; a GetBaseReport answered while Pending."""

import asyncio
import json
import re
from pathlib import Path

import pytest

import ocpp_mock_server as mock
from conftest import (
    Charger,
    InProcessDemo,
    assert_v201_valid,
    charger_test,
    headless_browser,
    http,
    http_port,
    run,
    wait_in_browser,
)

NOW = "2026-12-03T12:00:00.000Z"
HEARTBEAT = {"component": {"name": "OCPPCommCtrlr"}, "variable": {"name": "HeartbeatInterval"}}


def report_entry(component: dict, variable: str, value: str, kind: str = "Actual",
                 data_type: str = "integer") -> dict:
    return {"component": component, "variable": {"name": variable},
            "variableAttribute": [{"type": kind, "value": value, "mutability": "ReadWrite"}],
            "variableCharacteristics": {"dataType": data_type, "supportsMonitoring": False}}


async def booted_station(server, station_id: str = "CS-1", status: str = "Accepted") -> Charger:
    station = await Charger.connect(server.url, station_id, subprotocols=("ocpp2.0.1",))
    reply = await station.call("BootNotification", {
        "chargingStation": {"model": "Hand-1", "vendorName": "Test"}, "reason": "PowerUp"})
    assert reply.payload["status"] == status, reply
    return station


async def answered(station: Charger, action: str, reply: dict):
    """The server's next CALL of ``action``, valid by the 2.0.1 schema, answered with ``reply``."""
    call = await station.expect_call(action)
    assert_v201_valid(action + "Request", call.payload)
    await station.answer(call, reply)
    return call


async def notify(station: Charger, action: str, **payload):
    """A Notify... part, valid by its schema; the server's reply, checked by the schema too."""
    payload.setdefault("generatedAt", NOW)
    assert_v201_valid(action + "Request", payload)
    reply = await station.call(action, payload)
    assert reply[0] == 3, reply
    assert_v201_valid(action + "Response", reply.payload)
    return reply


def lines_after(server, mark: int, pattern: str) -> list[str]:
    return [line for line in server.output(mark).splitlines() if re.search(pattern, line)]


@charger_test
async def test_a_report_in_parts_is_assembled_in_order_and_its_variables_listed(in_process):
    server = in_process()
    station = await booted_station(server)
    mark = server.mark()
    server.type("GetBaseReport")
    call = await answered(station, "GetBaseReport", {"status": "Accepted"})
    request_id = call.payload["requestId"]
    evse = {"name": "EVSE", "evse": {"id": 1}}
    await notify(station, "NotifyReport", requestId=request_id, seqNo=0, tbc=True, reportData=[
        report_entry(HEARTBEAT["component"], "HeartbeatInterval", "60"),
        report_entry(evse, "Power", "22000", kind="MaxSet", data_type="decimal")])
    await notify(station, "NotifyReport", requestId=request_id, seqNo=1, reportData=[
        report_entry({"name": "Controller", "instance": "main"}, "Name", "demo", "Actual",
                     "string")])
    server.wait_for(rf"CS-1 \*\* NotifyReport requestId {request_id}: 2 parts, 3 variables",
                    since=mark)
    mark = server.mark()
    server.type("variables heartbeat")
    server.wait_for(r"OCPPCommCtrlr.HeartbeatInterval = 60  \(integer, ReadWrite; NotifyReport\)",
                    since=mark)
    assert '3 variable attributes kept, 1 match "heartbeat"' in server.output(mark)
    server.type("variables EVSE@1")
    server.wait_for(r"  EVSE@1\.Power/MaxSet = 22000  \(decimal, ReadWrite; NotifyReport\)",
                    since=mark)
    server.type("variables controller[MAIN]")
    server.wait_for(r"  Controller\[main\]\.Name = demo", since=mark)
    await station.close()


# Each flow as docs/guide.md's "Device model (2.0.1)" shows it: (typed line, a line it prints).
DEMO_FLOWS = (
    ("GetBaseReport", r"NotifyReport requestId \d+: 3 parts, 9 variables \(`variables` lists "
                      r"what is kept\)"),
    ("variables heartbeat", r"  OCPPCommCtrlr\.HeartbeatInterval = 60  \(integer, ReadWrite; "
                            r"NotifyReport\)"),
    ("set OCPPCommCtrlr.HeartbeatInterval=30 SecurityCtrlr.Identity=CP-2",
     r"SetVariables SecurityCtrlr\.Identity=CP-2: Rejected \(ReadOnly\)"),
    ("get OCPPCommCtrlr.HeartbeatInterval",
     r"GetVariables OCPPCommCtrlr\.HeartbeatInterval: Accepted = 30"),
    ("SetVariableMonitoring", r"SetVariableMonitoring\.conf .*\"Accepted\""),
    ("GetMonitoringReport", r"  monitor 1 on EVSE@1\.AvailabilityState: Delta 1, severity 8"),
    ("SetDisplayMessage", r"SetDisplayMessage\.conf \{\"status\":\"Accepted\"\}"),
    ("GetDisplayMessages", r"  message 1 \(NormalCycle\): \"Hello from the OCPP Mock Server\""),
    ("CustomerInformation", r"  \"idToken \w+: the demo charger keeps no customer data\""),
)


GUIDE = Path(__file__).resolve().parent.parent / "docs" / "guide.md"
API_DOC = GUIDE.parent / "api.md"


def guide_sample() -> list[str]:
    """The lines of the guide's "Device model (2.0.1)" sample, without their times."""
    section = GUIDE.read_text(encoding="utf-8").split("### Device model (2.0.1)")[1]
    block = section.split("```text\n")[1].split("```")[0]
    return [line.split(" ", 1)[1] for line in block.splitlines()]


def without_times(output: str, station: str) -> list[str]:
    return [line.split(" ", 1)[1].replace(station, "CS-1") for line in output.splitlines()
            if re.match(r"\d\d:\d\d:\d\d\.\d{3} ", line)]


def test_the_demo_charger_takes_part_in_every_device_model_flow(in_process):
    server = in_process()
    demo = InProcessDemo(server.url + "/CS-DEMO", "--ocpp", "2.0.1")
    try:
        server.wait_for(r"CS-DEMO <- StatusNotification")
        for line, shown in DEMO_FLOWS:
            mark = server.mark()
            server.type(line)
            server.wait_for(shown, since=mark)
        printed = without_times(server.output(), "CS-DEMO")
        for line in guide_sample():  # the guide's sample is what this run printed
            assert line in printed, f"not printed: {line!r}\n{server.output()}"
        assert not re.search(r"never came|came again|answers no request|check ",
                             server.output()), server.output()
    finally:
        demo.stop()
    assert "Traceback" not in demo.stdout, demo.stdout


def monitor_entry(monitor_id: int, variable: str = "AvailabilityState") -> dict:
    return {"component": {"name": "EVSE", "evse": {"id": 1}}, "variable": {"name": variable},
            "variableMonitoring": [{"id": monitor_id, "transaction": False, "value": 1.0,
                                    "type": "Delta", "severity": 8}]}


@charger_test
async def test_a_gap_and_a_repeat_are_said_once_and_the_parts_shown_in_seq_no_order(in_process):
    server = in_process()
    station = await booted_station(server)
    server.type("GetMonitoringReport")
    call = await answered(station, "GetMonitoringReport", {"status": "Accepted"})
    request_id, mark = call.payload["requestId"], server.mark()
    for seq_no, monitor_id in ((2, 3), (0, 1), (0, 1), (0, 1), (5, 6)):  # 1, 3 and 4 never come
        await notify(station, "NotifyMonitoringReport", requestId=request_id, seqNo=seq_no,
                     tbc=seq_no != 5, monitor=[monitor_entry(monitor_id)])
    server.wait_for(r"  monitor 6 on EVSE@1\.AvailabilityState: Delta 1\.0, severity 8",
                    since=mark)
    repeats = lines_after(server, mark, r"!! NotifyMonitoringReport requestId \d+: part seqNo 0 "
                                        r"came again; the repeat is ignored")
    assert len(repeats) == 1, server.output(mark)
    gaps = lines_after(server, mark, r"!! NotifyMonitoringReport requestId \d+: 3 part\(s\) "
                                     r"never came \(seqNo 1, 3, 4\)")
    assert len(gaps) == 1, server.output(mark)
    shown = lines_after(server, mark, r"\*\*   monitor \d")
    assert [line.split("monitor ")[1][0] for line in shown] == ["1", "3", "6"], shown
    assert "3 parts, 3 monitored variables:" in server.output(mark)
    await notify(station, "NotifyMonitoringReport", requestId=request_id, seqNo=6,
                 monitor=[monitor_entry(7)])
    server.wait_for(r"requestId \d+: a part after the last one \(tbc false\); ignored", since=mark)
    await station.close()


@charger_test
async def test_a_notify_for_a_request_id_never_asked_for_is_told_and_kept(in_process):
    server = in_process()
    station = await booted_station(server)
    mark = server.mark()
    await notify(station, "NotifyCustomerInformation", requestId=77, seqNo=0, tbc=True,
                 data="customer 1: ")
    await notify(station, "NotifyCustomerInformation", requestId=77, seqNo=1, data="no data")
    server.wait_for(r"  \"customer 1: no data\"", since=mark)
    assert lines_after(server, mark, r"!! NotifyCustomerInformation requestId 77 answers no "
                                     r"request this server sent and the station accepted")
    await station.close()


@charger_test
async def test_display_messages_without_seq_no_are_assembled_in_the_order_they_came(in_process):
    server = in_process()
    station = await booted_station(server)
    server.type("GetDisplayMessages")
    call = await answered(station, "GetDisplayMessages", {"status": "Accepted"})
    mark = server.mark()

    def message(message_id: int, content: str) -> dict:
        return {"id": message_id, "priority": "InFront", "state": "Charging",
                "message": {"format": "UTF8", "content": content}}

    for number, tbc in ((2, True), (1, False)):
        await station.call("NotifyDisplayMessages", {
            "requestId": call.payload["requestId"], "tbc": tbc,
            "messageInfo": [message(number, f"line {number}\n<b>")]})
    server.wait_for(r"NotifyDisplayMessages requestId \d+: 2 parts, 2 messages:", since=mark)
    shown = lines_after(server, mark, r"\*\*   message \d")
    assert [line.split("**   ")[1] for line in shown] == [
        'message 2 (InFront, Charging): "line 2\\n<b>"',
        'message 1 (InFront, Charging): "line 1\\n<b>"'], shown
    await station.close()


def test_the_short_spellings_make_the_payloads_they_say():
    command = mock.parse_command(
        'set OCPPCommCtrlr.HeartbeatInterval=30 Connector[main]@1/2.AvailabilityState/target='
        '"Out of order" Controller.Limit[max]/MaxSet=a=b', version_of=lambda target: mock.OCPP201)
    assert (command.word, command.action) == ("call", "SetVariables")
    assert command.payload == {"setVariableData": [
        {"component": {"name": "OCPPCommCtrlr"}, "variable": {"name": "HeartbeatInterval"},
         "attributeValue": "30"},
        {"component": {"name": "Connector", "instance": "main",
                       "evse": {"id": 1, "connectorId": 2}},
         "variable": {"name": "AvailabilityState"}, "attributeType": "Target",
         "attributeValue": "Out of order"},
        {"component": {"name": "Controller"}, "variable": {"name": "Limit", "instance": "max"},
         "attributeType": "MaxSet", "attributeValue": "a=b"}]}
    assert_v201_valid("SetVariablesRequest", command.payload)
    command = mock.parse_command("@CS-9 get EVSE@1.Power/MaxSet Station[x y].Name",
                                 version_of=lambda target: mock.OCPP201)
    assert (command.target, command.action) == ("CS-9", "GetVariables")
    assert command.payload == {"getVariableData": [
        {"component": {"name": "EVSE", "evse": {"id": 1}}, "variable": {"name": "Power"},
         "attributeType": "MaxSet"},
        {"component": {"name": "Station", "instance": "x y"}, "variable": {"name": "Name"}}]}


def test_a_short_form_that_cannot_work_is_one_line_that_says_why():
    def refusal(line: str, version=mock.OCPP201) -> str:
        with pytest.raises(mock.CommandError) as refused:
            mock.parse_command(line, version_of=lambda target: version)
        return str(refused.value)

    assert "has no =value" in refusal("set A.B")
    assert "is not Component[instance]@evse/connector.Variable[instance]/Type" in refusal(
        "set HeartbeatInterval=30")
    assert "attributeType 'Bogus' is none of Actual, Target, MinSet, MaxSet" in refusal(
        "set A.B/Bogus=1")
    assert refusal("get").startswith("usage: get Component.Variable")
    assert refusal('set A.B="open').startswith("usage: set Component.Variable=value")
    assert refusal("set A.B=" + "x" * 1001).startswith("SetVariables not sent: ")


@charger_test
async def test_set_and_get_report_each_result_on_its_own_line_and_keep_what_was_accepted(
        in_process):
    server = in_process()
    station = await booted_station(server)
    mark = server.mark()
    server.type("set OCPPCommCtrlr.HeartbeatInterval=30 SecurityCtrlr.Identity=X "
                "TxCtrlr.EVConnectionTimeOut=90")
    call = await station.expect_call("SetVariables")
    assert_v201_valid("SetVariablesRequest", call.payload)
    heartbeat, identity, timeout = call.payload["setVariableData"]
    reply = {"setVariableResult": [
        {"attributeStatus": "Accepted", "component": heartbeat["component"],
         "variable": heartbeat["variable"]},
        {"attributeStatus": "Rejected", "component": identity["component"],
         "variable": identity["variable"],
         "attributeStatusInfo": {"reasonCode": "ReadOnly", "additionalInfo": "set at boot"}},
        {"attributeStatus": "RebootRequired", "component": timeout["component"],
         "variable": timeout["variable"]}]}
    assert_v201_valid("SetVariablesResponse", reply)
    await station.answer(call, reply)
    server.wait_for(r"CS-1 \*\* SetVariables TxCtrlr\.EVConnectionTimeOut=90: RebootRequired",
                    since=mark)
    assert lines_after(server, mark, r"\*\* SetVariables OCPPCommCtrlr\.HeartbeatInterval=30: "
                                     r"Accepted$")
    assert lines_after(server, mark, r"\*\* SetVariables SecurityCtrlr\.Identity=X: Rejected "
                                     r"\(ReadOnly: set at boot\)$")
    server.type("get OCPPCommCtrlr.HeartbeatInterval Nope.Nothing")
    call = await station.expect_call("GetVariables")
    assert_v201_valid("GetVariablesRequest", call.payload)
    await station.answer(call, {"getVariableResult": [
        {"attributeStatus": "Accepted", "attributeValue": "31", **HEARTBEAT},
        {"attributeStatus": "UnknownComponent", **call.payload["getVariableData"][1]}]})
    server.wait_for(r"\*\* GetVariables Nope\.Nothing: UnknownComponent$", since=mark)
    assert lines_after(server, mark, r"\*\* GetVariables OCPPCommCtrlr\.HeartbeatInterval: "
                                     r"Accepted = 31$")
    mark = server.mark()
    server.type("variables")
    server.wait_for(r"CS-1: 2 variable attributes kept$", since=mark)
    server.wait_for(r"  OCPPCommCtrlr\.HeartbeatInterval = 31  \(GetVariables\)", since=mark)
    server.wait_for(r"  TxCtrlr\.EVConnectionTimeOut = 90  \(SetVariables \(RebootRequired\)\)",
                    since=mark)
    assert "Identity" not in server.output(mark) and "Nope" not in server.output(mark)
    await station.close()


@charger_test
async def test_the_api_lists_a_station_s_variables_searched_and_after_it_has_gone(in_process):
    server = in_process()
    station = await booted_station(server)
    server.type("GetReport")
    call = await answered(station, "GetReport", {"status": "Accepted"})
    await notify(station, "NotifyReport", requestId=call.payload["requestId"], seqNo=0,
                 reportData=[report_entry(HEARTBEAT["component"], "HeartbeatInterval", "60"),
                             report_entry({"name": "EVSE", "evse": {"id": 1, "connectorId": 1}},
                                          "Power", "7400", "MaxSet", "decimal")])
    await station.close()
    server.wait_for(r"CS-1 \*\* disconnected")
    reply = await http(server, "GET", "/api/chargers/CS-1/variables?q=POWER")
    assert reply.status == 200, reply
    assert reply.json == {"id": "CS-1", "query": "POWER", "kept": 2, "cap": 1000, "full": False,
                          "variables": [{
                              "name": "EVSE@1/1.Power/MaxSet",
                              "component": {"name": "EVSE", "evse": {"id": 1, "connectorId": 1}},
                              "variable": {"name": "Power"}, "attributeType": "MaxSet",
                              "value": "7400", "mutability": "ReadWrite", "dataType": "decimal",
                              "unit": None, "source": "NotifyReport"}]}
    documented = API_DOC.read_text(encoding="utf-8").split("/variables?q=TEXT`")[1]
    assert json.loads(documented.split("```json\n")[1].split("```")[0]) == reply.json
    assert len((await http(server, "GET", "/api/chargers/CS-1/variables")).json["variables"]) == 2
    missing = await http(server, "GET", "/api/chargers/CS-404/variables")
    assert missing.status == 404 and "CS-404" in missing.json["error"]
    mark = server.mark()
    server.type("@CS-1 variables heart")  # gone, but remembered
    server.wait_for(r"  OCPPCommCtrlr\.HeartbeatInterval = 60", since=mark)


@pytest.mark.parametrize("strict", [False, True])
@charger_test
async def test_a_get_base_report_sent_while_pending_is_answered_and_its_report_taken(
        in_process, strict):
    server = in_process("--boot-status", "Pending", *(["--strict"] if strict else []))
    station = await booted_station(server, status="Pending")
    mark = server.mark()
    server.type("GetBaseReport")
    call = await answered(station, "GetBaseReport", {"status": "Accepted"})
    await notify(station, "NotifyReport", requestId=call.payload["requestId"], seqNo=0,
                 reportData=[report_entry(HEARTBEAT["component"], "HeartbeatInterval", "60")])
    server.wait_for(r"NotifyReport requestId \d+: 1 part, 1 variable", since=mark)
    unasked = await station.call("Heartbeat", {})  # not asked for: still refused or flagged
    if strict:
        assert unasked[0] == 4 and unasked[2] == "SecurityError", unasked
    else:
        server.wait_for(r"check call-before-boot: sent Heartbeat while its boot is Pending",
                        since=mark)
    assert "NotifyReport while" not in server.output(mark)
    await station.close()


@charger_test
async def test_what_a_station_reports_is_bounded_and_the_bound_said_once(in_process, monkeypatch):
    monkeypatch.setattr(mock, "MAX_DEVICE_VARIABLES", 2)
    monkeypatch.setattr(mock, "MAX_NOTIFY_ITEMS", 3)
    server = in_process()
    station = await booted_station(server)
    server.type("GetBaseReport")
    call = await answered(station, "GetBaseReport", {"status": "Accepted"})
    mark = server.mark()
    for seq_no in range(2):
        await notify(station, "NotifyReport", requestId=call.payload["requestId"], seqNo=seq_no,
                     tbc=seq_no == 0, reportData=[
                         report_entry({"name": f"Ctrlr{seq_no}"}, f"V{index}", "1")
                         for index in range(3)])
    server.wait_for(r"NotifyReport requestId \d+: 2 parts, 6 variables", since=mark)
    assert len(lines_after(server, mark, r"!! more than 2 variable attributes reported; the "
                                         r"others are not kept")) == 1
    server.type("GetMonitoringReport")
    call = await answered(station, "GetMonitoringReport", {"status": "Accepted"})
    for seq_no in range(2):
        await notify(station, "NotifyMonitoringReport", requestId=call.payload["requestId"],
                     seqNo=seq_no, tbc=seq_no == 0,
                     monitor=[monitor_entry(seq_no * 3 + index) for index in range(3)])
    server.wait_for(r"NotifyMonitoringReport requestId \d+: 2 parts, 6 monitored variables:",
                    since=mark)
    assert len(lines_after(server, mark, r"!! NotifyMonitoringReport requestId \d+: over 3 lines "
                                         r"or parts; the others are not shown")) == 1
    assert len(lines_after(server, mark, r"\*\*   monitor \d")) == 3
    model = server.call_in_loop(lambda: server.system.states["CS-1"].device_model)
    assert len(model.variables) == 2 and not model.sequences
    server.type("variables")
    server.wait_for(r"CS-1: 2 variable attributes kept \(the cap of 2 was reached\)", since=mark)
    await station.close()


@charger_test
async def test_at_most_four_reports_are_assembled_at_once_the_oldest_forgotten(in_process):
    server = in_process()
    station = await booted_station(server)
    mark = server.mark()
    for request_id in range(1, 6):
        await notify(station, "NotifyCustomerInformation", requestId=request_id, seqNo=0,
                     tbc=True, data=f"customer {request_id}")
    server.wait_for(r"!! NotifyCustomerInformation requestId 1 was still coming \(tbc true\); "
                    r"forgotten: at most 4 are assembled at a time", since=mark)
    await notify(station, "NotifyCustomerInformation", requestId=5, seqNo=1, data="!")
    server.wait_for(r"\*\*   \"customer 5!\"", since=mark)
    model = server.call_in_loop(lambda: server.system.states["CS-1"].device_model)
    assert sorted(key[1] for key in model.sequences) == [2, 3, 4]
    await station.close()


def test_the_page_has_a_variables_panel_that_shows_them_as_text(in_process):
    server = in_process()
    page = asyncio.run(http(server, "GET", "/")).body.decode("utf-8")
    assert '<form id="variables">' in page and '<pre id="var-list"></pre>' in page
    script = page[page.index("async function showVariables"):]
    script = script[:script.index("\n}\n")]
    assert "/variables?q=" in script and "out.textContent = " in script
    assert "innerHTML" not in script


@charger_test
async def test_set_and_get_on_a_1_6_charger_say_they_are_2_0_1_words(in_process):
    server = in_process()
    charger = await Charger.connect(server.url, "CP-16")
    await charger.boot()
    mark = server.mark()
    server.type("set OCPPCommCtrlr.HeartbeatInterval=30")
    server.type("get OCPPCommCtrlr.HeartbeatInterval")
    server.wait_for(r">> SetVariables is not an OCPP 1\.6 action", since=mark)
    server.wait_for(r">> GetVariables is not an OCPP 1\.6 action", since=mark)
    await charger.no_frame_within(0.2)
    await charger.close()


@charger_test
async def test_a_script_sets_and_gets_in_short_and_expects_their_results(start_server, tmp_path):
    script = tmp_path / "variables.txt"
    script.write_text(
        "set OCPPCommCtrlr.HeartbeatInterval=30\n"
        "expect setVariableResult.0.attributeStatus=Accepted\n"
        "get OCPPCommCtrlr.HeartbeatInterval\n"
        "expect getVariableResult.0.attributeValue=30\n"
    )
    server = start_server("--script", str(script), "--no-boot-data", "--ocpp", "2.0.1")
    station = await booted_station(server)
    await answered(station, "SetVariables", {"setVariableResult": [
        {"attributeStatus": "Accepted", **HEARTBEAT}]})
    await answered(station, "GetVariables", {"getVariableResult": [
        {"attributeStatus": "Accepted", "attributeValue": "30", **HEARTBEAT}]})
    server.wait_for(r"scenario variables\.txt: PASS, 4 of 4 steps passed")
    await station.close()


@pytest.mark.slow(5)
def test_the_page_s_variables_panel_lists_a_station_s_variables_as_text(in_process):
    browser = headless_browser()
    from selenium.webdriver.common.by import By

    server = in_process()
    hostile = '<img src=x onerror="document.title=1">'

    async def report():
        station = await booted_station(server)
        server.type("get OCPPCommCtrlr.HeartbeatInterval Display.Text")
        await answered(station, "GetVariables", {"getVariableResult": [
            {"attributeStatus": "Accepted", "attributeValue": "60", **HEARTBEAT},
            {"attributeStatus": "Accepted", "attributeValue": hostile,
             "component": {"name": "Display"}, "variable": {"name": "Text"}}]})
        server.wait_for(r"GetVariables Display\.Text: Accepted")
        await station.close()

    run(report())
    try:
        browser.get(f"http://127.0.0.1:{http_port(server)}/")
        browser.find_element(By.ID, "var-query").send_keys("t")
        browser.find_element(By.CSS_SELECTOR, "#variables button").click()
        listing = wait_in_browser(browser, lambda: browser.find_element(By.ID, "var-list").text,
                                  "the variables listed")
        assert listing.splitlines() == [
            f"Display.Text = {hostile}  (GetVariables)",
            "OCPPCommCtrlr.HeartbeatInterval = 60  (GetVariables)"], listing
        browser.find_element(By.ID, "var-charger").send_keys("CS-404")
        browser.find_element(By.CSS_SELECTOR, "#variables button").click()
        wait_in_browser(browser, lambda: "CS-404" in browser.find_element(By.ID, "var-list").text,
                        "the 404 shown")
        assert not browser.find_elements(By.CSS_SELECTOR, "#var-list img")
        assert browser.title != "1"
    finally:
        browser.quit()
