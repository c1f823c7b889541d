"""One assembler for the 2.0.1 messages sent in `tbc` parts (issue 22, items 1, 5 and 6):
ReportChargingProfiles is an entry of NOTIFY_KINDS, so GetChargingProfiles' accepted requestId is
matched, a part after the last and a requestId never asked for are said, the bounds hold, and a
report asked for while the boot is Pending is taken, as for the device model's Notify... messages.
"""

import re

import ocpp_mock_server as mock
from conftest import Charger, assert_valid, charger_test

EVSE_PROFILE = {"id": 1, "stackLevel": 0, "chargingProfilePurpose": "TxDefaultProfile",
                "chargingProfileKind": "Relative", "chargingSchedule": [{
                    "id": 1, "chargingRateUnit": "A",
                    "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 16.0}]}]}


async def _station(server, status: str = "Accepted") -> Charger:
    station = await Charger.connect(server.url, "CS-1", subprotocols=("ocpp2.0.1",))
    reply = await station.call("BootNotification", {
        "chargingStation": {"model": "Hand-1", "vendorName": "Test"}, "reason": "PowerUp"})
    assert reply.payload["status"] == status, reply
    return station


async def _profiles_asked(server, station: Charger) -> int:
    """GetChargingProfiles typed, valid by the 2.0.1 schema, answered Accepted: its requestId."""
    server.type("GetChargingProfiles")
    call = await station.expect_call("GetChargingProfiles")
    assert_valid("GetChargingProfilesRequest", call.payload, "2.0.1")
    await station.answer(call, {"status": "Accepted"})
    return call.payload["requestId"]


async def _report(station: Charger, request_id: int, tbc: bool, profiles: int = 1):
    payload = {"requestId": request_id, "chargingLimitSource": "CSO", "evseId": 1, "tbc": tbc,
               "chargingProfile": [dict(EVSE_PROFILE, id=number + 1) for number in range(profiles)]}
    assert_valid("ReportChargingProfilesRequest", payload, "2.0.1")
    return await station.call("ReportChargingProfiles", payload)


@charger_test
async def test_a_profile_report_is_matched_to_its_request_and_misplaced_parts_are_said(in_process):
    """The parts of an accepted GetChargingProfiles' requestId draw no warning; a part after its
    last one is said and ignored; a requestId the server never sent is said and kept anyway."""
    server = in_process()
    station = await _station(server)
    request_id = await _profiles_asked(server, station)
    mark = server.mark()
    await _report(station, request_id, True)
    await _report(station, request_id, False, profiles=2)
    server.wait_for(rf"CS-1 \*\* ReportChargingProfiles requestId {request_id}: 2 parts, "
                    r"3 profiles:$", since=mark)
    server.wait_for(r"CS-1 \*\*   EVSE 1, CSO: profile 2 TxDefaultProfile", since=mark)
    assert " !! " not in server.output(mark), server.output(mark)
    await _report(station, request_id, False)
    server.wait_for(rf"CS-1 !! ReportChargingProfiles requestId {request_id}: a part after the "
                    r"last one \(tbc false\); ignored$", since=mark)
    await _report(station, 99, False)
    server.wait_for(r"CS-1 !! ReportChargingProfiles requestId 99 answers no request this "
                    r"server sent and the station accepted; kept anyway$", since=mark)
    server.wait_for(r"CS-1 \*\* ReportChargingProfiles requestId 99: 1 part, 1 profile:$",
                    since=mark)
    await station.close()


@charger_test
async def test_profile_reports_are_bounded_as_every_notify_message_is(in_process, monkeypatch):
    """At most MAX_NOTIFY_SEQUENCES reports assembled at a time (the oldest forgotten, said), and
    MAX_NOTIFY_ITEMS lines kept of one (the rest said once, not shown)."""
    monkeypatch.setattr(mock, "MAX_NOTIFY_ITEMS", 3)
    server = in_process()
    station = await _station(server)
    mark = server.mark()
    for request_id in range(1, mock.MAX_NOTIFY_SEQUENCES + 2):
        await _report(station, request_id, True)
    server.wait_for(r"!! ReportChargingProfiles requestId 1 was still coming \(tbc true\); "
                    r"forgotten: at most 4 are assembled at a time", since=mark)
    for _ in range(2):
        await _report(station, 5, True, profiles=2)
    await _report(station, 5, False)
    server.wait_for(r"\*\* ReportChargingProfiles requestId 5: 4 parts, 6 profiles:$", since=mark)
    capped = r"!! ReportChargingProfiles requestId 5: over 3 lines or parts; the others are not"
    assert len(re.findall(capped, server.output(mark))) == 1, server.output(mark)
    assert len(re.findall(r"\*\*   EVSE 1, CSO: profile", server.output(mark))) == 3
    model = server.call_in_loop(lambda: server.system.states["CS-1"].device_model)
    assert sorted(key[1] for key in model.sequences) == [2, 3, 4]
    assert server.call_in_loop(lambda: server.system.states["CS-1"].smart_charging) is None
    await station.close()


@charger_test
async def test_a_profile_report_asked_for_while_pending_is_taken_under_strict(in_process):
    """GetChargingProfiles accepted while the boot is Pending: its ReportChargingProfiles is
    answered, not refused with SecurityError (2.0.1 B02), and no call-before-boot fires."""
    server = in_process("--boot-status", "Pending", "--strict")
    station = await _station(server, status="Pending")
    request_id = await _profiles_asked(server, station)
    mark = server.mark()
    reply = await _report(station, request_id, False)
    assert reply[0] == 3 and reply.payload == {}, reply
    server.wait_for(rf"ReportChargingProfiles requestId {request_id}: 1 part, 1 profile:",
                    since=mark)
    assert "call-before-boot" not in server.output(mark), server.output(mark)
    await station.close()
