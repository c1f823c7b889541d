"""Events: one EventBus, one event per happening, and subscribers that cannot break the engine."""

import ocpp_mock_server as mock
from conftest import (
    CHARGER_REQUEST_SAMPLES,
    Charger,
    InProcessServer,
    charger_test,
)


@charger_test
async def test_a_failing_subscriber_breaks_neither_the_engine_nor_the_terminal():
    server = InProcessServer("--no-boot-data")
    seen = []

    def broken(event):
        seen.append(event.type)
        raise RuntimeError("subscriber bug")

    try:
        server.call_in_loop(server.system.bus.subscribe, broken, "frame", "call_answered")
        charger = await Charger.connect(server.url, "CP-BUS")
        for _ in range(3):
            assert (await charger.call("Heartbeat", {})).type_id == 3
        await charger.close()
        text = server.settled_output()
    finally:
        server.stop()
    # It still gets every event.
    assert seen.count("call_answered") == 3 and seen.count("frame") == 6
    assert text.count("CP-BUS -> Heartbeat.conf") == 3  # and the terminal every line
    assert (
        text.count(
            "event subscriber test_a_failing_subscriber_breaks_neither_the_engine_nor_the_terminal."
            "<locals>.broken failed: RuntimeError: subscriber bug (reported once)"
        )
        == 1
    )


@charger_test
async def test_every_happening_is_one_event_with_the_documented_fields(in_process):
    server = in_process("--call-timeout", "0.5")
    everything, small = mock.EventHistory(), mock.EventHistory(limit=3)
    server.call_in_loop(server.system.bus.subscribe, everything)
    server.call_in_loop(server.system.bus.subscribe, small, "frame")
    charger = await Charger.connect(server.url, "CP-EV")
    await charger.boot()
    await charger.call(
        "StatusNotification", dict(CHARGER_REQUEST_SAMPLES["StatusNotification"], status="Charging")
    )
    started = await charger.call("StartTransaction", CHARGER_REQUEST_SAMPLES["StartTransaction"])
    await charger.call("MeterValues", CHARGER_REQUEST_SAMPLES["MeterValues"])
    await charger.call(
        "StopTransaction",
        dict(
            CHARGER_REQUEST_SAMPLES["StopTransaction"],
            transactionId=started.payload["transactionId"],
        ),
    )
    await charger.call("Heartbeat", {"extra": 1})  # a spec problem
    server.type("ClearCache")  # never answered: it times out
    await charger.expect_call("ClearCache")
    server.wait_for(r"CP-EV !! no reply to ClearCache within 0\.5 s")
    await charger.close()
    server.wait_for(r"CP-EV \*\* disconnected")
    events = server.call_in_loop(lambda: everything.after(0)[0])
    assert [event.seq for event in events] == sorted(event.seq for event in events)
    for event in events:
        assert event.charger == "CP-EV"
        assert set(event.fields) <= set(mock.EVENT_FIELDS[event.type]), event.type
    types = [event.type for event in events if event.type not in ("frame", "log")]
    assert types == [
        "connected",
        "state_changed",
        "call_answered",
        "reply_received",
        "ready",  # boot, BootData
        "state_changed",
        "call_answered",  # StatusNotification
        "authorization",
        "transaction_started",
        "call_answered",
        "meter_values",
        "call_answered",
        "transaction_stopped",
        "authorization",
        "call_answered",
        "summary",  # the transaction's verdict, once its reply is sent
        "spec_problem",
        "call_answered",
        "call_failed",
        "disconnected",
    ], types
    meter = next(event for event in events if event.type == "meter_values")
    assert meter.fields["readings"] == [["Energy.Active.Import.Register", "1234", "Wh", None]]
    frames = [event for event in events if event.type == "frame"]
    assert [frame.fields["direction"] for frame in frames[:3]] == [
        "in",
        "out",
        "out",
    ]  # boot, its conf, BootData
    # In the frame.
    assert "payload" not in next(event for event in events if event.type == "call_answered").fields
    # A reader still at the first frame.
    kept, missed = server.call_in_loop(small.after, frames[0].seq - 1)
    assert [event.seq for event in kept] == [
        frame.seq for frame in frames[-3:]
    ]  # the latest 3, no more
    # And how many it missed: every event in between.
    assert missed == frames[-3].seq - frames[0].seq
