"""Replay (issue 23 item 1): a --log transcript recorded at test time, played again against the
demo charger, and compared.

Each recording is a real session of the demo charger with an in-process server; each replay is
an in-process server with --replay and the demo charger (--once: it ends the session by
disconnecting, which ends the replay).  The demo charger runs in this process too
(``InProcessDemo``: the same code on a real websocket, without a process to start): these tests
are about the server's replay, not the demo charger's process.  A test that replays several
times starts its replays side by side, each on a server of its own."""

import asyncio
import io
import json
import re
from xml.etree import ElementTree

import pytest

from conftest import ROOT, InProcessDemo, InProcessServer, made_once, mock, run_scenario_in_process

# A short session: BootData, a remote start, two MeterValues, a remote stop.  The stop goes out
# half a meter interval after a MeterValues, so that no MeterValues crosses it on the wire (one
# that did would be in the recording, or in the replay, by chance: see docs/ci.md).
SESSION = ("--auto-start-after", "0.2", "--auto-stop-after", "1.0", "--heartbeat-interval", "2")
# Faults the 1.6 recording carries, so that a replay must inject them again: a boot left Pending
# once (the charger must wait before booting again) and a StatusNotification answered late (a
# charger that sends its next CALL meanwhile breaks the two-calls rule).
FAULTS = ("--fault", "BootNotification status=Pending interval=1 times=1",
          "--fault", "StatusNotification delay=0.3 times=1")
DEMO = ("--once", "--meter-interval", "0.4")
VERSIONS = {"1.6": (), "flexicharge": ("--flexicharge",), "2.0.1": ("--ocpp", "2.0.1")}


def demo(url: str, charger_id: str, *args: str) -> InProcessDemo:
    return InProcessDemo(f"{url}/{charger_id}", *DEMO, *args)


def record(path, *demo_args: str, server_args=(), chargers=None):
    """A session of the demo charger(s) recorded with --log into ``path``: ``demo_args`` for
    CP-1, or each of ``chargers`` ((id, args), side by side)."""
    chargers = chargers or (("CP-1", demo_args),)
    server = InProcessServer("--log", str(path), *SESSION, *server_args)
    started = []
    try:
        started = [demo(server.url, charger_id, *args) for charger_id, args in chargers]
        assert [charger.wait(30) for charger in started] == [0] * len(started), (
            server.output(), [charger.stdout for charger in started])
        for charger_id, _ in chargers:
            server.wait_for(rf"{charger_id} \*\* disconnected")
    finally:
        for charger in started:
            charger.stop()
        assert server.stop() == 0
    return path


class Replaying:
    """--replay ``path`` on a server of its own, against the demo charger(s): (id, args)."""

    def __init__(self, path, *flags: str, chargers=(("CP-1", ()),)):
        self.server = InProcessServer("--replay", str(path), "--replay-timeout", "2", *flags)
        self.chargers = []
        try:
            for charger_id, args in chargers:
                self.chargers.append(demo(self.server.url, charger_id, *args))
        except BaseException:
            self.result()
            raise

    def result(self) -> tuple:
        """(exit status, output), once the replay has ended the server."""
        try:
            self.server.thread.join(60)
            assert not self.server.thread.is_alive(), self.server.output()
        finally:
            for charger in self.chargers:
                charger.stop()
            self.server.stop()
        return self.server.result.get("code"), self.server.output()


def replay(path, *flags: str, chargers=(("CP-1", ()),)):
    """(exit status, output) of --replay ``path`` against the demo charger(s): (id, args)."""
    return Replaying(path, *flags, chargers=chargers).result()


def replays(*runs: tuple) -> list:
    """``replay(*run)`` for each run, side by side; their (exit status, output)s in order.  A run
    ends with a dict: replay()'s keyword arguments."""
    started = []
    try:
        for run in runs:
            keywords = run[-1] if isinstance(run[-1], dict) else {}
            started.append(Replaying(*(run[:-1] if keywords else run), **keywords))
    finally:
        results = [replaying.result() for replaying in started]
    return results


def unusable(*args: str):
    """(exit status, output) of a --replay that must not start."""
    stream = io.StringIO()
    options = mock.parse_settings(["--port", "0", *args])
    out = mock.Output(stream=stream)
    code = asyncio.run(mock.run_server(options, out))
    out.close()
    return code, stream.getvalue()


class Recordings(dict):
    """The recordings, each made once in a run of the suite, when a test first asks for it (by
    whichever xdist worker asks first: ``made_once``): "faults" (1.6, with FAULTS) and a plain
    session per dialect of VERSIONS.  The tests replay them (or edited copies of them) as often as
    they like; none writes to them."""

    def __init__(self, tmp_path_factory):
        super().__init__()
        self.tmp_path_factory = tmp_path_factory

    def __missing__(self, kind: str):
        if kind == "faults":
            name, make = "faults.jsonl", lambda path: record(path, server_args=FAULTS)
        elif kind == "2.0.1 long":  # a transaction of seqNo 0 to 6: Started, five Updated, Ended
            name, make = "session-2.0.1-long.jsonl", lambda path: record(
                path, *VERSIONS["2.0.1"], server_args=("--auto-stop-after", "2.2"))
        else:
            name, make = f"session-{kind}.jsonl", lambda path: record(path, *VERSIONS[kind])
        path = self[kind] = made_once(self.tmp_path_factory, name, make)
        return path


@pytest.fixture(scope="module")
def recordings(tmp_path_factory):
    return Recordings(tmp_path_factory)


def verdict(output: str) -> str:
    return re.search(r">> replay .*", output).group(0)


@pytest.mark.slow(2)
@pytest.mark.parametrize("version", list(VERSIONS))
def test_a_recorded_session_replays_the_same_against_the_same_charger(recordings, version):
    code, output = replay(recordings[version], chargers=(("CP-1", VERSIONS[version]),))
    assert code == 0, output
    assert re.search(r"SAME, 1\d message\(s\) compared", verdict(output)), output
    # The server's own CALLs went out again, the automation was off: one remote start, one stop.
    started = re.findall(r"-> (RemoteStartTransaction|RequestStartTransaction) ", output)
    stopped = re.findall(r"-> (RemoteStopTransaction|RequestStopTransaction) ", output)
    assert len(started) == 1 and len(stopped) == 1, output
    if version == "flexicharge":
        assert "BootData" in output and "transactionID" in output


@pytest.mark.slow(4)
def test_recorded_faults_are_injected_again(recordings, tmp_path):
    report = tmp_path / "replay.xml"
    code, output = replay(recordings["faults"], "--junit", str(report))
    assert code == 0, output
    # The --junit report: one testsuite, a testcase per compared message, none failed.
    suite = ElementTree.parse(report).getroot()[0]
    assert suite.get("name") == "replay faults.jsonl CP-1" and suite.get("failures") == "0"
    assert int(suite.get("tests")) >= 10 and suite[0].get("name").startswith("frame 1: ")
    assert "FAULT injected (fault BootNotification status=Pending interval=1 times=1)" in output
    assert "FAULT injected (fault StatusNotification delay=0.3 times=1)" in output
    assert output.count("<- BootNotification") == 2  # it waited and booted again, as then


# What each --misbehave switch shows as: the check that fires, or the first difference (the
# status diagram check fires only when the charger's extra statuses come before the remote start).
MISBEHAVIOURS = [
    ("skip-boot-wait", (), r"check call-before-boot: .*"),
    ("meter-backwards", (), r"check energy-decreases: .*"),
    ("bad-transition", (), r"(check status-transition: |.*status=Finishing).*"),
    ("fast-heartbeat", ("--replay-heartbeats",), r"(check heartbeat-interval: .*|.* Heartbeat.*)"),
    ("two-calls", (), r"check two-calls: .*"),
]
# The switches a recorded fault provokes: the charger calls while its boot is Pending, or before a
# late answer came.  The others show against the plain session (a second shorter than "faults").
SHOWN_BY_FAULTS = {"skip-boot-wait", "two-calls"}


@pytest.mark.slow(1.5)
@pytest.mark.parametrize("switch, flags, fired", MISBEHAVIOURS)
def test_a_misbehaving_charger_replays_different(recordings, switch, flags, fired):
    recording = recordings["faults" if switch in SHOWN_BY_FAULTS else "1.6"]
    code, output = replay(recording, *flags, chargers=(("CP-1", ("--misbehave", switch)),))
    assert code == 1, output
    line = verdict(output)
    assert "DIFFERENT" in line and "first: " in line, output
    assert re.search(rf"!! replay: {fired} at frame \d+", output), output
    if switch == "meter-backwards":
        assert re.search(r"first: expected MeterValues meterValue\.0\.sampledValue\.0\.value=\d+, "
                         r"got meterValue\.0\.sampledValue\.0\.value=-\d+ at frame \d+", line)


def edited_run(path, old: str, new: str) -> str:
    """The transcript's lines again, as a second run, with ``old`` replaced by ``new``."""
    text = path.read_text(encoding="utf-8")
    assert old in text
    return text.replace(old, new)


def test_the_last_run_replays_unless_replay_run_picks_another(tmp_path, recordings):
    path = tmp_path / "two-runs.jsonl"
    # The second run: the charger said it was another model then.
    path.write_text(recordings["1.6"].read_text(encoding="utf-8") + edited_run(
        recordings["1.6"], 'DemoCharger', 'OtherCharger'), encoding="utf-8")
    last, first, ignored = replays((path,), (path, "--replay-run", "1"),
                                   (path, "--replay-ignore", "chargePointModel"))
    code, output = last
    assert code == 1, output
    assert re.search(r"replay two-runs.jsonl \(run 2, CP-1\): DIFFERENT, \d+ difference\(s\) .*"
                     r"first: expected BootNotification chargePointModel=OtherCharger, got "
                     r"chargePointModel=DemoCharger at frame 1$", verdict(output)), output
    code, output = first
    assert code == 0, output
    assert "(run 1, CP-1): SAME" in output
    code, output = ignored
    assert code == 0, output


def test_replay_ignore_takes_dotted_paths_and_the_tolerance_meter_readings(tmp_path, recordings):
    path = tmp_path / "edited.jsonl"
    records = [json.loads(line) for line in recordings["1.6"].read_text().splitlines()]
    for record in records:  # then: the serial number was another, the meter a little ahead
        if record.get("dir") == "in":
            record["frame"] = record["frame"].replace('"demo-001"', '"demo-002"').replace(
                '"meterStop": ', '"meterStop": 1')
    path.write_text("".join(json.dumps(record) + "\n" for record in records))
    strict, lenient = replays((path,), (path, "--replay-ignore",
                                        "BootNotification.chargePointSerialNumber",
                                        "--replay-tolerance", "95"))
    code, output = strict
    assert code == 1, output
    assert "expected BootNotification chargePointSerialNumber=demo-002, got " \
           "chargePointSerialNumber=demo-001 at frame 1" in output
    assert re.search(r"expected StopTransaction meterStop=1\d+, got meterStop=\d+", output)
    code, output = lenient
    assert code == 0, output


@pytest.mark.slow(2.5)
def test_each_recorded_charger_replays_at_once_or_one_is_chosen(tmp_path):
    path = record(tmp_path / "two.jsonl",
                  chargers=(("CP-1", ()), ("CP-2", ("--connector", "2"))))
    both, chosen, missing = replays(
        (path, {"chargers": (("CP-1", ()), ("CP-2", ("--connector", "2")))}),
        (path, "--replay-charger", "CP-2", {"chargers": (("CP-9", ("--connector", "2")),)}),
        (path, "--replay-timeout", "0.5"))  # CP-1 ended it or not, CP-2 never comes
    code, output = both
    assert code == 0, output
    assert "(run 1, CP-1): SAME" in output and "(run 1, CP-2): SAME" in output
    # One chosen: played against whatever charger connects.
    code, output = chosen
    assert code == 0, output
    assert "CP-9 >> replay two.jsonl (run 1, CP-2): SAME" in output
    # Both, with one of them missing: a difference.
    code, output = missing
    assert code == 1, output
    assert "expected charger CP-2 to connect, none did" in output


@pytest.mark.parametrize("content, reason", [
    ("hello\n", r"line 1 is not a --log transcript record: hello"),
    ('{"ts": "2026-01-01T00:00:00.000Z", "charger": null, "event": "start"}\n',
     r"holds no frames"),
    ("\xff\n", None),
])
def test_a_file_that_is_not_a_transcript_exits_2_with_one_line(tmp_path, content, reason):
    path = tmp_path / "not.jsonl"
    path.write_bytes(content.encode("latin-1"))
    code, output = unusable("--replay", str(path))
    assert code == 2, output
    lines = output.strip().splitlines()
    assert len(lines) == 1 and lines[0].split(" ", 1)[1].startswith("ERROR --replay: "), output
    if reason:
        assert re.search(reason, lines[0]), output
    assert "Traceback" not in output


def test_flags_that_name_no_run_or_charger_exit_2(recordings, tmp_path):
    path = str(recordings["faults"])
    code, output = unusable("--replay", path, "--replay-run", "2")
    assert code == 2 and "holds 1 run(s); --replay-run 2 names none" in output, output
    code, output = unusable("--replay", path, "--replay-charger", "CP-7")
    assert code == 2 and "has no charger CP-7 (it has CP-1)" in output, output
    code, output = unusable("--replay", str(tmp_path / "missing.jsonl"))
    assert code == 2 and "cannot read" in output, output


@pytest.mark.slow(2)
def test_a_script_replays_with_a_replay_step(tmp_path, recordings):
    (tmp_path / "session.jsonl").write_text(recordings["faults"].read_text())
    script = tmp_path / "replay.txt"
    script.write_text("replay session.jsonl\n")
    code, output = run_scenario_in_process(script, charger_args=DEMO)
    assert code == 0, output
    assert "replay.txt:1 ok  replay session.jsonl" in output
    script.write_text("replay nowhere.jsonl\n")
    code, output = run_scenario_in_process(script, start_charger=False)
    assert code == 2 and "replay.txt:1: cannot read" in output, output


@pytest.mark.slow(2)
def test_replay_junit_suites_have_a_case_per_compared_message(tmp_path, recordings):
    server = InProcessServer()
    try:
        recording = mock.load_recording(str(recordings["faults"]))
        run = server.call_in_loop(lambda: mock.ReplayRun(server.system, recording,
                                                         mock.ReplayRules(quiet=2.0)))
        future = asyncio.run_coroutine_threadsafe(run.run(), server.loop)
        charger = demo(server.url, "CP-1", "--misbehave", "meter-backwards")
        try:
            result = future.result(60)
        finally:
            charger.stop()
    finally:
        assert server.stop() == 0
    suites = mock.replay_junit_suites(result)
    assert [suite["name"] for suite in suites] == ["replay faults.jsonl CP-1"]
    suite = suites[0]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", suite["timestamp"])
    assert len(suite["cases"]) >= 15
    for case in suite["cases"]:
        assert set(case) == {"name", "seconds", "failure", "details"}
        assert isinstance(case["seconds"], float) and case["seconds"] >= 0
        assert case["failure"] is None or "\n" not in case["failure"]
    failed = [case for case in suite["cases"] if case["failure"]]
    assert failed and any("check energy-decreases" in case["failure"] for case in failed)
    assert all("now, around frame" in case["details"] for case in failed
               if case["name"].startswith("frame"))
    assert result.status == 1


def ci_sample() -> list:
    """The lines of docs/ci.md's replay sample."""
    text = (ROOT / "docs" / "ci.md").read_text(encoding="utf-8")
    section = text.split("## Replaying a recorded session", 1)[1].split("\n## ", 1)[0]
    return re.search(r"```text\n(.*?)```", section, re.S).group(1).splitlines()


def sample_pattern(line: str) -> "re.Pattern":
    """A sample line as a pattern: any time, any number where it shows one."""
    line = re.sub(r"^\d\d:\d\d:\d\d\.\d{3} ", "", line)
    parts = [re.sub(r"(\\-)?\d+", r"-?\\d+", re.escape(part)) for part in line.split("...")]
    return re.compile(r"\d\d:\d\d:\d\d\.\d{3} " + ".*".join(parts))


@pytest.mark.slow(5)  # the sample's own session: a 3 s recording, then its replay
def test_the_ci_replay_sample_is_what_a_real_run_prints(tmp_path):
    lines = ci_sample()
    commands = [line[2:].split() for line in lines if line.startswith("$ ")]
    assert commands[0][:2] == commands[3][:2] == ["python", "ocpp_mock_server.py"]
    assert commands[0][-1] == commands[3][-1] == "&" and commands[2] == ["kill", "%1"]
    assert commands[1][:2] == commands[4][:2] == ["python", "examples/demo_charger.py"]
    path = tmp_path / "session.jsonl"
    server = InProcessServer(*[str(path) if word == "session.jsonl" else word
                               for word in commands[0][2:-1]])
    try:
        charger = InProcessDemo(f"{server.url}/CP-1", *commands[1][3:])
        try:
            assert charger.wait(60) == 0, charger.stdout
        finally:
            charger.stop()
        server.wait_for(r"CP-1 \*\* disconnected")
    finally:
        assert server.stop() == 0
    flags = [str(path) if word == "session.jsonl" else word for word in commands[3][2:-1]]
    code, output = replay(path, *flags[2:], chargers=(("CP-1", commands[4][3:]),))
    assert flags[:2] == ["--replay", str(path)] and code == 1, output
    shown = lines[lines.index("...") + 1:]
    assert len(shown) >= 3 and shown[-1].split(" ")[2] == ">>"
    for line in shown:
        assert any(sample_pattern(line).fullmatch(real) for real in output.splitlines()), (
            line, output)


def test_a_recorded_callerror_is_answered_again(tmp_path, recordings):
    path = tmp_path / "refused.jsonl"
    records = [json.loads(line) for line in recordings["1.6"].read_text().splitlines()]
    asked = {}
    for record in records:  # then: the server refused the charger's first StopTransaction
        frame = json.loads(record.get("frame", "null"))
        if record.get("dir") == "in" and frame[0] == 2:
            asked[frame[1]] = frame[2]
        elif record.get("dir") == "out" and frame[0] == 3 and asked.get(frame[1]) == \
                "StopTransaction":
            record["frame"] = json.dumps([4, frame[1], "GenericError", "recorded refusal", {}])
    path.write_text("".join(json.dumps(record) + "\n" for record in records))
    code, output = replay(path)
    assert code == 0, output
    assert re.search(r"CP-1 -> StopTransaction CALLERROR GenericError recorded refusal", output)


# The 2.0.1 switches a recorded session without an outage shows, and the check each fires (the
# outage ones, no-offline-flag and replay-reversed, are in tests/test_v201_behaviour_checks.py).
MISBEHAVIOURS_201 = [
    ("repeat-seqno", "seqno-repeated"),
    ("skip-seqno", "seqno-gap"),  # seqNo 5 never comes: the long session
    ("updated-before-started", "transaction-event-order"),
    ("started-twice", "started-twice"),
    ("available-while-charging", "status-contradicts-transaction"),
    ("repeat-status", "status-repeated"),
]


@pytest.mark.slow(4.5)
def test_a_misbehaving_2_0_1_station_replays_different(recordings):
    """Each 2.0.1 --misbehave switch against the recorded 2.0.1 session of the well-behaved demo
    charger: exit 1, the first difference and the check that fired named; the well-behaved demo
    charger against it: exit 0 (replays side by side, one server each)."""
    runs = [(recordings["2.0.1 long"], {"chargers": (("CP-1", (
        *VERSIONS["2.0.1"], "--misbehave", switch)),)}) for switch, _ in MISBEHAVIOURS_201]
    well_behaved = (recordings["2.0.1 long"], {"chargers": (("CP-1", VERSIONS["2.0.1"]),)})
    *results, (code, output) = replays(*runs, well_behaved)
    assert code == 0 and "SAME" in verdict(output), output  # the differences are the switches'
    for (switch, rule), (code, output) in zip(MISBEHAVIOURS_201, results):
        assert code == 1, (switch, output)
        assert "DIFFERENT" in verdict(output) and "first: " in verdict(output), (switch, output)
        assert re.search(rf"!! (replay: )?check {rule}: ", output), (switch, output)
