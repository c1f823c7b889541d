"""--junit FILE: a JUnit XML report of --script runs (issue 23, item 2), several scripts in one run
with one exit status, and the CI recipe of docs/ci.md that publishes the report (item 4).

Each report is read back by junitparser (a JUnit reader from PyPI, as a CI's reporter would read
it) and checked against the structure the Jenkins, GitLab and GitHub reporters document
(``check_report_structure``).
"""

import asyncio
import io
import os
import re
import shutil
import socket
import subprocess
import sys
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import junitparser
import pytest

from conftest import (
    DEMO_CHARGER,
    HERE,
    SCENARIOS,
    SERVER,
    TIMEOUT,
    Charger,
    InProcessServer,
    charger_test,
    mock,
    run_scenario_in_process,
)

BOOT = {"chargePointVendor": "Test", "chargePointModel": "Mock-1"}
# The Ant JUnit schema's timestamp (Jenkins reads it): to the second, no zone.
ANT_TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d")
OUTCOMES = ("failure", "error", "skipped")


# ---------------------------------------------------------------- reading a report


def check_report_structure(path: Path) -> ElementTree.Element:
    """The report as the reporters document it: ``testsuites/testsuite/testcase`` (GitLab reads
    exactly that path), each testcase with name, classname and time in seconds, at most one
    failure, error or skipped (failure and error with message and type), system-out as text; each
    count (tests, failures, errors, skipped) and time the sum of what it holds; a timestamp as the
    Ant schema spells it (Jenkins); no two cases of a suite with the same classname and name
    (GitLab keeps only the first).  Returns the root."""
    root = ElementTree.parse(path).getroot()
    assert root.tag == "testsuites"
    totals = dict.fromkeys(("tests", "failures", "errors", "skipped"), 0)
    for suite in root:
        assert suite.tag == "testsuite", suite.tag
        counts = check_suite(suite)
        assert ANT_TIMESTAMP.fullmatch(suite.get("timestamp")), suite.get("timestamp")
        for name in totals:
            totals[name] += counts[name]
    for name, total in totals.items():
        assert int(root.get(name)) == total, (name, root.attrib)
    assert float(root.get("time")) >= sum(float(suite.get("time")) for suite in root) - 0.01
    return root


def check_suite(suite: ElementTree.Element) -> dict:
    counts = dict.fromkeys(("tests", "failures", "errors", "skipped"), 0)
    keys = set()
    for case in suite:
        assert case.tag == "testcase", case.tag
        assert case.get("name") and case.get("classname") == suite.get("name")
        assert float(case.get("time")) >= 0
        key = (case.get("classname"), case.get("name"))
        assert key not in keys, key
        keys.add(key)
        counts["tests"] += 1
        kinds = [child.tag for child in case]
        assert set(kinds) <= {*OUTCOMES, "system-out"}, kinds
        outcomes = [child for child in case if child.tag in OUTCOMES]
        assert len(outcomes) <= 1, kinds
        for outcome in outcomes:
            counts[{"failure": "failures", "error": "errors"}.get(outcome.tag, outcome.tag)] += 1
            assert outcome.get("message")
            if outcome.tag != "skipped":
                assert outcome.get("type") and outcome.text.startswith(outcome.get("message"))
    for name, count in counts.items():
        assert int(suite.get(name)) == count, (name, suite.attrib)
    assert float(suite.get("time")) >= 0 and suite.get("hostname")
    return counts


def read_report(path: Path) -> list:
    """The report as junitparser reads it: [(suite, [case, ...]), ...], after the structure
    check."""
    check_report_structure(path)
    report = junitparser.JUnitXml.fromfile(str(path))
    return [(suite, list(suite)) for suite in report]


def outcome_of(case) -> str:
    if case.is_passed:
        return "passed"
    return type(case.result[0]).__name__.lower()  # Failure, Error, Skipped


# ---------------------------------------------------------------- running scripts in-process


def scripts_server(tmp_path: Path, scripts: dict, *args: str) -> tuple:
    """A server running the ``scripts`` ({file name: text}, in order) with --junit; (server,
    report path)."""
    report = tmp_path / "report.xml"
    given = []
    for name, text in scripts.items():
        (tmp_path / name).write_text(text, encoding="utf-8")
        given += ["--script", str(tmp_path / name)]
    server = InProcessServer("--no-boot-data", "--no-http", *given, "--junit", str(report), *args)
    return server, report


async def finished(server) -> int:
    """The exit status of a server whose scripts end the run by themselves."""
    await asyncio.get_running_loop().run_in_executor(None, server.thread.join, TIMEOUT)
    return server.stop()


def refused(*args: str) -> tuple:
    """Run the server in this process with ``args``, for a start that is refused: (exit status,
    output)."""
    stream = io.StringIO()
    out = mock.Output(stream=stream)
    try:
        code = asyncio.run(mock.run_server(mock.parse_settings(["--port", "0", *args]), out))
    finally:
        out.close()
    return code, stream.getvalue()


# ---------------------------------------------------------------- one scenario


@charger_test
async def test_a_passing_scenario_is_a_suite_of_passed_cases_junit_readers_take(tmp_path):
    scenario = "wait BootNotification\nexpect status=Accepted  # its answer\n\nwait Heartbeat\n"
    server, report = scripts_server(tmp_path, {"pass.txt": scenario})
    charger = await Charger.connect(server.url)
    await charger.call("BootNotification", BOOT)
    await charger.call("Heartbeat", {})
    assert await finished(server) == 0, server.output()
    assert f">> JUnit report written to {report}" in server.output()
    [(suite, cases)] = read_report(report)
    assert (suite.name, suite.tests, suite.failures, suite.errors, suite.skipped) == (
        "pass.txt",
        3,
        0,
        0,
        0,
    )
    assert [case.name for case in cases] == [
        "line 1: wait BootNotification",
        "line 2: expect status=Accepted",
        "line 4: wait Heartbeat",
    ]
    assert {outcome_of(case) for case in cases} == {"passed"}
    assert [ElementTree.parse(report).getroot()[0][2].get(name) for name in ("file", "line")] == [
        str(tmp_path / "pass.txt"),
        "4",
    ]
    assert suite.time >= sum(case.time for case in cases)
    assert not list(tmp_path.glob(".report.xml.*")), "the temporary file is renamed, not left"
    await charger.close()


@charger_test
async def test_a_failed_step_says_its_line_what_was_expected_and_what_came(tmp_path):
    scenario = "wait BootNotification\nexpect status=Rejected\nwait Heartbeat\n"
    server, report = scripts_server(tmp_path, {"fail.txt": scenario})
    charger = await Charger.connect(server.url, "CP-9")
    await charger.call("BootNotification", BOOT)
    assert await finished(server) == 1, server.output()
    [(suite, cases)] = read_report(report)
    assert (suite.tests, suite.failures, suite.skipped) == (3, 1, 1)
    assert [outcome_of(case) for case in cases] == ["passed", "failure", "skipped"]
    failure = cases[1].result[0]
    assert failure.message == (
        "fail.txt:2 expect status=Rejected: expected status=Rejected in BootNotification, "
        'got "Accepted"'
    )
    assert ElementTree.parse(report).getroot()[0][1].get("line") == "2"
    # The frames before the failure, the charger's BootNotification and the server's answer.
    output = cases[1].system_out
    assert re.search(r"CP-9 <- \[2, \"m1\", \"BootNotification\"", output), output
    assert re.search(r'CP-9 -> \[3,"m1",\{"status":"Accepted"', output), output
    assert failure.text.startswith(failure.message)  # GitLab shows the body, not the message
    assert cases[2].result[0].message == "not run: an earlier step failed"
    await charger.close()


@charger_test
async def test_strict_behaviour_check_violations_are_failed_cases(tmp_path):
    scenario = "wait BootNotification\nwait StatusNotification x2\n"
    for strict in (True, False):
        folder = tmp_path / str(strict)
        folder.mkdir()
        server, report = scripts_server(
            folder, {"status.txt": scenario}, *(["--strict"] if strict else [])
        )
        charger = await Charger.connect(server.url)
        await charger.call("BootNotification", BOOT)
        for status in ("Available", "Finishing"):  # a change the 1.6 status diagram forbids
            await charger.call(
                "StatusNotification",
                {"connectorId": 1, "errorCode": "NoError", "status": status},
            )
        assert await finished(server) == (1 if strict else 0), server.output()
        [(suite, cases)] = read_report(report)
        await charger.close()
        if not strict:
            assert (suite.tests, suite.failures) == (2, 0)
            continue
        assert (suite.tests, suite.failures) == (3, 1)
        [check] = [case for case in cases if not case.is_passed]
        assert check.name.startswith(
            "--strict 1: CP-1 check status-transition: connector 1 went from Available to Finishing"
        ), check.name
        assert check.result[0].message.startswith("--strict: CP-1 check status-transition")


# ---------------------------------------------------------------- several scripts


@charger_test
async def test_several_scripts_run_in_turn_each_from_its_own_start_with_one_exit_status(tmp_path):
    scripts = {
        "a.txt": "wait BootNotification\nwait Heartbeat\n",
        # The StatusNotification sent while a.txt ran is not this script's: it times out.
        "b.txt": "wait StatusNotification within 0.3\n",
        "c.txt": "wait Heartbeat\n",
    }
    server, report = scripts_server(tmp_path, scripts)
    charger = await Charger.connect(server.url)
    await charger.call("BootNotification", BOOT)
    status = {"connectorId": 1, "errorCode": "NoError", "status": "Available"}
    await charger.call("StatusNotification", status)
    await charger.call("Heartbeat", {})
    server.wait_for(r">> scenario b\.txt: FAIL at line 1")
    await charger.call("Heartbeat", {})
    assert await finished(server) == 1, server.output()
    output = server.output()
    assert ">> scenario a.txt: PASS" in output and ">> scenario c.txt: PASS" in output
    assert ">> scripts: 2 of 3 passed; failed: b.txt" in output
    suites = read_report(report)
    assert [(suite.name, suite.tests, suite.failures) for suite, _ in suites] == [
        ("a.txt", 2, 0),
        ("b.txt", 1, 1),
        ("c.txt", 1, 0),
    ]
    failure = suites[1][1][0].result[0].message
    assert failure.startswith(
        "b.txt:1 wait StatusNotification within 0.3: expected "
        "StatusNotification x1 within 0.3 s, 0 arrived"
    ), failure
    await charger.close()


@charger_test
async def test_a_folder_runs_its_txt_scripts_in_name_order(tmp_path):
    folder = tmp_path / "ocpp"
    folder.mkdir()
    (folder / "2-heartbeat.txt").write_text("wait Heartbeat\n")
    (folder / "1-boot.txt").write_text("wait BootNotification\n")
    (folder / "notes.md").write_text("not a script\n")
    report = tmp_path / "report.xml"
    server = InProcessServer(
        "--no-boot-data", "--no-http", "--script", str(folder), "--junit", str(report)
    )
    charger = await Charger.connect(server.url)
    await charger.call("BootNotification", BOOT)
    server.wait_for(r">> scenario 1-boot\.txt: PASS")
    await charger.call("Heartbeat", {})
    assert await finished(server) == 0, server.output()
    assert ">> scripts: 2 of 2 passed" in server.output()
    assert [suite.name for suite, _ in read_report(report)] == ["1-boot.txt", "2-heartbeat.txt"]
    await charger.close()


def test_every_script_is_checked_before_any_runs(tmp_path):
    good, bad = tmp_path / "good.txt", tmp_path / "bad.txt"
    good.write_text("wait BootNotification\n")
    bad.write_text("wait BootNotification\nwait NoSuchAction\n")
    report = tmp_path / "report.xml"
    code, output = refused("--script", str(good), "--script", str(bad), "--junit", str(report))
    assert code == 2 and "listening" not in output, output
    assert re.search(r"ERROR .*bad\.txt:2: a charger does not send 'NoSuchAction'", output), output
    assert not report.exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    code, output = refused("--script", str(good), "--script", str(empty))
    assert code == 2 and "listening" not in output, output
    assert f"the script folder {empty} holds no *.txt script" in output


def test_a_report_path_that_cannot_be_written_is_refused_before_the_run(tmp_path, capsys):
    script = tmp_path / "s.txt"
    script.write_text("wait BootNotification\n")
    for path in (tmp_path / "no-such-folder" / "report.xml", tmp_path):
        code, output = refused("--script", str(script), "--junit", str(path))
        assert code == 2 and "listening" not in output, output
        [line] = [line for line in output.splitlines() if "JUnit" in line]
        assert f"cannot write the JUnit report {path}: " in line
    with pytest.raises(SystemExit) as error:
        mock.parse_settings(["--junit", str(tmp_path / "r.xml")])
    assert error.value.code == 2
    assert "--junit FILE reports a --script run" in capsys.readouterr().err


def test_a_run_stopped_midway_reports_what_ran_and_what_did_not(tmp_path):
    scripts = {
        "a.txt": "wait BootNotification within 60\nwait Heartbeat\n",
        "b.txt": "wait Heartbeat\n",
    }
    server, report = scripts_server(tmp_path, scripts)
    server.stop()  # SIGINT, SIGTERM and a CI's timeout stop it so, before any charger came
    assert f">> JUnit report written to {report}" in server.output()
    [(a, a_cases), (b, b_cases)] = read_report(report)
    assert (a.name, a.tests, a.errors, a.skipped) == ("a.txt", 3, 1, 2)
    assert [outcome_of(case) for case in a_cases] == ["skipped", "skipped", "error"]
    assert (
        a_cases[2].result[0].message
        == "the scenario stopped: the server stopped during this script"
    )
    assert (b.name, b.tests, b.skipped) == ("b.txt", 1, 1)
    assert b_cases[0].result[0].message == "not run: the server stopped first"


# ---------------------------------------------------------------- hostile text


@charger_test
async def test_a_hostile_charger_id_and_values_leave_the_report_well_formed(tmp_path):
    scenario = "wait BootNotification\nexpect chargePointVendor=Good\n"
    server, report = scripts_server(tmp_path, {"hostile.txt": scenario})
    # The id decodes to control characters, markup and a CDATA end; the vendor holds a NUL, an
    # escape, a lone surrogate and U+FFFF, none of which XML 1.0 can carry.
    charger = await Charger.connect(server.url, "CP%01%1B%3C%26%22]]%3E")
    await charger.send_frame('[2,"raw\x0b","Heartbeat",{}]')  # not JSON: a raw control character
    hostile = "\\u0000\\u001b<&>]]>\\ud800\\uffff"
    boot = '{"chargePointVendor":"' + hostile + '","chargePointModel":"M"}'
    await charger.send_frame('[2,"m1","BootNotification",' + boot + "]")
    await charger.reply_to("m1")
    assert await finished(server) == 1, server.output()
    data = report.read_bytes()
    assert b"\x00" not in data and b"\x01" not in data and b"\x0b" not in data
    [(suite, cases)] = read_report(report)  # parses: well-formed
    failure = cases[1].result[0]
    assert "\\ud800" in failure.message and "\\uffff" in failure.message, failure.message
    output = cases[1].system_out
    assert 'CP\\x01\\x1b<&"]]> <- [2,"raw\\x0b"' in output, output
    await charger.close()


def test_the_writer_bounds_and_escapes_whatever_it_is_given(tmp_path):
    """The interface another run (a replay) writes through: any text, any size."""
    every_control = "".join(chr(code) for code in range(0x20)) + "\ud800\udfff\ufffe\uffff"
    suites = [
        {
            "name": "s" + every_control,
            "timestamp": "2026-01-02T03:04:05.678+01:00",
            "cases": [
                {"name": "a" + every_control, "seconds": 0.5, "failure": None, "details": ""},
                {
                    "name": "b",
                    "seconds": 1.25,
                    "failure": "line\none" + every_control,
                    "details": "x" * 10**6 + every_control,
                },
                {"name": "c", "seconds": 0, "failure": None, "details": "", "skipped": "why"},
                {"name": "d", "seconds": 0, "failure": None, "details": "", "error": "bug"},
            ],
        },
        {"name": "empty", "timestamp": "not a time", "cases": []},
    ]
    report = tmp_path / "r.xml"
    mock.write_junit(str(report), suites)
    root = check_report_structure(report)
    assert os.stat(report).st_mode & 0o777 == 0o644
    suite = root[0]
    assert suite.get("timestamp") == "2026-01-02T02:04:05"  # UTC, as the Ant schema spells it
    assert (
        suite.get("tests"),
        suite.get("failures"),
        suite.get("errors"),
        suite.get("skipped"),
        suite.get("time"),
    ) == ("4", "1", "1", "1", "1.750")
    failure = suite[1].find("failure")
    assert "\n" not in failure.get("message") and "\\x1b" in failure.get("message")
    assert len(failure.get("message")) <= mock.JUNIT_LINE_CHARS + 40
    assert len(suite[1].find("system-out").text) <= mock.JUNIT_OUTPUT_CHARS + 40
    assert suite[1].find("system-out").text.endswith("more characters]")
    assert root[1].get("tests") == "0"  # and its timestamp, not a time, is the time of writing
    first = next(iter(junitparser.JUnitXml.fromfile(str(report))))
    assert [outcome_of(case) for case in first] == ["passed", "failure", "skipped", "error"]


# ---------------------------------------------------------------- the CI recipe of docs/ci.md

# The replay step of both jobs runs `--replay`, which branch `replay` builds: until it is merged
# the step runs without a reference session (it says so and exits 0). The lead sets this True
# once `--replay` exists; each job then replays the session its scenario step recorded.
RUN_REPLAY_STEP = True


def recipe_blocks() -> tuple:
    """The GitHub Actions job and the GitLab CI job of docs/ci.md's "A CI job for your charger"."""
    text = (HERE / "docs" / "ci.md").read_text(encoding="utf-8")
    section = text.split("\n## A CI job for your charger\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"^```yaml\n(.*?)^```", section, re.M | re.S)
    [github] = [block for block in blocks if "runs-on:" in block]
    [gitlab] = [block for block in blocks if "artifacts:" in block]
    return github, gitlab


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def _block_after(lines: list, index: int, indent: int) -> str:
    """The literal block (``|``) that starts after ``lines[index]``: its lines indented deeper."""
    body = []
    for line in lines[index + 1 :]:
        if line.strip() and _indent(line) <= indent:
            break
        body.append(line)
    depth = min(_indent(line) for line in body if line.strip())
    return "\n".join(line[depth:] for line in body).strip("\n") + "\n"


def github_run_steps(job: str) -> list:
    """Each step's ``run:`` (a one-line command or a ``|`` block), in order."""
    lines = job.splitlines()
    steps = []
    for index, line in enumerate(lines):
        match = re.fullmatch(r"( *)(?:- )?run: (.*)", line)
        if match:
            steps.append(
                _block_after(lines, index, _indent(line))
                if match.group(2) == "|"
                else match.group(2) + "\n"
            )
    return steps


def gitlab_script(job: str, key: str) -> list:
    """The entries of ``key`` (``script``, ``before_script``), in order."""
    lines = job.splitlines()
    start = next(index for index, line in enumerate(lines) if line.strip() == key + ":")
    entries = []
    for index in range(start + 1, len(lines)):
        line = lines[index]
        if line.strip() and _indent(line) <= _indent(lines[start]):
            break
        match = re.fullmatch(r"( *)- (.*)", line)
        if match and _indent(line) == _indent(lines[start]) + 2:
            entries.append(
                _block_after(lines, index, _indent(line))
                if match.group(2) == "|"
                else match.group(2) + "\n"
            )
    return entries


def charger_repository(tmp_path: Path, *more: tuple) -> Path:
    """A charger's repository with the paths the recipe names: the mock in tools/, scenarios in
    tests/ocpp/ (1-session.txt and 3-commands.txt, which does not wait for the boot, and ``more``
    (name, text) ones), and scripts/start-charger.sh, which starts the demo charger against the
    URL it is given."""
    repository = tmp_path / "charger"
    scenarios = repository / "tests" / "ocpp"
    (repository / "tools").mkdir(parents=True)
    scenarios.mkdir(parents=True)
    (repository / "scripts").mkdir()
    shutil.copy(SERVER, repository / "tools")
    # The recorded session replays the same only if it is the same session: its remote start waits
    # for the charger's first StatusNotification, which would otherwise race it (docs/ci.md,
    # "messages that cross").
    session = (SCENARIOS / "smoke.txt").read_text(encoding="utf-8")
    wait_first = "\nwait StatusNotification within 10\nstartRemote\n"
    session = session.replace("\nstartRemote\n", wait_first, 1)
    assert "wait StatusNotification within 10\nstartRemote" in session
    (scenarios / "1-session.txt").write_text(session, encoding="utf-8")
    commands = (SCENARIOS / "commands.txt").read_text(encoding="utf-8")
    commands = re.sub(r"(?m)^wait (BootNotification|DataTransfer\.conf) within \d+\n", "", commands)
    (scenarios / "3-commands.txt").write_text(commands, encoding="utf-8")
    for name, text in more:
        (scenarios / name).write_text(text, encoding="utf-8")
    start = repository / "scripts" / "start-charger.sh"
    start.write_text(f'#!/bin/sh\nexec python "{DEMO_CHARGER}" "$1" --meter-interval 0.2\n')
    start.chmod(0o755)
    return repository


def run_shell(step: str, repository: Path, port: int) -> subprocess.CompletedProcess:
    """A step as the CI runs it (bash, stopping at the first failing command), on a free port, with
    `python` this Python (websockets installed)."""
    path = os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"]
    return subprocess.run(
        ["bash", "-eo", "pipefail", "-c", step.replace("60003", str(port))],
        cwd=repository,
        env=dict(os.environ, PATH=path),
        capture_output=True,
        text=True,
        timeout=90,
    )


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def is_replay(step: str) -> bool:
    return "--replay" in step


@pytest.mark.slow(4)
def test_the_github_job_runs_its_steps_and_reports_the_demo_charger_passing(tmp_path):
    github, _ = recipe_blocks()
    steps = github_run_steps(github)
    assert steps[0] == "pip install websockets\n"  # not run here: it needs the network
    assert [is_replay(step) for step in steps[1:]] == [False, True]
    repository = charger_repository(tmp_path)
    port = free_port()
    for step in steps[1:]:
        if is_replay(step) and RUN_REPLAY_STEP:
            shutil.copy(
                repository / "ocpp-ci" / "session.jsonl",
                repository / "tests" / "ocpp" / "reference.jsonl",
            )
        run = run_shell(step, repository, port)
        assert run.returncode == 0, run.stdout + run.stderr
    assert (
        "scripts: 2 of 2 passed" in run_shell("cat ocpp-ci/scenarios.log", repository, port).stdout
    )
    # What the publish step reads: every report its glob names, each a JUnit reader takes.
    published = re.search(r"report_paths: (\S+)", github).group(1)
    reports = sorted(repository.glob(published))
    expected = ["replay.xml", "scenarios.xml"] if RUN_REPLAY_STEP else ["scenarios.xml"]
    assert [report.name for report in reports] == expected
    suites = read_report(repository / "ocpp-ci" / "scenarios.xml")
    assert [(suite.name, suite.failures, suite.skipped) for suite, _ in suites] == [
        ("1-session.txt", 0, 0),
        ("3-commands.txt", 0, 0),
    ]
    first = ElementTree.parse(reports[-1]).getroot()[0][0]
    assert first.get("file") == "tests/ocpp/1-session.txt"  # where GitHub annotates a failure
    recorded = (repository / "ocpp-ci" / "session.jsonl").read_text(encoding="utf-8")
    assert '"StartTransaction"' in recorded and '"dir":"out"' in recorded.replace(" ", "")


@pytest.mark.slow(3)
def test_the_gitlab_job_runs_its_script_and_reports_a_failed_step(tmp_path):
    _, gitlab = recipe_blocks()
    assert gitlab_script(gitlab, "before_script") == ["pip install websockets\n"]  # the network
    entries = gitlab_script(gitlab, "script")
    assert entries[-1] == 'exit "$status"\n' and sum(map(is_replay, entries)) == 1
    # A scenario the demo charger fails: it accepts any configuration key.
    unknown = "# an unknown key is refused\nChangeConfiguration key=NoSuchKey value=1\n"
    unknown += "expect status=NotSupported\n"
    repository = charger_repository(tmp_path, ("2-unknown-key.txt", unknown))
    if RUN_REPLAY_STEP:
        entries.insert(-1, "cp ocpp-ci/session.jsonl tests/ocpp/reference.jsonl\n")
    run = run_shell("".join(entries), repository, free_port())  # one shell, as GitLab runs them
    assert run.returncode == 1, run.stdout + run.stderr
    published = re.search(r"junit: (\S+)", gitlab).group(1)
    assert list(repository.glob(published))
    suites = read_report(repository / "ocpp-ci" / "scenarios.xml")
    assert [(suite.name, suite.failures) for suite, _ in suites] == [
        ("1-session.txt", 0),
        ("2-unknown-key.txt", 1),
        ("3-commands.txt", 0),
    ]
    [failed] = [case for case in suites[1][1] if not case.is_passed]
    assert failed.result[0].message == (
        "2-unknown-key.txt:3 expect status=NotSupported: expected status=NotSupported in "
        'ChangeConfiguration.conf, got "Accepted"'
    )
    case = ElementTree.parse(repository / "ocpp-ci" / "scenarios.xml").getroot()[1][1]
    assert (case.get("file"), case.get("line")) == ("tests/ocpp/2-unknown-key.txt", "3")
    assert '"ChangeConfiguration",{"key":"NoSuchKey","value":"1"}' in failed.system_out


def test_the_report_sample_in_ci_md_is_what_blocked_txt_writes(tmp_path):
    text = (HERE / "docs" / "ci.md").read_text(encoding="utf-8")
    section = text.split("\n## JUnit reports\n", 1)[1].split("\n## ", 1)[0]
    [sample] = re.findall(r"^```xml\n(.*?)^```", section, re.M | re.S)
    sample = ElementTree.fromstring(sample.encode("utf-8"))  # well-formed, "..." and all
    report = tmp_path / "report.xml"
    status, output = run_scenario_in_process(
        SCENARIOS / "blocked.txt", "--tag", "1=Blocked", "--junit", str(report)
    )
    assert status == 1, output
    real = check_report_structure(report)
    counts = ("tests", "failures", "errors", "skipped")
    assert [real.get(name) for name in counts] == [sample.get(name) for name in counts]
    [real_suite], [sample_suite] = list(real), list(sample)
    assert sorted(real_suite.attrib) == sorted(sample_suite.attrib)
    assert [real_suite.get(name) for name in ("name", *counts)] == [
        sample_suite.get(name) for name in ("name", *counts)
    ]
    assert [(case.get("name"), case.get("line")) for case in real_suite] == [
        (case.get("name"), case.get("line")) for case in sample_suite
    ]
    assert [sorted(case.attrib) for case in real_suite] == [
        sorted(case.attrib) for case in sample_suite
    ]
    assert real_suite[0].get("file").endswith(sample_suite[0].get("file"))
    real_failure, sample_failure = real_suite[4].find("failure"), sample_suite[4].find("failure")
    assert real_failure.attrib == sample_failure.attrib
    shown = sample_failure.text.split("\n...")[0]
    assert real_failure.text.replace(str(SCENARIOS), "examples/scenarios").startswith(shown)
    real_out = real_suite[4].find("system-out").text.splitlines()
    sample_out = sample_suite[4].find("system-out").text.splitlines()
    assert real_out[0].replace(str(SCENARIOS), "examples/scenarios") == sample_out[0]
    assert real_out[1:3] == sample_out[1:3]
    assert re.sub(r"\d+", "N", real_out[3]) == re.sub(r"\d+", "N", sample_out[3])
    # the frames up to the failure: the Blocked answer among them (a frame the charger sends on
    # its own right after it may come before the step fails, so it need not be the last)
    assert any('-> [3,"' in line and '"idTagInfo":{"status":"Blocked"}' in line
               for line in real_out[3:]), real_out
    assert real_suite[5].find("skipped").attrib == sample_suite[5].find("skipped").attrib
