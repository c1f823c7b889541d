"""Fault injection under attack: held replies are bounded, faults in force are capped from every
way in, and a frame's cost does not grow with the faults in force.

Every test talks to a real server (in this process, its bounds lowered where the full size would
be slow) over its websocket, its console and its HTTP port.  The full-size attacks (60,000
pipelined Heartbeats under a delay fault, 40,000 faults in one PUT) are scripts/attack_faults.py.
"""

import asyncio
import re
import shutil
import time

import pytest

import ocpp_mock_server as mock
from conftest import (
    TIMEOUT,
    Charger,
    InProcessServer,
    _certificate_authority,
    _csr,
    charger_test,
    http,
    http_sync,
)

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
