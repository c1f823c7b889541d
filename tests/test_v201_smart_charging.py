"""Smart charging, reservations, local list and cost on an OCPP 2.0.1 station (issue 22, items 5
and 6): what the server sends bare is valid by the official 2.0.1 schemas; what the station
reports back (ReportChargingProfiles in tbc parts, GetCompositeSchedule, NotifyChargingLimit,
NotifyEVChargingNeeds, ReservationStatusUpdate, the replies to ReserveNow, CancelReservation,
SendLocalList, GetLocalListVersion and CostUpdated) is shown in words, bounded per station; the
page draws the composite schedule; the demo charger takes part in each flow, as the guide shows.
"""

import datetime
import json
import re

import pytest

import ocpp_mock_server as mock
from conftest import (
    DEMO_CHARGER,
    Charger,
    InProcessDemo,
    assert_valid,
    charger_test,
    headless_browser,
    http,
    http_port,
    wait_in_browser,
)

NOW = "2026-12-03T12:00:00.000Z"


async def _station(server, station_id: str = "CS-1") -> Charger:
    """A booted 2.0.1 station on a real websocket."""
    station = await Charger.connect(server.url, station_id, subprotocols=("ocpp2.0.1",))
    reply = await station.call("BootNotification", {
        "chargingStation": {"model": "Hand-1", "vendorName": "Test"}, "reason": "PowerUp"})
    assert reply.payload["status"] == "Accepted", reply
    server.wait_for(rf"{station_id} \*\* ready")  # its lines are out: a mark now is after them
    return station


async def _answer(station: Charger, action: str, reply: dict) -> dict:
    """The server's next CALL of ``action``, checked by the official schema, answered with
    ``reply``; its payload."""
    call = await station.expect_call(action)
    assert_valid(action + "Request", call.payload, "2.0.1")
    assert_valid(action + "Response", reply, "2.0.1")
    await station.answer(call, reply)
    return call.payload


def _profile(profile_id: int, limit: float) -> dict:
    return {"id": profile_id, "stackLevel": profile_id,
            "chargingProfilePurpose": "TxDefaultProfile", "chargingProfileKind": "Relative",
            "chargingSchedule": [{
                "id": 1, "chargingRateUnit": "A",
                "chargingSchedulePeriod": [{"startPeriod": 0, "limit": limit}]}]}


@charger_test
async def test_set_charging_profile_bare_and_with_a_short_override_is_valid(start_server):
    """SetChargingProfile bare: TxDefaultProfile 1 on EVSE 1, 16 A from the start; a key=value
    path through the schedule list (one item) sets its unit and limit, still schema-valid."""
    server = start_server("--no-boot-data")
    station = await _station(server)
    server.type("SetChargingProfile")
    bare = await _answer(station, "SetChargingProfile", {"status": "Accepted"})
    assert bare["evseId"] == 1
    profile = bare["chargingProfile"]
    assert profile["chargingProfilePurpose"] == "TxDefaultProfile"
    assert profile["chargingSchedule"][0]["chargingSchedulePeriod"] == [
        {"startPeriod": 0, "limit": 16.0}]
    server.type("SetChargingProfile chargingProfile.chargingSchedule.chargingRateUnit=W "
                "chargingProfile.chargingSchedule.chargingSchedulePeriod.limit=11000")
    changed = await _answer(station, "SetChargingProfile", {"status": "Accepted"})
    schedule = changed["chargingProfile"]["chargingSchedule"][0]
    assert schedule["chargingRateUnit"] == "W"
    assert schedule["chargingSchedulePeriod"] == [{"startPeriod": 0, "limit": 11000}]
    await station.close()


@charger_test
async def test_report_charging_profiles_parts_are_assembled_in_order_per_request(start_server):
    """ReportChargingProfiles parts are kept per requestId in the order they came: two requests
    interleaved, each shown once its tbc-false part is in, its profiles one line each; past
    MAX_NOTIFY_LINES profiles the rest are counted (the Notify... assembler, NOTIFY_KINDS)."""
    server = start_server("--no-boot-data")
    station = await _station(server)
    mark = server.mark()
    parts = [(5, 1, True), (6, 3, True), (5, 2, False), (6, 4, False)]
    for request_id, profile_id, tbc in parts:
        payload = {"requestId": request_id, "chargingLimitSource": "CSO", "evseId": 1,
                   "tbc": tbc, "chargingProfile": [_profile(profile_id, 10.0 + profile_id)]}
        assert_valid("ReportChargingProfilesRequest", payload, "2.0.1")
        reply = await station.call("ReportChargingProfiles", payload)
        assert reply.payload == {}
    server.wait_for(r"ReportChargingProfiles requestId 6: ", since=mark)
    shown = [line.split(" ** ", 1)[1] for line in server.output(mark).splitlines()
             if " ** " in line]
    assert shown == [
        "ReportChargingProfiles requestId 5: 2 parts, 2 profiles:",
        "  EVSE 1, CSO: profile 1 TxDefaultProfile, stack 1, Relative: from 0 s 11 A",
        "  EVSE 1, CSO: profile 2 TxDefaultProfile, stack 2, Relative: from 0 s 12 A",
        "ReportChargingProfiles requestId 6: 2 parts, 2 profiles:",
        "  EVSE 1, CSO: profile 3 TxDefaultProfile, stack 3, Relative: from 0 s 13 A",
        "  EVSE 1, CSO: profile 4 TxDefaultProfile, stack 4, Relative: from 0 s 14 A",
    ], server.output(mark)
    assert re.search(r"CS-1 <- ReportChargingProfiles request 5, EVSE 1, CSO, tbc true: "
                     r"profile 1 TxDefaultProfile", server.output(mark))
    total = mock.MAX_NOTIFY_LINES + 2
    for number in range(total):
        await station.call("ReportChargingProfiles", {
            "requestId": 9, "chargingLimitSource": "CSO", "evseId": 1, "tbc": number < total - 1,
            "chargingProfile": [_profile(number + 1, 16.0)]})
    server.wait_for(rf"CS-1 \*\* ReportChargingProfiles requestId 9: {total} parts, {total} "
                    rf"profiles:$")
    server.wait_for(r"CS-1 \*\*   \.\.\. and 2 more$")
    await station.close()


def test_what_a_station_reports_stays_bounded():
    """At most SCHEDULES_KEPT EVSEs' schedules of SCHEDULE_PERIODS_KEPT periods each (the
    ReportChargingProfiles parts are bounded as every Notify... message is:
    test_v201_reports_in_parts.py)."""
    smart = mock.SmartCharging()
    periods = [{"startPeriod": n * 60, "limit": 16.0} for n in range(100)]
    for evse in range(mock.SCHEDULES_KEPT + 2):
        smart.keep_schedule({"evseId": evse, "chargingRateUnit": "A",
                             "chargingSchedulePeriod": periods})
    assert list(smart.schedules) == list(range(2, mock.SCHEDULES_KEPT + 2))
    assert all(len(record["periods"]) == mock.SCHEDULE_PERIODS_KEPT
               for record in smart.schedules.values())


@charger_test
async def test_composite_schedule_is_a_table_and_is_kept_for_the_page(start_server):
    """GetCompositeSchedule bare (EVSE 1, 3600 s) is valid; an Accepted schedule is shown as a
    small table (start, limit with its unit, phases) and kept: GET /api/chargers/CS-1 lists it
    and a state_changed event names it; a Rejected one is one line."""
    server = start_server("--no-boot-data")
    port = http_port(server)
    station = await _station(server)
    mark = server.mark()
    server.type("GetCompositeSchedule")
    asked = await _answer(station, "GetCompositeSchedule", {"status": "Accepted", "schedule": {
        "evseId": 1, "duration": 3600, "scheduleStart": NOW, "chargingRateUnit": "A",
        "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 16.0},
                                   {"startPeriod": 1800, "limit": 8.5, "numberPhases": 1}]}})
    assert asked == {"evseId": 1, "duration": 3600}
    server.wait_for(r"CS-1 \*\*     1800 s", since=mark)
    table = [line.split(" ** ", 1)[1] for line in server.output(mark).splitlines()
             if " ** " in line]
    assert table == [
        "composite schedule of EVSE 1 from 2026-12-03T12:00:00.000Z, 3600 s, in A:",
        "     start       limit  phases",
        "       0 s        16 A  -",
        "    1800 s       8.5 A  1",
    ], server.output(mark)
    record = (await http(server, "GET", "/api/chargers/CS-1", port=port)).json
    assert record["schedules"] == [{
        "evseId": 1, "scheduleStart": NOW, "duration": 3600, "chargingRateUnit": "A",
        "periods": [[0, 16.0, None], [1800, 8.5, 1]]}]
    mark = server.mark()
    server.type("GetCompositeSchedule evseId=2")
    await _answer(station, "GetCompositeSchedule", {
        "status": "Rejected", "statusInfo": {"reasonCode": "UnknownEVSE"}})
    server.wait_for(r'CS-1 \*\* composite schedule of EVSE 2: Rejected \("UnknownEVSE"\)',
                    since=mark)
    await station.close()


@charger_test
async def test_the_notifications_of_a_station_are_one_line_each(start_server):
    """NotifyChargingLimit, NotifyEVChargingNeeds and ReservationStatusUpdate: one line each, in
    words; each answered valid."""
    server = start_server("--no-boot-data")
    station = await _station(server)
    sent = {
        "NotifyChargingLimit": {"evseId": 1, "chargingLimit": {
            "chargingLimitSource": "EMS", "isGridCritical": True}, "chargingSchedule": [{
                "id": 1, "chargingRateUnit": "W",
                "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 11000.0}]}]},
        "NotifyEVChargingNeeds": {"evseId": 1, "chargingNeeds": {
            "requestedEnergyTransfer": "AC_three_phase", "departureTime": NOW,
            "acChargingParameters": {"energyAmount": 20000, "evMinCurrent": 6,
                                     "evMaxCurrent": 32, "evMaxVoltage": 400}}},
        "ReservationStatusUpdate": {"reservationId": 4, "reservationUpdateStatus": "Expired"},
    }
    for action, payload in sent.items():
        assert_valid(action + "Request", payload, "2.0.1")
        reply = await station.call(action, payload)
        assert_valid(action + "Response", reply.payload, "2.0.1")
    server.wait_for(r"CS-1 <- NotifyChargingLimit EMS limit on EVSE 1, gridCritical true: "
                    r"from 0 s 11000 W$")
    server.wait_for(r"CS-1 <- NotifyEVChargingNeeds EVSE 1, AC_three_phase, departure "
                    r"2026-12-03T12:00:00.000Z: 20000 Wh, 6-32 A at 400 V$")
    server.wait_for(r"CS-1 <- ReservationStatusUpdate reservation 4: Expired$")
    await station.close()


@charger_test
async def test_reservations_local_list_and_cost_send_defaults_and_show_the_replies(start_server):
    """ReserveNow bare: the next reservation id, expiry RESERVATION_MINUTES ahead, the --id-tag
    idToken, EVSE 1; CancelReservation names it; SendLocalList, GetLocalListVersion and
    CostUpdated: all valid, each reply shown in words."""
    server = start_server("--no-boot-data", "--id-tag", "TAG-9")
    station = await _station(server)
    await station.call("TransactionEvent", {
        "eventType": "Started", "timestamp": NOW, "triggerReason": "Authorized", "seqNo": 0,
        "transactionInfo": {"transactionId": "TX-1"}, "evse": {"id": 1, "connectorId": 1}})
    server.type("ReserveNow")
    reservation = await _answer(station, "ReserveNow", {"status": "Accepted"})
    expiry = datetime.datetime.fromisoformat(reservation["expiryDateTime"].replace("Z", "+00:00"))
    ahead = (expiry - datetime.datetime.now(datetime.timezone.utc)).total_seconds()
    assert mock.RESERVATION_MINUTES * 60 - 30 < ahead <= mock.RESERVATION_MINUTES * 60
    assert reservation["idToken"] == {"idToken": "TAG-9", "type": "ISO14443"}
    first = reservation["id"]
    server.type("ReserveNow evseId=2")
    assert (await _answer(station, "ReserveNow", {"status": "Occupied"}))["id"] == first + 1
    server.type("CancelReservation")
    cancelled = await _answer(station, "CancelReservation", {"status": "Rejected"})
    assert cancelled == {"reservationId": first + 1}
    server.type("SendLocalList versionNumber=7")
    await _answer(station, "SendLocalList", {"status": "Failed"})
    server.type("GetLocalListVersion")
    await _answer(station, "GetLocalListVersion", {"versionNumber": 0})
    server.type("CostUpdated totalCost=4.20")
    assert (await _answer(station, "CostUpdated", {}))["transactionId"] == "TX-1"
    server.wait_for(r"CS-1 \*\* total cost 4.2 of transaction TX-1: taken by the station$")
    output = server.output()
    for line in (
        rf'reservation {first} on EVSE 1 for idToken "TAG-9" until \S+: Accepted',
        rf'reservation {first + 1} on EVSE 2 for idToken "TAG-9" until \S+: Occupied',
        rf"reservation {first + 1} cancelled: Rejected",
        r"local list version 7 \(Full, 1 entry\): Failed",
        r"local list version on the station: 0 \(no list\)",
    ):
        assert re.search(r"CS-1 \*\* " + line + "$", output, re.M), line
    await station.close()


# ------------------------------------------------------- the guide's session, with the demo charger

GUIDE_HEADING = "### Smart charging, reservations, local list and cost (2.0.1)"


def _guide_steps():
    """The guide subsection's session: (command typed, the lines it shows after it), in order."""
    text = (DEMO_CHARGER.parent.parent / "docs" / "guide.md").read_text(encoding="utf-8")
    section = text.split(GUIDE_HEADING, 1)[1].split("\n## ", 1)[0].split("\n### ", 1)[0]
    block = re.findall(r"```text\n(.*?)```", section, re.S)[0]
    steps = []
    for line in block.splitlines():
        if line.startswith("ocpp> "):
            steps.append((line[len("ocpp> "):], []))
        else:
            steps[-1][1].append(line)
    return steps


def _line_pattern(line: str) -> "re.Pattern":
    """A guide line as a pattern of the printed one: any time, timestamp and transaction id."""
    text = re.escape(re.sub(r"^\d\d:\d\d:\d\d\.\d{3} ", "", line))
    text = re.sub(r"\d{4}\\-\d\d\\-\d\dT\d\d:\d\d:\d\d(\\.\d+)?Z", r"\\S+Z", text)
    text = re.sub(r"[0-9a-f]{8}\\-[0-9a-f]{4}\\-[0-9a-f]{4}\\-[0-9a-f]{4}\\-[0-9a-f]{12}",
                  r"[0-9a-f-]{36}", text)
    return re.compile(r"^\d\d:\d\d:\d\d\.\d{3} " + text + "$")


def _wait_in_order(server, lines: list, since: int) -> int:
    """Wait for each of ``lines`` (guide lines) to be printed, in order, from line ``since`` on;
    the index after the last one found."""
    for line in lines:
        pattern = _line_pattern(line)
        while True:
            printed = server.lines[since:]
            found = next((index for index, text in enumerate(printed) if pattern.search(text)),
                         None)
            if found is not None:
                since += found + 1
                break
            server.wait_for(r".", since=since + len(printed))  # a new line, or fail in TIMEOUT
    return since


@pytest.mark.slow(1)
def test_the_guide_session_runs_as_written_with_the_demo_charger(start_server):
    """Every command of the guide's subsection typed as written at a server with the demo charger
    (--ocpp 2.0.1 --smart-charging): after each, the lines the guide shows for it are printed, in
    the guide's order (times, timestamps and transaction ids aside); every CALL the server sent
    is valid by the official 2.0.1 schema, and the demo charger earns no warning."""
    steps = _guide_steps()
    assert len(steps) >= 9 and all(lines for _, lines in steps)
    server = start_server()
    demo = InProcessDemo("--ocpp", "2.0.1", "--smart-charging", server.url + "/CS-1")
    try:
        position = server.mark()
        server.wait_for(r"CS-1 \*\* ready")
        for command, lines in steps:
            if command.startswith("ReserveNow expiryDateTime="):  # a second from now
                moment = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(
                    seconds=1)
                command = "ReserveNow expiryDateTime=" + moment.strftime("%Y-%m-%dT%H:%M:%SZ")
            server.type(command)
            position = _wait_in_order(server, lines, position)
    finally:
        demo.stop()
    assert "Traceback" not in demo.stdout, demo.stdout
    assert " !! " not in server.output(), server.output()  # no spec warning, no check fired
    for line in server.output().splitlines():
        sent = re.search(r" CS-1 -> (\w+) (\{.*)$", line)
        if sent and not sent.group(1).endswith(".conf"):
            assert_valid(sent.group(1) + "Request", json.loads(sent.group(2)), "2.0.1")


@pytest.mark.slow(10)
@charger_test
async def test_the_page_draws_a_stations_composite_schedule_as_a_step_chart(start_server):
    """A composite schedule on the station's card: a step chart (a canvas naming its periods) and
    its periods in text, drawn from the page's first state and redrawn when a new one comes (the
    state_changed event refreshes the card); a charger's text stays text."""
    browser = headless_browser()
    from selenium.webdriver.common.by import By

    server = start_server("--no-boot-data")
    station = await _station(server)

    async def schedule(periods: list, unit: str) -> None:
        server.type("GetCompositeSchedule")
        await _answer(station, "GetCompositeSchedule", {"status": "Accepted", "schedule": {
            "evseId": 1, "duration": 3600, "scheduleStart": NOW, "chargingRateUnit": unit,
            "chargingSchedulePeriod": periods}})
        server.wait_for(rf"composite schedule of EVSE 1 from \S+, 3600 s, in {unit}:")

    def drawn(count: str):
        return [canvas for canvas in browser.find_elements(
            By.CSS_SELECTOR, 'section.card[data-charger="CS-1"] .schedule canvas')
            if canvas.get_attribute("data-periods") == count]

    try:
        await schedule([{"startPeriod": 0, "limit": 16.0}, {"startPeriod": 1800, "limit": 8.0}],
                       "A")
        browser.get(f"http://127.0.0.1:{http_port(server)}/")

        def chart_and_text():  # read at once: the card is redrawn as its state changes
            found = drawn("2")
            if not found:
                return None
            canvas = found[0]
            return int(canvas.get_attribute("width")), canvas.find_element(By.XPATH, "..").text

        width, text = wait_in_browser(browser, chart_and_text, "the schedule's chart")
        assert width > 0
        assert "composite schedule \u00b7 EVSE 1 \u00b7 3600 s \u00b7 A" in text
        assert "0 s: 16 A \u00b7 1800 s: 8 A" in text
        await schedule([{"startPeriod": 0, "limit": 11000.0}, {"startPeriod": 600, "limit": 7000.0},
                        {"startPeriod": 1200, "limit": 3000.0}], "W")
        wait_in_browser(browser, lambda: drawn("3"), "the new schedule's chart")
        assert len(browser.find_elements(By.CSS_SELECTOR, ".schedule canvas")) == 1
    finally:
        browser.quit()
        await station.close()
