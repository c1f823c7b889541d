"""What the other 2.0.1 flows' replies say, in words (issue 22, item 6): display messages,
monitoring, customer information, installed certificates, cleared profiles and transaction status
each get one `**` line (the guide's table shows each, checked here); a composite schedule longer
than the periods kept says how many more; the line volume of forgotten reports and of `variables`
is bounded.
"""

import asyncio
import re
from pathlib import Path

import ocpp_mock_server as mock
from conftest import Charger, EventStream, assert_valid, charger_test, http

GUIDE = Path(__file__).resolve().parent.parent / "docs" / "guide.md"
NOW = "2026-12-03T12:00:00.000Z"

MONITOR_SET = {"id": 7, "status": "Accepted", "type": "Delta", "severity": 8,
               "component": {"name": "EVSE", "evse": {"id": 1}},
               "variable": {"name": "AvailabilityState"}}

# What is typed, what the station answers, and the line the server says (as the guide shows it).
FLOWS = (
    ("SetDisplayMessage", {"status": "Accepted"},
     'set display message 1 (NormalCycle, "Hello from the OCPP Mock Server"): Accepted'),
    ("ClearDisplayMessage", {"status": "Unknown"}, "clear display message 1: Unknown"),
    ("SetVariableMonitoring", {"setMonitoringResult": [MONITOR_SET]},
     "SetVariableMonitoring EVSE@1.AvailabilityState (Delta, severity 8): Accepted, "
     "monitor id 7"),
    ("ClearVariableMonitoring", {"clearMonitoringResult": [{"status": "NotFound", "id": 1}]},
     "ClearVariableMonitoring monitor 1: NotFound"),
    ("SetMonitoringBase", {"status": "NotSupported"}, "set monitoring base All: NotSupported"),
    ("SetMonitoringLevel", {"status": "Rejected", "statusInfo": {"reasonCode": "OutOfRange"}},
     'set monitoring level 8 (events of severity 0 to 8 reported): Rejected ("OutOfRange")'),
    ("CustomerInformation requestId=5", {"status": "Accepted"},
     "customer information request 5 (report): Accepted"),
    ("ClearChargingProfile", {"status": "Unknown"}, "clear all charging profiles: Unknown"),
    ("ClearChargingProfile chargingProfileId=3", {"status": "Accepted"},
     "clear charging profile 3: Accepted"),
    ("GetTransactionStatus", {"messagesInQueue": False}, "all transactions: no messages queued"),
    ("GetTransactionStatus transactionId=T-1", {"ongoingIndicator": True, "messagesInQueue": True},
     'transaction "T-1": ongoing, messages still queued'),
)


def _guide_block(first: str) -> list[str]:
    """The lines, without their times, of the guide's text block whose first line has
    ``first``."""
    for block in GUIDE.read_text(encoding="utf-8").split("```text\n")[1:]:
        lines = block.split("```")[0].splitlines()
        if first in lines[0]:
            return [line.split(" ", 1)[1] for line in lines]
    raise AssertionError("no block in the guide begins with " + first)


async def _station(server) -> Charger:
    station = await Charger.connect(server.url, "CS-1", subprotocols=("ocpp2.0.1",))
    reply = await station.call("BootNotification", {
        "chargingStation": {"model": "Hand-1", "vendorName": "Test"}, "reason": "PowerUp"})
    assert reply.payload["status"] == "Accepted", reply
    return station


async def _answered(server, station: Charger, typed: str, reply: dict):
    """``typed`` at the console: its CALL and ``reply`` both valid by the 2.0.1 schemas."""
    action = typed.split()[0]
    server.type(typed)
    call = await station.expect_call(action)
    assert_valid(action + "Request", call.payload, "2.0.1")
    assert_valid(action + "Response", reply, "2.0.1")
    await station.answer(call, reply)
    return call


async def _notify(station: Charger, action: str, **payload):
    payload.setdefault("generatedAt", NOW)
    assert_valid(action + "Request", payload, "2.0.1")
    return await station.call(action, payload)


@charger_test
async def test_each_flow_says_what_the_station_answered_in_a_line_the_guide_shows(in_process):
    """Each flow's reply is one `**` line in words, as the guide's table shows it; the
    CustomerInformation line comes with its requestId still matched to the report."""
    guide = GUIDE.read_text(encoding="utf-8")
    server = in_process()
    station = await _station(server)
    for typed, reply, line in FLOWS:
        assert f"`{typed}`" in guide and f"`CS-1 ** {line}`" in guide, (typed, line)
        mark = server.mark()
        await _answered(server, station, typed, reply)
        server.wait_for(r"CS-1 \*\* " + re.escape(line) + "$", since=mark)
    mark = server.mark()
    await _notify(station, "NotifyCustomerInformation", requestId=5, seqNo=0, data="none")
    server.wait_for(r"NotifyCustomerInformation requestId 5: 1 part, 1 text:", since=mark)
    assert "answers no request" not in server.output(mark), server.output(mark)
    await station.close()


@charger_test
async def test_installed_certificates_are_listed_bounded_and_ours_are_named(in_process,
                                                                            monkeypatch):
    """Each certificate's type and serialNumber (at most MAX_CERTIFICATES_LISTED, then a count);
    the one the station took from this server (InstallCertificate) is named so, however its
    serialNumber is spelled; the list is still kept for DeleteCertificate."""
    monkeypatch.setattr(mock, "MAX_CERTIFICATES_LISTED", 2)
    server = in_process()
    station = await _station(server)
    await _answered(server, station, "InstallCertificate", {"status": "Accepted"})
    server.wait_for(r"CS-1 \*\* certificate taken: ")
    ours = mock.certificate_hash_data(mock.DEMO_CERTIFICATE)
    spelled = dict(ours, serialNumber="0" + ours["serialNumber"].upper())
    other = dict(ours, serialNumber="1f")
    chains = [{"certificateType": "V2GRootCertificate", "certificateHashData": other},
              {"certificateType": "CSMSRootCertificate", "certificateHashData": spelled},
              {"certificateType": "MORootCertificate", "certificateHashData": other}]
    mark = server.mark()
    await _answered(server, station, "GetInstalledCertificateIds",
                    {"status": "Accepted", "certificateHashDataChain": chains})
    server.wait_for(r"CS-1 \*\*   \.\.\. and 1 more$", since=mark)
    said = [line.split(" ** ", 1)[1] for line in server.output(mark).splitlines()
            if " ** " in line and "ready: " not in line]
    assert said == ["installed certificates: Accepted, 3 certificates:",
                    "  V2GRootCertificate serialNumber 1f",
                    f"  CSMSRootCertificate serialNumber {spelled['serialNumber']} (installed or "
                    "signed by this server)",
                    "  ... and 1 more"], server.output(mark)
    kept = server.call_in_loop(lambda: server.system.states["CS-1"].certificate_ids)
    assert kept[0] == other and len(kept) == 3
    mark = server.mark()
    await _answered(server, station, "GetInstalledCertificateIds", {
        "status": "Accepted", "certificateHashDataChain": [
            {"certificateType": "CSMSRootCertificate", "certificateHashData": ours},
            {"certificateType": "V2GRootCertificate", "certificateHashData": other}]})
    server.wait_for(r"CS-1 \*\*   V2GRootCertificate serialNumber 1f$", since=mark)
    printed = [line.split(" ", 1)[1] for line in server.output(mark).splitlines()]
    for line in _guide_block("CS-1 ** installed certificates:"):
        assert line in printed, (line, server.output(mark))
    await station.close()


@charger_test
async def test_a_schedule_longer_than_the_periods_kept_says_how_many_more(in_process):
    server = in_process()
    station = await _station(server)
    periods = [{"startPeriod": 60 * number, "limit": 16.0} for number in range(30)]
    mark = server.mark()
    await _answered(server, station, "GetCompositeSchedule", {"status": "Accepted", "schedule": {
        "evseId": 1, "duration": 3600, "scheduleStart": NOW, "chargingRateUnit": "A",
        "chargingSchedulePeriod": periods}})
    server.wait_for(r"CS-1 \*\*   \.\.\. and 6 more \(at most 24 periods are kept and shown\)$",
                    since=mark)
    rows = re.findall(r"\*\* +\d+ s +16 A", server.output(mark))
    assert len(rows) == mock.SCHEDULE_PERIODS_KEPT == 24
    await station.close()


@charger_test
async def test_forgotten_reports_after_the_first_are_counted_and_said_once(in_process,
                                                                           monkeypatch):
    """Ten unfinished requestIds: the first one forgotten is a line, the next five are counted,
    and the count is said when a report finishes."""
    monkeypatch.setattr(mock, "FORGOTTEN_QUIET_SECONDS", 600.0)
    server = in_process()
    station = await _station(server)
    mark = server.mark()
    for request_id in range(1, 11):
        await _notify(station, "NotifyCustomerInformation", requestId=request_id, seqNo=0,
                      tbc=True, data="part")
    await _notify(station, "NotifyCustomerInformation", requestId=10, seqNo=1, data="last")
    server.wait_for(r"CS-1 !! 5 more Notify\.\.\. requestIds still coming \(tbc true\) were "
                    r"forgotten since: at most 4 are assembled at a time$", since=mark)
    forgotten = re.findall(r"was still coming", server.output(mark))
    assert len(forgotten) == 1, server.output(mark)
    server.wait_for(r"NotifyCustomerInformation requestId 10: 2 parts", since=mark)
    await station.close()


@charger_test
async def test_variables_lists_at_most_its_cap_and_says_how_to_narrow_it(in_process,
                                                                         monkeypatch):
    monkeypatch.setattr(mock, "MAX_VARIABLES_LISTED", 3)
    server = in_process()
    station = await _station(server)
    report = [{"component": {"name": "Controller"}, "variable": {"name": f"Var{number}"},
               "variableAttribute": [{"type": "Actual", "value": str(number)}]}
              for number in range(5)]
    await _notify(station, "NotifyReport", requestId=1, seqNo=0, reportData=report)
    server.wait_for(r"NotifyReport requestId 1: 1 part, 5 variables")
    mark = server.mark()
    server.type("variables")
    server.wait_for(r">> \.\.\. and 2 more: narrow it with variables TEXT$", since=mark)
    listed = re.findall(r">>   Controller\.Var\d", server.output(mark))
    assert len(listed) == 3, server.output(mark)
    mark = server.mark()
    server.type("variables var4")
    server.wait_for(r">>   Controller\.Var4 = 4", since=mark)
    assert "more: narrow it" not in server.output(mark)
    await station.close()


@charger_test
async def test_api_command_lines_of_a_reply_come_as_log_events_as_api_md_says(in_process):
    """POST /api/command `set ...`: its `lines` are [] and `call.result` the reply's JSON; the
    result's `**` line is a `log` event on /api/events (docs/api.md)."""
    api_doc = (GUIDE.parent / "api.md").read_text(encoding="utf-8")
    assert "as `log` events on `GET /api/events`" in api_doc
    server = in_process()
    station = await _station(server)
    stream = await EventStream.open(server, "?charger=CS-1")
    posted = asyncio.ensure_future(http(server, "POST", "/api/command",
                                        {"line": "set OCPPCommCtrlr.HeartbeatInterval=30"}))
    result = {"setVariableResult": [{
        "attributeStatus": "Accepted", "component": {"name": "OCPPCommCtrlr"},
        "variable": {"name": "HeartbeatInterval"}}]}
    call = await station.expect_call("SetVariables")
    assert_valid("SetVariablesResponse", result, "2.0.1")
    await station.answer(call, result)
    reply = await posted
    assert reply.status == 200 and reply.json["lines"] == [], reply.json
    assert reply.json["call"]["result"] == result
    await stream.until(lambda event: event["type"] == "log" and event["text"]
                       == "SetVariables OCPPCommCtrlr.HeartbeatInterval=30: Accepted")
    stream.close()
    await station.close()
