"""Fault injection: faults set at the console or over HTTP, and what the charger sees.

Each fault: what the charger sees on the wire, and the marked line and transcript record. (The file
is not named after faults: .ci/run selects its fast subset with ``-k``, which also matches file
names.)
"""

import asyncio
import subprocess
import time

import pytest
import websockets

import ocpp_mock_server as mock
from conftest import (
    CHARGER_REQUEST_SAMPLES,
    TIMEOUT,
    Charger,
    _refusal_status,
    assert_valid,
    charger_test,
    http_sync,
    read_transcript,
    server_command,
)


@charger_test
async def test_reply_faults_change_what_the_charger_gets(start_server, tmp_path):
    log = tmp_path / "transcript.jsonl"
    server = start_server(
        "--no-boot-data",
        "--log",
        str(log),
        "--fault",
        "BootNotification status=Pending interval=5 times=2",
    )
    charger = await Charger.connect(server.url)
    boot = CHARGER_REQUEST_SAMPLES["BootNotification"]
    for expected in ("Pending", "Pending", "Accepted"):  # the fault ends after its two replies
        reply = await charger.call("BootNotification", boot)
        assert reply.payload["status"] == expected
        assert_valid("BootNotificationResponse", reply.payload)
    assert reply.payload["interval"] == 60
    server.wait_for(
        r"CP-1 !! FAULT injected \(fault BootNotification status=Pending interval=5 times=2\): "
        r"reply "
        r'changed to \{"status":"Pending","currentTime":"[^"]+","interval":5\}'
    )
    server.type("fault StartTransaction error=InternalError")
    server.wait_for(r">> in force: fault StartTransaction error=InternalError")
    refused = await charger.call("StartTransaction", CHARGER_REQUEST_SAMPLES["StartTransaction"])
    assert refused.type_id == 4 and refused.error_code == "InternalError"
    # Nothing opened.
    assert server.call_in_loop(lambda: dict(server.system.states["CP-1"].transactions)) == {}
    server.type("fault Authorize status=Blocked times=1")
    server.wait_for(r">> in force: fault Authorize")
    assert (await charger.call("Authorize", {"idTag": "T"})).payload == {
        "idTagInfo": {"status": "Blocked"}
    }
    assert (await charger.call("Authorize", {"idTag": "T"})).payload == {
        "idTagInfo": {"status": "Accepted"}
    }
    server.type("faults")
    server.wait_for(r">> fault StartTransaction error=InternalError$")
    server.type("fault clear")
    server.wait_for(r">> 1 fault\(s\) cleared")
    await charger.close()
    server.wait_for(r"CP-1 \*\* disconnected")
    records = [record for record in read_transcript(log) if record.get("event") == "fault"]
    assert [record["fault"] for record in records][:2] == [
        "fault BootNotification status=Pending interval=5 times=2"
    ] * 2
    assert records[-1]["fault"] == "fault Authorize status=Blocked times=1"


@charger_test
async def test_drop_delay_twice_and_wrong_id_replies(start_server):
    server = start_server("--no-boot-data")
    charger = await Charger.connect(server.url)
    server.type("fault Heartbeat drop times=1")
    server.wait_for(r">> in force: fault Heartbeat drop")
    await charger.send_frame([2, "never", "Heartbeat", {}])
    # The next frame is this one's reply.
    answered = await charger.call("Heartbeat", {}, message_id="second")
    assert answered.message_id == "second"
    server.wait_for(
        r'!! FAULT injected \(fault Heartbeat drop times=1\): no reply to Heartbeat "never"'
    )
    server.type("fault MeterValues delay=0.3 times=1")
    server.wait_for(r">> in force: fault MeterValues")
    started = time.monotonic()
    late = await charger.call("MeterValues", CHARGER_REQUEST_SAMPLES["MeterValues"])
    assert late.type_id == 3 and time.monotonic() - started >= 0.3
    server.type("fault Authorize twice times=1")
    server.wait_for(r">> in force: fault Authorize twice")
    await charger.send_frame([2, "a1", "Authorize", {"idTag": "T"}])
    first, second = await charger.receive(), await charger.receive()
    assert first == second and first.message_id == "a1"
    server.type("fault Heartbeat wrong-id times=1")
    server.wait_for(r">> in force: fault Heartbeat wrong-id")
    await charger.send_frame([2, "h9", "Heartbeat", {}])
    assert (await charger.receive()).message_id == "h9-wrong"
    await charger.close()


@charger_test
async def test_disconnect_faults_close_with_the_code_or_cut(start_server):
    server = start_server("--no-boot-data")
    charger = await Charger.connect(server.url)
    server.type("fault disconnect code=4001")
    await charger.ws.wait_closed()
    assert mock.close_code(charger.ws) == 4001 or charger.ws.close_code == 4001
    server.wait_for(
        r"!! FAULT injected \(fault disconnect code=4001\): connection closed with code 4001"
    )
    server.type("@CP-2 fault disconnect code=1006 after=2")  # for a charge point not connected yet
    server.wait_for(r">> in force: @CP-2 fault disconnect")
    other = await Charger.connect(server.url, "CP-2")
    await other.call("Heartbeat", {})
    await other.send_frame([2, "x", "Heartbeat", {}])  # the second frame: cut, with no close frame
    await other.ws.wait_closed()
    assert other.ws.close_code == 1006
    server.wait_for(r"CP-2 !! FAULT injected .*: connection cut without a close frame \(1006\)")


@charger_test
async def test_offline_and_handshake_faults_refuse_reconnects_for_a_while(start_server):
    server = start_server("--no-boot-data")
    charger = await Charger.connect(server.url)
    server.type("fault offline 0.5")
    await charger.ws.wait_closed()
    with pytest.raises(websockets.InvalidHandshake) as away:
        await Charger.connect(server.url)
    assert _refusal_status(away.value) == 503
    server.wait_for(r"!! FAULT injected \(fault offline 0\.5\): upgrade refused \(HTTP 503\)")
    deadline = time.monotonic() + TIMEOUT
    while True:  # back once the half second has passed
        try:
            back = await Charger.connect(server.url)
            break
        except websockets.InvalidHandshake:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
    await back.close()
    server.type("@CP-3 fault handshake 401 for=30")
    server.wait_for(r">> in force: @CP-3 fault handshake 401 for=30")
    with pytest.raises(websockets.InvalidHandshake) as refused:
        await Charger.connect(server.url, "CP-3")
    assert _refusal_status(refused.value) == 401
    allowed = await Charger.connect(server.url, "CP-4")  # only CP-3 is refused
    await allowed.close()


@pytest.mark.slow(5)
def test_faults_are_checked_as_any_command_and_set_over_http(start_server, tmp_path):
    for bad, message in (
        ("--fault", "Teleport drop"),
        ("--fault", "Heartbeat"),
        ("--fault", "Heartbeat error=Oops"),
        ("--fault", "disconnect code=99"),
    ):
        result = subprocess.run(
            server_command(bad, message),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=TIMEOUT * 2,
        )
        assert result.returncode == 2 and "--fault" in result.stderr, (message, result.stderr)
    with pytest.raises(mock.ScriptError) as invalid:
        mock.parse_scenario("charger\nfault Heartbeat delay=-1\n")
    assert invalid.value.line == 2
    server = start_server()
    assert http_sync(server, "POST", "/api/faults", {"fault": "Heartbeat drop"}).json == {
        "faults": ["in force: fault Heartbeat drop"]
    }
    replaced = http_sync(
        server, "PUT", "/api/faults", {"faults": ["@CP-1 fault disconnect after=3", "offline 5"]}
    )
    assert replaced.status == 200
    assert http_sync(server, "GET", "/api/faults").json == {
        "faults": ["@CP-1 fault disconnect after=3", "fault offline 5"]
    }
    bad = http_sync(server, "PUT", "/api/faults", {"faults": ["Heartbeat drop", "nonsense"]})
    # All or nothing.
    assert bad.status == 400 and len(http_sync(server, "GET", "/api/faults").json["faults"]) == 2
    assert http_sync(server, "PUT", "/api/faults", {"faults": []}).json == {"faults": []}


@charger_test
async def test_more_faults_on_the_wire_payload_in_silent_outage_and_unanswered_pings(start_server):
    server = start_server("--no-boot-data")
    charger = await Charger.connect(server.url)
    server.type('fault DataTransfer payload={"status":"Rejected","data":"x"} times=1')
    server.wait_for(r">> in force: fault DataTransfer")
    assert (await charger.call("DataTransfer", {"vendorId": "v"})).payload == {
        "status": "Rejected",
        "data": "x",
    }
    # Pings: unanswered while the fault is in force.  The server handles frames in order, so a pong
    # it sent would have arrived before the reply to the CALL sent after the ping.
    server.type("fault pings")
    server.wait_for(r"!! FAULT injected \(fault pings\): its pings go unanswered")
    unanswered = await charger.ws.ping()
    await charger.call("Heartbeat", {})
    assert not unanswered.done()
    server.type("fault clear pings")
    server.wait_for(r">> 1 fault\(s\) cleared")
    answered = await charger.ws.ping()
    await charger.call("Heartbeat", {})
    assert answered.done()
    server.type("fault disconnect code=4002 in=0.2")
    await asyncio.wait_for(charger.ws.wait_closed(), TIMEOUT)
    assert charger.ws.close_code == 4002
    server.type("fault offline 30 silent")
    server.wait_for(r">> in force: fault offline 30 silent")
    with pytest.raises(
        (websockets.InvalidHandshake, websockets.ConnectionClosed, OSError, EOFError)
    ) as cut:
        await Charger.connect(server.url)
    assert not isinstance(
        cut.value, websockets.InvalidStatus if hasattr(websockets, "InvalidStatus") else type(None)
    )
    server.wait_for(
        r"!! FAULT injected \(fault offline 30 silent\): upgrade refused \(cut without an answer\)"
    )


@charger_test
async def test_a_disconnect_fault_for_every_charger_applies_to_each(start_server):
    server = start_server("--no-boot-data")
    one, two = await Charger.connect(server.url, "CP-1"), await Charger.connect(server.url, "CP-2")
    server.type("fault disconnect code=4003 after=1")
    server.wait_for(r">> in force: fault disconnect code=4003 after=1")
    for charger in (one, two):
        await charger.send_frame([2, "last", "Heartbeat", {}])
        await asyncio.wait_for(charger.ws.wait_closed(), TIMEOUT)
        assert charger.ws.close_code == 4003
    server.type("faults")
    # Still in force, for chargers to come.
    server.wait_for(r">> fault disconnect code=4003 after=1$")
