"""Fault injection: faults set at the console or over HTTP, and what the charger sees.

Each fault: what the charger sees on the wire, and the marked line and transcript record. (The file
is not named after faults: .ci/run selects its fast subset with ``-k``, which also matches file
names.)
"""

import asyncio
import re
import shutil
import subprocess
import time

import pytest
import websockets

import ocpp_mock_server as mock
from conftest import (
    CHARGER_REQUEST_SAMPLES,
    TIMEOUT,
    Charger,
    InProcessServer,
    _certificate_authority,
    _csr,
    _refusal_status,
    assert_valid,
    charger_test,
    http,
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


@pytest.mark.slow(1.5)
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


# -------------------- bounded and cheap
# Fault injection under attack: held replies are bounded, faults in force are capped from every
# way in, and a frame's cost does not grow with the faults in force.
#
# Every test talks to a real server (in this process, its bounds lowered where the full size would
# be slow) over its websocket, its console and its HTTP port.  The full-size attacks (60,000
# pipelined Heartbeats under a delay fault, 40,000 faults in one PUT) are scripts/attack_faults.py.


HELD_LINE = r"replies \(\d+ characters\) are held back by delay faults, the most one connection"


def held_now(server, charger_id: str = "CP-1") -> tuple:
    """The replies held back on a charger's connection now: (count, characters)."""

    def read():
        held = server.system.sessions[charger_id].held_replies
        return (len(held.timers), held.characters) if held is not None else (0, 0)

    return server.call_in_loop(read)


# ------------------------------------------------------------ held replies


@charger_test
async def test_held_replies_are_bounded_and_the_calls_past_the_bound_answered_at_once(
    start_server, monkeypatch
):
    monkeypatch.setattr(mock, "MAX_HELD_REPLIES", 50)
    server = start_server("--no-boot-data", "--fault", "Heartbeat delay=1.5")
    charger = await Charger.connect(server.url)
    ids = [f"h{number}" for number in range(500)]
    started = time.monotonic()
    for message_id in ids:  # pipelined: no CALL waits for its reply
        await charger.send_frame([2, message_id, "Heartbeat", {}])
    at_once = [(await charger.receive()).message_id for _ in range(450)]
    assert at_once == ids[50:]  # past the bound: answered at once, in order, without the delay
    assert held_now(server)[0] == 50  # no more than the bound is held
    late = [(await charger.receive()).message_id for _ in range(50)]
    assert late == ids[:50] and time.monotonic() - started >= 1.5  # the held ones, once due
    server.wait_for(HELD_LINE)
    output = server.settled_output()
    assert output.count("are held back by delay faults") == 1, output  # one line for the burst
    assert output.count("FAULT injected (fault Heartbeat delay=1.5): reply sent after 1.5 s") == 50
    assert held_now(server) == (0, 0)
    await charger.close()


@charger_test
async def test_held_replies_are_bounded_by_characters_and_dropped_with_the_connection(
    start_server, monkeypatch
):
    monkeypatch.setattr(mock, "MAX_HELD_CHARACTERS", 20000)
    server = start_server("--no-boot-data", "--fault", "Heartbeat delay=60")
    charger = await Charger.connect(server.url)
    ids = [f"{number:02d}" + "x" * 600 for number in range(60)]  # long ids: replies of ~700
    for message_id in ids:
        await charger.send_frame([2, message_id, "Heartbeat", {}])
    answered = [reply.message_id for reply in await charger.replies_until(ids[-1])]
    count, characters = held_now(server)
    assert answered == ids[count:] and 25 <= count <= 32  # 20,000 characters' worth are held
    assert characters < 20000 + 800  # at most one reply past the budget
    server.wait_for(HELD_LINE)
    session = server.call_in_loop(lambda: server.system.sessions["CP-1"])
    await charger.close()
    server.wait_for(r"CP-1 \*\* disconnected")
    # Nothing held outlives its connection (a delay of up to an hour would keep it that long).
    assert server.call_in_loop(
        lambda: (len(session.held_replies.timers), session.held_replies.characters)
    ) == (0, 0)


# ------------------------------------------------------------ the cap on faults in force


def test_faults_in_force_are_capped_from_the_api_and_the_console(start_server, monkeypatch):
    monkeypatch.setattr(mock, "MAX_FAULTS", 5)
    server = start_server()
    too_many = http_sync(server, "PUT", "/api/faults", {"faults": ["Heartbeat drop"] * 6})
    assert too_many.status == 400 and "at most 5" in too_many.json["error"], too_many
    assert http_sync(server, "GET", "/api/faults").json == {"faults": []}  # all or nothing
    five = [
        "Heartbeat drop",
        "Authorize status=Blocked",
        "@CP-2 disconnect after=3",
        "offline 5",
        "pings",
    ]
    assert http_sync(server, "PUT", "/api/faults", {"faults": five}).status == 200
    full = http_sync(server, "POST", "/api/faults", {"fault": "MeterValues drop"})
    assert full.status == 409
    assert "5 faults are in force, the most there may be" in full.json["error"]
    server.type("fault MeterValues drop")
    server.wait_for(r">> fault: 5 faults are in force, the most there may be \(fault clear some")
    server.type("fault clear Heartbeat")
    server.wait_for(r">> 1 fault\(s\) cleared")
    server.type("fault MeterValues drop")
    server.wait_for(r">> in force: fault MeterValues drop")
    assert len(http_sync(server, "GET", "/api/faults").json["faults"]) == 5


def test_faults_in_force_are_capped_on_the_command_line(monkeypatch, capsys):
    monkeypatch.setattr(mock, "MAX_FAULTS", 5)
    with pytest.raises(SystemExit) as refused:
        mock.parse_settings(["--fault=Heartbeat drop"] * 6)
    assert refused.value.code == 2
    error = capsys.readouterr().err
    assert "--fault given 6 times; at most 5 faults may be in force" in error
    assert len(mock.parse_settings(["--fault=Heartbeat drop"] * 5).faults) == 5


@charger_test
async def test_a_script_step_over_the_cap_fails_the_run_with_one_line(tmp_path, monkeypatch):
    monkeypatch.setattr(mock, "MAX_FAULTS", 2)
    script = tmp_path / "faults.txt"
    script.write_text(
        "charger\nfault Heartbeat drop\nfault Authorize drop\nfault MeterValues drop\n"
    )
    server = InProcessServer("--no-boot-data", "--script", str(script))
    charger = await Charger.connect(server.url)
    # The run ends by itself at the failed step; its lines are all written once it has stopped.
    await asyncio.get_running_loop().run_in_executor(None, server.thread.join, TIMEOUT)
    assert server.stop() == 1
    output = server.output()
    assert re.search(
        r"faults\.txt:4 FAILED fault MeterValues drop: fault: 2 faults are in force, "
        r"the most there may be",
        output,
    ), output
    assert re.search(r"scenario .*: FAIL at line 4", output) and "Traceback" not in output, output
    await charger.close()


# ------------------------------------------------------------ a frame does not scan them


@charger_test
async def test_a_frame_does_not_scan_the_faults_in_force(start_server, monkeypatch):
    """Every attribute read on a fault counts: a CALL from a charger no fault is for reads
    none, however many faults are in force for other chargers and actions."""
    server = start_server("--no-boot-data")
    charger = await Charger.connect(server.url)
    reads = [0]

    def counted(fault, name):
        reads[0] += 1
        return object.__getattribute__(fault, name)

    async def reads_for(frames: int) -> int:
        monkeypatch.setattr(mock.Fault, "__getattribute__", counted)
        reads[0] = 0
        for number in range(frames):
            assert (await charger.call("Heartbeat", {}, message_id=f"hb{number}")).type_id == 3
        monkeypatch.undo()
        return reads[0]

    one = ["@CP-2 Heartbeat drop"]
    assert (await http(server, "PUT", "/api/faults", {"faults": one})).status == 200
    with_one = await reads_for(100)
    many = (
        [f"@CP-X{number} Heartbeat drop" for number in range(400)]  # same action, others
        + [f"@CP-Y{number} disconnect after=5" for number in range(300)]
        + [f"@CP-Z{number} handshake 503 for=60" for number in range(100)]
        + ["Authorize status=Rejected", "DataTransfer status=Rejected"] * 100
    )
    assert len(many) == mock.MAX_FAULTS
    assert (await http(server, "PUT", "/api/faults", {"faults": many})).status == 200
    with_many = await reads_for(100)
    assert with_many <= with_one + 100, (with_one, with_many)  # not one read per fault per frame
    await charger.close()


@charger_test
async def test_the_first_fault_set_for_a_charger_fires_first_whoever_it_names(start_server):
    server = start_server("--no-boot-data")
    one, two = await Charger.connect(server.url, "CP-1"), await Charger.connect(server.url, "CP-2")
    server.type("fault Authorize status=Blocked times=2")
    server.wait_for(r">> in force: fault Authorize status=Blocked")
    server.type("@CP-1 fault Authorize status=Invalid times=1")
    server.wait_for(r">> in force: @CP-1 fault Authorize status=Invalid")

    async def status(charger):
        return (await charger.call("Authorize", {"idTag": "T"})).payload["idTagInfo"]["status"]

    assert await status(one) == "Blocked"  # set first, for every charger
    assert await status(two) == "Blocked"  # its last use
    assert await status(one) == "Invalid"  # then CP-1's own
    assert [await status(one), await status(two)] == ["Accepted", "Accepted"]
    server.type("faults")
    server.wait_for(r">> no faults in force")
    await one.close()
    await two.close()


@charger_test
@pytest.mark.skipif(shutil.which("openssl") is None, reason="no openssl command on PATH")
async def test_a_reply_fault_changes_and_delays_a_reply_made_later(start_server, tmp_path):
    """SignCertificate's reply waits for openssl (a LaterReply): the fault that fired on it
    changes and delays that reply when it is made, and a CALL meanwhile is a second CALL."""
    ca_path, key_path, _, _ = _certificate_authority(tmp_path)
    server = start_server(
        "--no-boot-data",
        "--ca-cert",
        str(ca_path),
        "--ca-key",
        str(key_path),
        "--files-dir",
        str(tmp_path / "files"),
        "--fault",
        "SignCertificate status=Rejected delay=0.3 times=1",
    )
    charger = await Charger.connect(server.url)
    started = time.monotonic()
    await charger.send_frame([2, "s1", "SignCertificate", {"csr": _csr("CP-1")}])
    await charger.send_frame([2, "h1", "Heartbeat", {}])
    replies = await charger.replies_until("s1")
    assert [reply.message_id for reply in replies] == ["h1", "s1"]
    assert replies[-1].payload == {"status": "Rejected"} and time.monotonic() - started >= 0.3
    server.wait_for(
        r"FAULT injected \(fault SignCertificate status=Rejected delay=0\.3 times=1\): "
        r'reply changed to \{"status":"Rejected"\}'
    )
    server.wait_for(r"!! check two-calls: sent Heartbeat while its previous CALL still awaited")
    await charger.close()
