"""Behaviour checks and faults for OCPP 2.0.1 stations (issue 22, items 7 and 8): each check fires
for the demo charger told to break its rule (``--ocpp 2.0.1 --misbehave ...``) and never for the
well-behaved one; the fault vocabulary works on a 2.0.1 station.  The server runs in this process
and so does the demo charger, on an event loop of its own: no subprocess but the scenario's."""

import asyncio
import importlib.util
import re

import pytest
import websockets

from conftest import (
    DEMO_CHARGER,
    SCENARIOS,
    Charger,
    InProcessServer,
    LoopThread,
    assert_v201_valid,
    charger_test,
    mock,
    run_scenario_in_process,
)

_spec = importlib.util.spec_from_file_location("demo_charger_201", DEMO_CHARGER)
demo = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(demo)

CHARGER_ID = "CS-7"
FAST = ("--ocpp", "2.0.1", "--meter-interval", "0.1")
BOOT = {
    "reason": "PowerUp",
    "chargingStation": {"model": "M", "vendorName": "V"},
}


class DemoStation:
    """The demo charger (``main`` of examples/demo_charger.py) on a loop thread of this process."""

    def __init__(self, server, *args: str):
        self.thread = LoopThread()
        options = demo.parse_args([f"{server.url}/{CHARGER_ID}", *FAST, *args])
        self.future = asyncio.run_coroutine_threadsafe(demo.main(options), self.thread.loop)

    def stop(self):
        """Cancel everything it runs, and wait until it has closed its connection."""

        async def cancel_all():
            tasks = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        self.thread.run(cancel_all())
        self.thread.close()


def checks_fired(output: str) -> list:
    return re.findall(rf"{CHARGER_ID} !! check ([\w-]+):", output)


def wait_line(server, pattern: str, since: int = 0, timeout: float = 10) -> int:
    """Wait for a line of this station matching ``pattern``; the index after it."""
    found = server.wait_for(f"{CHARGER_ID} {pattern}", since=since, timeout=timeout).group(0)
    return next(
        index + 1 for index in range(since, len(server.lines)) if found in server.lines[index]
    )


# ------------------------------------------------------------------------- behaviour checks

TRANSACTION_SWITCHES = {
    "repeat-seqno": "seqno-repeated",
    "skip-seqno": "seqno-gap",
    "updated-before-started": "transaction-event-order",
    "started-twice": "started-twice",
    "meter-backwards": "energy-decreases",
    "available-while-charging": "status-contradicts-transaction",
    "repeat-status": "status-repeated",
    "fast-heartbeat": "heartbeat-interval",
}
BOOT_SWITCHES = {"skip-boot-wait": "call-before-boot", "two-calls": "two-calls"}


def run_a_transaction(server, misbehave: dict):
    """A remote start, seven Updated events, a remote stop; the station misbehaving as told."""
    switches = [word for name in misbehave for word in ("--misbehave", name)]
    station = DemoStation(server, *switches)
    try:
        mark = wait_line(server, r"<- StatusNotification .*Available")
        server.type("startRemote")
        mark = wait_line(server, r"<- TransactionEvent Started", mark)
        for _ in range(7):
            mark = wait_line(server, r"<- TransactionEvent Updated", mark)
        for rule in misbehave.values():  # the heartbeat's may come after the events
            server.wait_for(rf"{CHARGER_ID} !! check {rule}:", timeout=10)
        server.type("stopRemote")
        wait_line(server, r"<- StatusNotification .*Available", mark)
        return server.settled_output()
    finally:
        station.stop()


@pytest.mark.slow(1)
@pytest.mark.parametrize("behaves", [False, True], ids=["misbehaves", "behaves"])
def test_each_transaction_check_catches_its_misbehaviour_and_only_that(start_server, behaves):
    server = start_server("--ocpp", "2.0.1", "--heartbeat-interval", "2")
    misbehave = {} if behaves else TRANSACTION_SWITCHES
    output = run_a_transaction(server, misbehave)
    fired = checks_fired(output)
    assert sorted(fired) == sorted(misbehave.values()), output  # each once, and no other
    if not behaves:
        assert "which the OCPP 1.6 status diagram" not in output


@pytest.mark.slow(1)
@pytest.mark.parametrize("behaves", [False, True], ids=["misbehaves", "behaves"])
def test_calls_while_pending_are_caught_but_not_what_the_csms_asked_for(start_server, behaves):
    server = start_server(
        "--ocpp",
        "2.0.1",
        "--fault",
        "BootNotification status=Pending interval=1 times=1",
        "--fault",
        "StatusNotification delay=0.3 times=1",
    )
    misbehave = {} if behaves else BOOT_SWITCHES
    station = DemoStation(server, *[w for name in misbehave for w in ("--misbehave", name)])
    try:
        wait_line(server, r"-> BootNotification\.conf .*Pending")
        # While Pending the CSMS may ask: the report and the triggered message may come.
        server.type("GetBaseReport requestId=5 reportBase=SummaryInventory")
        mark = wait_line(server, r"<- NotifyReport")
        server.type("TriggerMessage requestedMessage=Heartbeat")
        mark = wait_line(server, r"<- Heartbeat", mark)
        for rule in misbehave.values():
            server.wait_for(rf"{CHARGER_ID} !! check {rule}:")
        wait_line(server, r"-> StatusNotification\.conf")  # the delayed one, whenever it came
        output = server.settled_output()
    finally:
        station.stop()
    assert sorted(checks_fired(output)) == sorted(misbehave.values()), output


# --misbehave, the outage (the offline flag needs one longer than twice TIMING_SLACK), the rule
OUTAGE_CASES = [
    ("replay-reversed", "1", "transaction-order"),
    ("no-offline-flag", "3", "offline-flag"),
]


@pytest.mark.slow(3)
@pytest.mark.parametrize("misbehave, seconds, rule", OUTAGE_CASES, ids=[c[0] for c in OUTAGE_CASES])
def test_an_offline_queue_replayed_out_of_order_or_unflagged_is_caught(
    start_server, misbehave, seconds, rule
):
    server = start_server("--ocpp", "2.0.1")
    station = DemoStation(server, "--reconnect", "--misbehave", misbehave)
    try:
        wait_line(server, r"<- StatusNotification .*Available")
        server.type("startRemote")
        mark = wait_line(server, r"<- TransactionEvent Updated")
        server.type("fault offline " + seconds)
        mark = wait_line(server, r"\*\* connected", mark)
        server.wait_for(rf"{CHARGER_ID} !! check {rule}:", since=mark)
        output = server.settled_output()
    finally:
        station.stop()
    assert checks_fired(output) == [rule], output


@charger_test
async def test_a_seqno_gap_of_offline_events_is_told_as_a_full_queue_not_as_a_fault(start_server):
    server = start_server("--ocpp", "2.0.1")
    station = await Charger.connect(server.url, CHARGER_ID, subprotocols=("ocpp2.0.1",))
    await station.call("BootNotification", BOOT)
    for seq_no, offline in ((0, False), (1, False), (4, True), (5, True), (7, False)):
        event = {
            "eventType": "Started" if seq_no == 0 else "Updated",
            "timestamp": f"2026-12-03T12:00:{seq_no:02d}.000Z",
            "triggerReason": "MeterValuePeriodic",
            "seqNo": seq_no,
            "transactionInfo": {"transactionId": "T-1"},
            "evse": {"id": 1, "connectorId": 1},
        }
        if offline:
            event["offline"] = True
        assert_v201_valid("TransactionEventRequest", event)
        reply = await station.call("TransactionEvent", event)
        assert reply[0] == 3, reply
    await station.close()
    output = server.settled_output()
    assert re.search(
        r"\*\* transaction T-1: seqNo 2 to 3 never arrived; the events around it happened "
        r"offline: a station whose offline queue is full may drop Updated events",
        output,
    ), output
    # The one missing online is a fault; the offline gap is not.
    assert checks_fired(output) == ["seqno-gap"], output
    assert "T-1: seqNo 6 never arrived" in output


@charger_test
async def test_a_retried_event_is_no_repeat_and_a_requested_status_may_come_while_pending(
    start_server,
):
    server = start_server("--ocpp", "2.0.1", "--boot-status", "Pending")
    station = await Charger.connect(server.url, CHARGER_ID, subprotocols=("ocpp2.0.1",))
    assert (await station.call("BootNotification", BOOT)).payload["status"] == "Pending"
    server.type("GetLog requestId=9")
    call = await station.expect_call("GetLog")
    await station.answer(call, {"status": "Accepted", "filename": "log.txt"})
    await station.call("LogStatusNotification", {"status": "Uploading", "requestId": 9})
    server.wait_for(rf"{CHARGER_ID} -> LogStatusNotification\.conf")
    assert checks_fired(server.settled_output()) == []
    # One the server did not ask for is caught.
    await station.call("LogStatusNotification", {"status": "Uploading", "requestId": 10})
    event = {
        "eventType": "Started",
        "timestamp": "2026-12-03T12:00:00.000Z",
        "triggerReason": "Authorized",
        "seqNo": 0,
        "transactionInfo": {"transactionId": "T-2"},
    }
    for _ in range(2):  # its reply lost, say: the same event again, which is no second Started
        await station.call("TransactionEvent", event)
    await station.close()
    output = server.settled_output()
    assert checks_fired(output) == ["call-before-boot"], output
    assert "check call-before-boot: sent LogStatusNotification while its boot is Pending" in output


def test_misbehave_switches_of_one_version_are_refused_for_the_other(capsys):
    for args in (
        ["--misbehave", "repeat-seqno"],
        ["--ocpp", "2.0.1", "--misbehave", "bad-transition"],
    ):
        with pytest.raises(SystemExit) as exit_:
            demo.parse_args(args)
        assert exit_.value.code == 2
    error = capsys.readouterr().err
    assert "--misbehave repeat-seqno breaks a rule of OCPP 2.0.1 only" in error
    assert "--misbehave bad-transition breaks a rule of OCPP 1.6 only" in error


def test_the_checks_remember_a_bounded_number_of_transactions_per_station():
    events = mock.TransactionEvents()
    for number in range(mock.MAX_TRACKED_TRANSACTIONS + 50):
        events.record(f"T-{number}", 1)
    assert len(events.transactions) == mock.MAX_TRACKED_TRANSACTIONS
    assert "T-0" not in events.transactions  # the oldest forgotten first


# ------------------------------------------------------------------------------------ faults


@pytest.mark.slow(2.5)
def test_the_2_0_1_offline_scenario_passes_strict_against_the_demo_charger():
    status, output = run_scenario_in_process(
        SCENARIOS / "offline-201.txt",
        "--ocpp",
        "2.0.1",
        "--strict",
        charger_args=("--ocpp", "2.0.1", "--meter-interval", "0.2", "--reconnect"),
    )
    assert status == 0, output
    assert "!! FAULT injected (fault offline 2): upgrade refused (HTTP 503)" in output
    assert ">> scenario offline-201.txt: PASS" in output, output
    assert "!! check" not in output


def faults_md_201_lines() -> list:
    """The fault lines docs/faults.md shows for 2.0.1 stations, as written."""
    text = (DEMO_CHARGER.parent.parent / "docs" / "faults.md").read_text(encoding="utf-8")
    section = text.split("## OCPP 2.0.1 stations", 1)[1]
    return re.search(r"```text\n(.*?)```", section, re.S).group(1).splitlines()


TOKEN = {"idToken": "AA11", "type": "ISO14443"}
EVENT = {
    "eventType": "Started",
    "timestamp": "2026-12-03T12:00:00.000Z",
    "triggerReason": "Authorized",
    "seqNo": 0,
    "transactionInfo": {"transactionId": "T-9"},
    "idToken": TOKEN,
}
STATUS = {
    "timestamp": "2026-12-03T12:00:00.000Z",
    "connectorStatus": "Available",
    "evseId": 1,
    "connectorId": 1,
}
METER = {
    "evseId": 1,
    "meterValue": [{"timestamp": "2026-12-03T12:00:00.000Z", "sampledValue": [{"value": 5}]}],
}
# Each line of the docs: the station's CALL it fires on, and what the station gets (a reply
# payload's check, a CALLERROR code, or None: no reply, the FAULT line says what happened).
FAULT_LINES_201 = {
    "fault BootNotification status=Pending interval=10 times=1": (
        "BootNotification",
        BOOT,
        lambda reply: reply["status"] == "Pending" and reply["interval"] == 10,
    ),
    "fault Authorize status=Blocked": (
        "Authorize",
        {"idToken": TOKEN},
        lambda reply: reply["idTokenInfo"]["status"] == "Blocked",
    ),
    "fault TransactionEvent status=Invalid times=1": (
        "TransactionEvent",
        EVENT,
        lambda reply: reply["idTokenInfo"]["status"] == "Invalid",
    ),
    "fault TransactionEvent delay=40 times=1": ("TransactionEvent", dict(EVENT, seqNo=1), None),
    "fault Heartbeat drop": ("Heartbeat", {}, None),
    "fault StatusNotification error=FormationViolation times=1": (
        "StatusNotification",
        STATUS,
        "FormatViolation",
    ),
    "fault MeterValues error=RpcFrameworkError times=1": (
        "MeterValues",
        METER,
        "RpcFrameworkError",
    ),
}


@charger_test
async def test_the_2_0_1_fault_lines_of_faults_md_work_as_written_on_a_2_0_1_station(start_server):
    server = start_server("--ocpp", "2.0.1")
    station = await Charger.connect(server.url, CHARGER_ID, subprotocols=("ocpp2.0.1",))
    lines = faults_md_201_lines()
    assert lines[-1] == "fault offline 30" and set(lines[:-1]) == set(FAULT_LINES_201)
    for line in lines[:-1]:
        action, payload, wanted = FAULT_LINES_201[line]
        mark = server.mark()
        server.type(line)
        server.wait_for(">> in force: " + re.escape(line), since=mark)
        if wanted is None:
            await station.send_frame([2, "m-" + action, action, payload])
        else:
            reply = await station.call(action, payload)
            if isinstance(wanted, str):
                assert reply.error_code == wanted, reply
            else:
                assert reply[0] == 3 and wanted(reply.payload), reply
                assert_v201_valid(action + "Response", reply.payload)
        server.wait_for(rf"{CHARGER_ID} !! FAULT injected \({re.escape(line)}\)", since=mark)
    server.type("fault offline 30")
    server.wait_for(rf"{CHARGER_ID} !! FAULT injected \(fault offline 30\): the central system")
    with pytest.raises(websockets.ConnectionClosed):
        await station.receive()
    output = server.settled_output()
    assert "answered with CALLERROR FormatViolation (OCPP 2.0.1 spells FormationViolation so)" in (
        output
    )
    assert "reply sent after 40 s" in output and "no reply to Heartbeat" in output
    assert mock_state(server).boot_status == "Pending"  # the fault's Pending is the server's too


@charger_test
async def test_an_error_code_a_version_lacks_is_sent_as_generic_error_in_one_line(start_server):
    server = start_server("--fault", "Heartbeat error=RpcFrameworkError")
    charger = await Charger.connect(server.url, "CP-16")
    reply = await charger.call("Heartbeat", {})
    assert reply.error_code == "GenericError", reply
    line = server.wait_for(r"CP-16 !! FAULT injected .*").group(0)
    assert line.endswith(
        "answered with CALLERROR GenericError (RpcFrameworkError is not an OCPP 1.6 error code: "
        "GenericError instead)"
    ), line
    await charger.close()


def mock_state(server):
    return server.call_in_loop(lambda: server.system.state_for(CHARGER_ID))


@pytest.mark.slow(0.5)
def test_a_2_0_1_behaviour_check_fails_a_strict_scenario_run(tmp_path):
    script = tmp_path / "seqno.txt"
    script.write_text(
        "wait BootNotification within 10\nwait StatusNotification within 10\nstartRemote\n"
        "wait TransactionEvent eventType=Updated x4 within 10\n"
    )
    server = InProcessServer("--ocpp", "2.0.1", "--strict", "--script", str(script))
    station = DemoStation(server, "--misbehave", "repeat-seqno")
    try:
        server.thread.join(30)  # the run ends with the script (its last lines are written on stop)
    finally:
        station.stop()
        code = server.stop()
    assert code == 1, server.output()
    assert ">> scenario seqno.txt: FAIL at --strict, 4 of 4 steps passed" in server.output()
    assert checks_fired(server.output()) == ["seqno-repeated"], server.output()


@charger_test
async def test_under_strict_what_the_csms_asked_for_while_pending_is_answered(start_server):
    """--strict refuses a CALL before an accepted boot with SecurityError, but not one the server
    asked for (B02): the LogStatusNotification of its GetLog's requestId; another is refused."""
    server = start_server("--ocpp", "2.0.1", "--boot-status", "Pending", "--strict")
    station = await Charger.connect(server.url, CHARGER_ID, subprotocols=("ocpp2.0.1",))
    assert (await station.call("BootNotification", BOOT)).payload["status"] == "Pending"
    server.type("GetLog requestId=9")
    call = await station.expect_call("GetLog")
    await station.answer(call, {"status": "Accepted", "filename": "log.txt"})
    asked = await station.call("LogStatusNotification", {"status": "Uploading", "requestId": 9})
    assert asked.type_id == 3 and asked.payload == {}, asked
    other = await station.call("LogStatusNotification", {"status": "Uploading", "requestId": 10})
    assert other.type_id == 4 and other.error_code == "SecurityError", other
    await station.close()


@pytest.mark.parametrize("subprotocol", ["ocpp1.6", "ocpp2.0.1"])
@charger_test
async def test_a_call_to_a_rejected_station_is_sent_with_one_warning(start_server, subprotocol):
    """While its boot is Rejected a central system should send a station nothing (1.6 section
    4.2, 2.0.1 B03): what the operator sends anyway goes out, with one line saying so."""
    server = start_server("--boot-status", "Rejected", "--no-boot-data")
    station = await Charger.connect(server.url, CHARGER_ID, subprotocols=(subprotocol,))
    boot = BOOT if subprotocol == "ocpp2.0.1" else {
        "chargePointVendor": "Test", "chargePointModel": "Hand-1"}
    assert (await station.call("BootNotification", boot)).payload["status"] == "Rejected"
    for _ in range(2):
        server.type("Reset")
        call = await station.expect_call("Reset")
        await station.answer(call, {"status": "Accepted"})
    await station.close()
    output = server.settled_output()
    assert output.count("its boot is Rejected") == 1, output
    assert "a central system should send it nothing until it accepts one" in output
