"""Every command and sample in the docs is run by a test, or listed as exempt with the reason.

Each fenced ``sh``, ``console``, ``text`` or bare code block of README.md and docs/*.md is one
*block*, named by its file and the start of its first line; so is each command line the running
text shows in backquotes (``docs/guide.md inline: sudo ufw allow 60003/tcp``). A block is either
run here (RUN_HERE: a server command line is started with the same flags on free ports; a curl
example is sent as the same request to a server with the demo charger connected, and the answer
compared with the sample; a scenario is run; an output sample is compared with what a real run
prints), run by a test elsewhere (COVERED_ELSEWHERE), or EXEMPT, with the reason. A block added
to the docs without either fails ``test_every_block_in_the_docs_is_run_by_a_test_or_exempt``.

Samples show incidental detail (times, ports, message ids, event numbers): the comparisons
normalize it, and a ``...`` in a sample stands for anything (in a JSON sample: any value, more
keys of an object, more items of a list).
"""

import http.client
import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from conftest import (
    DEMO_CHARGER,
    HERE,
    SCENARIOS,
    SERVER,
    TIMEOUT,
    Charger,
    InProcessServer,
    ServerProcess,
    charger_test,
    mock,
    read_transcript,
    run_scenario,
    server_command,
    warm_command,
)
from conftest import http as http_request

DOCS = ("README.md", "docs/guide.md", "docs/api.md", "docs/ci.md", "docs/faults.md")
BLOCK_LANGUAGES = ("sh", "console", "text", "")
KEY_LENGTH = 72  # a block's key: its file and the start of its first line
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.M | re.S)


def doc_blocks() -> dict:
    """Every code block the docs show as a command or a sample: {key: text}, in order."""
    blocks = {}
    for name in DOCS:
        for match in FENCE.finditer((HERE / name).read_text(encoding="utf-8")):
            if match.group(1) in BLOCK_LANGUAGES:
                key = f"{name}: {match.group(2).splitlines()[0].strip()[:KEY_LENGTH].rstrip()}"
                assert key not in blocks, f"two blocks with the same first line: {key}"
                blocks[key] = match.group(2)
    return blocks


# A command in running text: `python ocpp_mock_server.py --help`, `sudo ufw allow 60003/tcp`.
INLINE_COMMAND = re.compile(
    r"(?:python3?|py|pip|sudo|apt|bash|printf|tail|kill|jq|ss|openssl|"
    r"Set-ExecutionPolicy|\.) \S|\.venv\\"
)


def doc_inline_commands() -> dict:
    """Every command line the docs' running text shows in backquotes: {key: command}."""
    commands = {}
    for name in DOCS:
        text = (HERE / name).read_text(encoding="utf-8")
        text = re.sub(r"^```.*?^```", "", text, flags=re.M | re.S)
        for span in re.findall(r"`([^`\n]+)`", text):
            if INLINE_COMMAND.match(span):
                commands[f"{name} inline: {span[:KEY_LENGTH].rstrip()}"] = span
    return commands


def block(key: str) -> str:
    """A block's text, or an inline command's."""
    return dict(doc_blocks(), **doc_inline_commands())[key]


# ---------------------------------------------------------------- what runs each block

GUIDE_SESSION = "docs/guide.md: 23:31:18.685 CP-1 ** connected from 127.0.0.1:34500 (OCPP 1.6)"
GUIDE_BANNER = (
    "docs/guide.md: 15:32:16.520 >> OCPP Mock Server 0.1.0: OCPP 1.6 and 2.0.1 central syste"
)
GUIDE_SERVER = (
    "docs/guide.md: python ocpp_mock_server.py --auto-start-after 1 --auto-stop-after 3 --lo"
)
GUIDE_SPEC = (
    "docs/guide.md: CP-7 !! spec: StatusNotification.connectorId must be an integer, got str"
)
GUIDE_TRANSCRIPT = (
    'docs/guide.md: {"ts":"2026-11-25T15:32:17.009Z","charger":"CP-1","event":"connect","pee'
)
GUIDE_KEY = (
    "docs/guide.md: ChangeConfiguration key=AuthorizationKey value=00112233445566778899aabbc"
)
GUIDE_PROFILE_3 = (
    "docs/guide.md: openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -da"
)
GUIDE_CERTIFICATES = (
    "docs/guide.md: InstallCertificate certificateType=CentralSystemRootCertificate certific"
)
GUIDE_DEMO = "docs/guide.md: python examples/demo_charger.py ws://127.0.0.1:60003/CP-1 --once"
GUIDE_DEMO_201 = (
    "docs/guide.md: python examples/demo_charger.py ws://127.0.0.1:60003/CS-1 --ocpp 2.0.1 -"
)
GUIDE_SESSION_201 = (
    "docs/guide.md: 15:35:34.870 CS-1 ** connected from 127.0.0.1:53580 (OCPP 2.0.1)"
)
GUIDE_HELP = "docs/guide.md inline: python ocpp_mock_server.py --help"
README_INLINE_SERVER = "README.md inline: python ocpp_mock_server.py"
GUIDE_INLINE_SERVER = "docs/guide.md inline: python ocpp_mock_server.py"
README_INLINE_SMOKE = (
    "README.md inline: python ocpp_mock_server.py --script examples/scenarios/smoke.txt"
)
CI_INLINE_SCRIPT = "docs/ci.md inline: python ocpp_mock_server.py --script scenario.txt"
GUIDE_INLINE_PIPED = "docs/guide.md inline: printf 'startRemote\\n' | python ocpp_mock_server.py"
GUIDE_INLINE_PI = (
    "docs/guide.md inline: python ocpp_mock_server.py --auto-start-after 5 --auto-stop-after 60 --l"
)
README_VENV_SERVER = (
    "README.md: python3 -m venv .venv && . .venv/bin/activate && pip install websockets"
)
README_VENV_SUITE = (
    "README.md: python3 -m venv .venv && . .venv/bin/activate && pip install -r requirem"
)
GUIDE_VENV_SERVER = (
    "docs/guide.md: python3 -m venv .venv && . .venv/bin/activate && pip install websockets"
)
GUIDE_THROWAWAY_CERTIFICATE = (
    "docs/guide.md inline: openssl req -x509 -newkey rsa:2048 -nodes -keyout key.pem -out cert.pem"
)
README_TRY = "README.md: python ocpp_mock_server.py --auto-start-after 1 --auto-stop-after 5"
README_CURL = "README.md: curl -s -X POST -H 'Content-Type: application/json' -d '{}' http://127.0"
API_BANNER = "docs/api.md: $ python ocpp_mock_server.py"
API_RECORD = "docs/api.md: $ curl -s $API/api/chargers/CP-1"
API_ACTIONS = (
    'docs/api.md: $ curl -s -X POST -H \'Content-Type: application/json\' -d \'{"type":"Hard"'
)
API_COMMANDS = (
    "docs/api.md: $ curl -s -X POST -H 'Content-Type: application/json' -d '{\"line\":\"@CP-1"
)
API_EVENTS = "docs/api.md: $ curl -sN $API/api/events?charger=CP-1"
API_TRANSCRIPT = 'docs/api.md: $ curl -s "$API/api/transcript?charger=CP-1&limit=2"'
API_FILES = "docs/api.md: $ curl -s -T firmware.bin $API/files/CP-1/firmware.bin            # stor"
API_ON_NETWORK = (
    "docs/api.md: CHARGER_ON_NETWORK=CP-7 OCPP_MOCK_PORT=60003 python -m pytest -s example"
)
CI_SMOKE = "docs/ci.md: $ python ocpp_mock_server.py --script examples/scenarios/smoke.txt &"
CI_FAILURE = "docs/ci.md: !! blocked.txt:6 FAILED expect idTagInfo.status=Accepted: expected idTag"
CI_SHELL_STEP = "docs/ci.md: #!/usr/bin/env bash"
FAULTS_MARKED = (
    "docs/faults.md: 12:01:07.311 CP-1 !! FAULT injected (fault BootNotification status=Pendi"
)
FAULTS_WORDS = "docs/faults.md: fault BootNotification status=Pending interval=5 times=2"
FAULTS_OFFLINE = "docs/faults.md: wait BootNotification within 30"
FAULTS_OFFLINE_RUN = (
    "docs/faults.md: python ocpp_mock_server.py --strict --script examples/scenarios/offline."
)

# Blocks run by a test in this file: {key: the test}.
RUN_HERE = {
    GUIDE_BANNER: "test_the_server_command_lines_start_and_print_the_banner_shown",
    GUIDE_SERVER: "test_the_server_command_lines_start_and_print_the_banner_shown",
    README_TRY: "test_the_server_command_lines_start_and_print_the_banner_shown",
    API_BANNER: "test_the_server_command_lines_start_and_print_the_banner_shown",
    README_CURL: "test_the_api_samples_that_read_are_what_a_real_server_answers",
    API_RECORD: "test_the_api_samples_that_read_are_what_a_real_server_answers",
    API_EVENTS: "test_the_api_samples_that_read_are_what_a_real_server_answers",
    API_TRANSCRIPT: "test_the_api_samples_that_read_are_what_a_real_server_answers",
    API_FILES: "test_the_api_samples_that_read_are_what_a_real_server_answers",
    GUIDE_KEY: "test_the_key_rotation_line_rotates_the_key_and_the_record_says_when",
    GUIDE_TRANSCRIPT: "test_the_api_samples_that_read_are_what_a_real_server_answers",
    API_ACTIONS: "test_the_api_samples_that_send_actions_are_what_a_real_server_answers",
    API_COMMANDS: "test_the_api_samples_that_send_actions_are_what_a_real_server_answers",
    CI_SMOKE: "test_the_ci_shell_step_runs_and_keeps_its_files_in_its_own_folder",
    CI_SHELL_STEP: "test_the_ci_shell_step_runs_and_keeps_its_files_in_its_own_folder",
    CI_FAILURE: "test_the_ci_failure_sample_is_what_blocked_txt_prints",
    FAULTS_MARKED: "test_the_fault_samples_are_what_a_real_run_prints_and_takes",
    FAULTS_WORDS: "test_the_fault_samples_are_what_a_real_run_prints_and_takes",
    FAULTS_OFFLINE: "test_the_offline_scenario_shown_is_the_one_that_ships",
    GUIDE_SPEC: "test_the_spec_warning_sample_is_what_a_real_run_prints",
    GUIDE_PROFILE_3: "test_the_profile_3_commands_make_certificates_the_server_takes",
    GUIDE_CERTIFICATES: "test_the_certificate_command_lines_are_valid_console_lines",
    README_INLINE_SERVER: "test_the_server_command_lines_start_and_print_the_banner_shown",
    GUIDE_INLINE_SERVER: "test_the_server_command_lines_start_and_print_the_banner_shown",
    GUIDE_HELP: "test_the_server_command_lines_start_and_print_the_banner_shown",
    GUIDE_THROWAWAY_CERTIFICATE: "test_the_profile_3_commands_make_certificates_the_server_takes",
}

# Blocks run by a test elsewhere, with the same command line: {key: "file::test"}.
SESSION_TEST = "tests/test_console.py::test_the_guides_sample_session_is_what_a_real_run_prints"
SESSION_TEST_201 = (
    "tests/test_console.py::test_the_guides_201_sample_session_is_what_a_real_run_prints"
)
EXAMPLE_SCENARIOS_TEST = (
    "tests/test_scenarios.py::test_the_example_scenarios_pass_against_the_demo_charger"
)
GUIDE_SMART_201_DEMO = (
    "docs/guide.md: python examples/demo_charger.py --ocpp 2.0.1 --smart-charging ws://127.0"
)
GUIDE_SMART_201_SESSION = "docs/guide.md: ocpp> SetChargingProfile"
SMART_201_TEST = (
    "tests/test_v201_smart_charging.py::test_the_guide_session_runs_as_written_with_the_demo_charger"
)
COVERED_ELSEWHERE = {
    # --- verdict
    "docs/guide.md: CP-1 ** transaction 1 ended: 4.2 kWh in 12 min 3 s, peak 11.0 kW; 6 mess":
    "tests/test_verdict.py::"
    "test_a_16_transaction_ends_with_its_verdict_in_the_output_and_the_transcript",
    "docs/api.md: $ curl -s $API/api/chargers/CP-1/summary": "tests/test_verdict.py::"
    "test_the_api_serves_the_verdict_and_the_charger_record_carries_it",
    # ---
    GUIDE_SESSION: SESSION_TEST,
    GUIDE_DEMO: SESSION_TEST,
    GUIDE_SESSION_201: SESSION_TEST_201,
    GUIDE_DEMO_201: SESSION_TEST_201,
    API_ON_NETWORK: "tests/test_demo_charger.py::"
    "test_the_pytest_example_waits_for_a_station_on_the_network",
    FAULTS_OFFLINE_RUN: "tests/test_scenarios.py::"
    "test_the_offline_scenario_passes_against_the_demo_charger",
    README_INLINE_SMOKE: EXAMPLE_SCENARIOS_TEST,
    CI_INLINE_SCRIPT: EXAMPLE_SCENARIOS_TEST,
    GUIDE_INLINE_PIPED: "tests/test_console.py::"
    "test_piped_lines_run_as_typed_once_a_charger_is_ready",
    # the 2.0.1 flows: smart charging, the device model, security, faults
    GUIDE_SMART_201_DEMO: SMART_201_TEST,
    GUIDE_SMART_201_SESSION: SMART_201_TEST,
    "docs/guide.md: 17:39:39.298 CS-1 ** NotifyReport requestId 1: 3 parts, 9 "
    "variables (`va": "tests/test_v201_device_model.py::"
    "test_the_demo_charger_takes_part_in_every_device_model_flow",
    "docs/guide.md: python ocpp_mock_server.py --basic-auth key-0123456789ab --certfile serv": (
        "tests/test_v201_security.py::"
        "test_the_guides_profile_upgrade_of_the_demo_charger_runs_as_written"),
    "docs/guide.md: SetNetworkProfile": "tests/test_v201_security.py::"
    "test_the_guides_profile_upgrade_of_the_demo_charger_runs_as_written",
    "docs/guide.md: UpdateFirmware": "tests/test_v201_security.py::"
    "test_the_guides_profile_upgrade_of_the_demo_charger_runs_as_written",
    'docs/guide.md: fault GetCertificateStatus payload={"status":"Accepted","ocspResult":"TU':
    "tests/test_v201_security.py::"
    "test_the_v2g_requests_are_answered_failed_and_a_fault_sets_another_answer",
    "docs/faults.md: fault BootNotification status=Pending interval=10 times=1": (
        "tests/test_v201_behaviour_checks.py::"
        "test_the_2_0_1_fault_lines_of_faults_md_work_as_written_on_a_2_0_1_station"),
    "docs/faults.md: python ocpp_mock_server.py --ocpp 2.0.1 --strict --script examples/scena": (
        "tests/test_v201_behaviour_checks.py::"
        "test_the_2_0_1_offline_scenario_passes_strict_against_the_demo_charger"
    ),
    "docs/ci.md: $ python ocpp_mock_server.py --log session.jsonl --auto-start-after 1 --": (
        "tests/test_replay.py::test_the_ci_replay_sample_is_what_a_real_run_prints"),
    "docs/guide.md: 17:40:02.114 CS-1 ** installed certificates: Accepted, 2 certificates:": (
        "tests/test_v201_result_lines.py::"
        "test_installed_certificates_are_listed_bounded_and_ours_are_named"),
}

# Blocks no test runs: {key: why}.
PIP_INSTALL = (
    "creates a venv and installs from PyPI: needs the network and a package index, "
    "which the suite never uses; the server command at its end is started by "
    "test_the_server_command_lines_start_and_print_the_banner_shown"
)
ROOT = "installs a system package: root and a package manager"
VENV = "makes or enters a virtual environment: the suite runs inside one already"
WINDOWS = "Windows only (PowerShell or cmd.exe); written from its documentation, checked by reading"
BENCH = "the benchmark: about 8 minutes of load on both cores"
EXEMPT = {
    README_VENV_SERVER: PIP_INSTALL,
    README_VENV_SUITE: PIP_INSTALL + " (the suite it runs is what CI runs)",
    GUIDE_VENV_SERVER: PIP_INSTALL,
    # Root or a package manager.
    "README.md inline: apt install chromium chromium-driver": ROOT,
    "README.md inline: sudo apt install python3-venv": ROOT,
    "docs/guide.md inline: sudo apt install python3-venv": ROOT,
    # A virtual environment: made and entered by the user, the suite runs in one already.
    "README.md inline: python3 -m venv": VENV,
    "docs/guide.md inline: python3 -m venv": VENV,
    "docs/guide.md inline: . .venv/bin/activate": VENV,
    "docs/guide.md inline: . .venv/bin/activate && python ocpp_mock_server.py": VENV
    + "; the server command after it is started by the banner test",
    # Another operating system.
    "docs/guide.md inline: py -m venv .venv": WINDOWS,
    "docs/guide.md inline: .venv\\Scripts\\Activate.ps1": WINDOWS,
    "docs/guide.md inline: Set-ExecutionPolicy -Scope CurrentUser RemoteSigned": WINDOWS,
    "docs/guide.md inline: pip install websockets": WINDOWS + " (and a package index)",
    "docs/guide.md inline: .venv\\Scripts\\activate.bat": WINDOWS,
    # A firewall.
    "docs/guide.md inline: sudo ufw allow 60003/tcp": "a firewall rule, as root",
    # A Pi.
    GUIDE_INLINE_PI: "the Raspberry Pi's background start, with fixed /tmp paths and port 60003; "
    "the same flags on free ports are started by the banner test (the guide's section 4 command)",
    "docs/guide.md inline: tail -f /tmp/ocpp-server.txt": "follows the Pi's output file forever",
    # The suite, CI and the long runs themselves.
    "README.md inline: python -m pytest": "the suite itself, which runs this test",
    "README.md inline: bash .ci/run": "CI: the suite on seven websockets releases, minutes long",
    "README.md inline: bash scripts/suite_under_load.sh": "the suite five times under load",
    "README.md inline: python bench/bench.py": BENCH,
    "README.md inline: python -m ocpp_mock_server": "how every server process of the suite starts "
    "(conftest.py's server_command); the memory figure beside it is the benchmark's",
    "README.md inline: bash scripts/attack_fields.sh [EXAMPLES]": "the property test at full "
    "size, minutes of CPU; the suite runs the same test at 100 cases",
    "docs/guide.md inline: python bench/bench.py": BENCH,
    "README.md inline: python scripts/screenshots.py": "needs Chromium (apt install, root); "
    "tests/test_page.py drives the same page",
    "docs/guide.md inline: python scripts/attack_files.py": "the full-size parallel-upload "
    "attack; tests/test_files.py checks the same quota scaled down",
    # Named, not given to run: an operator's tools on other processes and files.
    "docs/guide.md inline: kill -9": "names the signal a crash test sends "
    "(test_the_transcript_survives_kill_9 sends it)",
    "docs/guide.md inline: kill <pid>": "stops another user's process, by a pid to fill in",
    "docs/guide.md inline: ss -ltnp | grep 60003": "lists other processes' sockets (their pid "
    "needs root)",
    "docs/guide.md inline: ss -tm": "measures the kernel's socket memory during the "
    "full-size attack script, not a step to follow",
    "docs/guide.md inline: openssl req -verify": "names the check the server runs itself "
    "(tests/test_certs.py)",
    "docs/guide.md inline: jq -r 'select(.dir==\"in\") | .frame' session.jsonl": "needs jq, "
    "which the suite does not depend on; the records it reads are checked (GUIDE_TRANSCRIPT)",
}


def _test_names(path: Path) -> set:
    return set(re.findall(r"^(?:async )?def (test_\w+)", path.read_text(encoding="utf-8"), re.M))


def classification_problems(blocks: dict) -> list:
    """What is wrong with how ``blocks`` are classified (unclassified, twice, stale)."""
    tables = (RUN_HERE, COVERED_ELSEWHERE, EXEMPT)
    problems = [
        "no test runs it and EXEMPT does not name it: " + key
        for key in blocks
        if not any(key in table for table in tables)
    ]
    problems += [
        "classified twice: " + key for key in blocks if sum(key in table for table in tables) > 1
    ]
    return problems + [
        "classified, but the docs no longer have it: " + key
        for table in tables
        for key in table
        if key not in blocks
    ]


def test_every_block_in_the_docs_is_run_by_a_test_or_exempt():
    blocks = dict(doc_blocks(), **doc_inline_commands())
    assert classification_problems(blocks) == []
    here = _test_names(Path(__file__))
    assert set(RUN_HERE.values()) <= here, set(RUN_HERE.values()) - here
    for where in COVERED_ELSEWHERE.values():
        file, _, test = where.partition("::")
        assert test in _test_names(HERE / file), where
    assert all(len(reason) > 20 for reason in EXEMPT.values())
    new = dict(blocks, **{"docs/guide.md: sudo new-command": "sudo new-command\n"})
    assert classification_problems(new) == [
        "no test runs it and EXEMPT does not name it: docs/guide.md: sudo new-command"
    ]


# ---------------------------------------------------------------- comparing with a sample

ANY = "..."
# Values that differ from run to run: compared by presence only.
INCIDENTAL_KEYS = {
    "id",
    "run",
    "ts",
    "peer",
    "modified",
    "folder",
    "currentTime",
    "transactionId",
    "text",
    "frame",
    "timestamp",
}


def normalized(line: str) -> str:
    """A line (or a value) without what changes from run to run."""
    line = re.sub(r"^(\d\d:\d\d:\d\d\.\d{3}|\.\.\.) ", "", line)
    line = re.sub(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z", "TS", line)
    line = re.sub(r"127\.0\.0\.1:\d+", "127.0.0.1:PORT", line)
    line = re.sub(r"\S*ocpp-mock-files-\w+", "FILES", line)
    line = re.sub(r"OCPP Mock Server \S+:", "OCPP Mock Server V:", line)
    line = re.sub(r"websockets [\d.]+\)", "websockets V)", line)
    return re.sub(r"\b\d+\.\d+ s\b", "T s", line)


def line_pattern(sample: str) -> "re.Pattern":
    """A sample line as a pattern: normalized, ``...`` standing for anything."""
    return re.compile(".*".join(re.escape(part) for part in normalized(sample).split(ANY)))


def assert_lines_shown(sample_lines, output: str) -> None:
    """Every sample line is, normalized, a line of ``output``."""
    real = [normalized(line) for line in output.splitlines()]
    for line in sample_lines:
        pattern = line_pattern(line)
        assert any(pattern.fullmatch(one) for one in real), f"not printed: {line!r}\n{output}"


def sample_json(text: str):
    """A JSON sample, its ``...`` made JSON: ``{..., ...}`` an object with more keys, ``[...]``."""
    try:
        return json.loads(text)
    except ValueError:  # a sample with ``...`` in it
        pass
    text = re.sub(r",\s*\.\.\.\s*}", ',"...":"..."}', text)
    text = re.sub(r",\s*\.\.\.\s*]", ',"..."]', text)
    text = re.sub(r"\[\s*\.\.\.\s*]", '["..."]', text)
    text = re.sub(r"{\s*\.\.\.\s*}", '{"...":"..."}', text)
    return json.loads(text)


def differences(sample, real, path: str = "") -> list:
    """Where ``real`` is not what ``sample`` shows."""
    if sample == ANY:
        return []
    if isinstance(sample, dict):
        if not isinstance(real, dict):
            return [f"{path}: {real!r} is not an object"]
        keys = set(sample) - {ANY}
        problems = [f"{path}: {key} missing" for key in sorted(keys - set(real))]
        if ANY not in sample:
            problems += [f"{path}: {key} not in the sample" for key in sorted(set(real) - keys)]
        for key in sorted(keys & set(real) - INCIDENTAL_KEYS):
            problems += differences(sample[key], real[key], f"{path}.{key}")
        return problems
    if isinstance(sample, list):
        more = bool(sample) and sample[-1] == ANY
        items = sample[:-1] if more else sample
        too_few = not isinstance(real, list) or len(real) < len(items)
        if too_few or (not more and len(real) != len(items)):
            return [f"{path}: {real!r}, not {len(items)} item(s)"]
        return [
            problem
            for index, item in enumerate(items)
            for problem in differences(item, real[index], f"{path}.{index}")
        ]
    if isinstance(sample, str) and isinstance(real, str):
        return [] if line_pattern(sample).fullmatch(normalized(real)) else [f"{path}: {real!r}"]
    return [] if sample == real else [f"{path}: {real!r}, not {sample!r}"]


def test_the_comparison_tells_a_sample_from_a_different_answer():
    sample = sample_json('{"a":1,"b":{"c":"x ...",...},"d":[...],"ts":"2026-11-25T22:14:03.512Z"}')
    assert differences(sample, {"a": 1, "b": {"c": "x y", "e": 2}, "d": [3], "ts": "now"}) == []
    assert differences(sample, {"a": 2, "b": {}, "d": 1, "ts": 1, "f": 0}) == [
        ": f not in the sample",
        ".a: 2, not 1",
        ".b: c missing",
        ".d: 1, not 0 item(s)",
    ]


# ---------------------------------------------------------------- server command lines


STARTUP = 15.0  # seconds for a Python process to start (and listen) on a loaded machine


def listening(server: ServerProcess) -> ServerProcess:
    """``server`` once it listens, given the time a loaded machine needs to start Python."""
    server.url = server.wait_for(r"listening on (wss?://\S+)", timeout=STARTUP).group(1)
    return server


def server_arguments(line: str) -> list:
    """The flags of a ``python ocpp_mock_server.py ...`` line, its shell words left out."""
    words = shlex.split(line.lstrip("$ "), comments=True)
    words = words[words.index("ocpp_mock_server.py") + 1 :]
    return [word for word in words if word != "&"]


@pytest.mark.slow(2)
def test_the_server_command_lines_start_and_print_the_banner_shown(tmp_path):
    lines = {
        README_TRY: block(README_TRY).splitlines()[0],
        GUIDE_SERVER: block(GUIDE_SERVER),
        API_BANNER: block(API_BANNER).splitlines()[0],
    }
    servers = {
        key: ServerProcess(  # the README's in a fresh interpreter, as the reader starts it
            *server_arguments(line),
            "--port",
            "0",
            stdin=subprocess.DEVNULL,
            cwd=tmp_path,
            real=key == README_TRY,
        )
        for key, line in lines.items()
    }
    try:
        for server in servers.values():
            listening(server)
            server.wait_for(r">> web page and HTTP API: http://127\.0\.0\.1:\d+/")
        bare = servers[API_BANNER]
        bare.wait_for(r"name a charger with the URL path")
        assert_lines_shown(block(API_BANNER).splitlines()[1:], bare.output())
        assert_lines_shown(block(GUIDE_BANNER).splitlines(), bare.output())
    finally:
        codes = {key: server.stop() for key, server in servers.items()}
    assert codes == dict.fromkeys(lines, 0), {key: servers[key].output() for key in servers}
    assert (tmp_path / "session.jsonl").exists()  # the guide's --log
    usage = subprocess.run(
        server_command(*server_arguments(block(GUIDE_HELP)), real=True),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert usage.returncode == 0 and usage.stdout.startswith("usage: "), usage
    # The README's second terminal runs the guide's demo charger command, which the guide's
    # session test runs (COVERED_ELSEWHERE); its `. .venv/bin/activate` is the venv's (EXEMPT).
    demo_line = block(README_TRY).splitlines()[2]
    assert demo_line.split("#")[0].strip() == GUIDE_DEMO.split(": ", 1)[1]


# ---------------------------------------------------------------- the API's samples


def curl_request(line: str, base: str, folder: Path) -> tuple:
    """A sample's ``curl`` line as (method, path, body, headers, output file)."""
    line = line.lstrip("$ ").replace("$API", base).replace("http://127.0.0.1:60004", base)
    words = shlex.split(line, comments=True)
    method, body, headers, output, url = "GET", None, {}, None, None
    options = iter(words[1:])
    for word in options:
        if word == "-X":
            method = next(options)
        elif word == "-H":
            name, _, value = next(options).partition(":")
            headers[name] = value.strip()
        elif word == "-d":
            body = next(options).encode("utf-8")
            method = "POST" if method == "GET" else method
        elif word == "-T":
            method, body = "PUT", (folder / next(options)).read_bytes()
        elif word == "-o":
            output = next(options)
        elif not word.startswith("-"):
            url = word
    return method, url, body, headers, output


def send(url: str, method: str = "GET", body: bytes = None, headers: dict = None) -> tuple:
    """One HTTP request: (status, body bytes)."""
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    if body is not None and "Content-Type" not in (headers or {}):
        request.add_header("Content-Type", "application/octet-stream")
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT) as reply:
            return reply.status, reply.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def exchanges(text: str) -> list:
    """A block's ``$ curl`` lines, each with the sample answer below it: [(line, answer text)]."""
    pairs = []
    for line in text.splitlines():
        if line.startswith("$ "):
            pairs.append([line, ""])
        elif pairs:
            pairs[-1][1] += line.strip()
    return [tuple(pair) for pair in pairs]


class DemoSetup:
    """The server the API samples are sent to (in this process, with --log), the demo charger
    connected to it as CP-1, and a folder for the files the samples name."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.log = folder / "session.jsonl"
        self.server = InProcessServer(
            "--log", str(self.log), "--call-timeout", "5", "--files-dir", str(folder / "files")
        )
        port = int(self.server.wait_for(r"web page and HTTP API: http://[\d.]+:(\d+)/").group(1))
        self.base = f"http://127.0.0.1:{port}"
        self.demo = subprocess.Popen(
            warm_command(
                [sys.executable, str(DEMO_CHARGER), self.server.url + "/CP-1"]
                + ["--meter-interval", "0.2"]
            ),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
        )
        self.server.wait_for(r"CP-1 <- StatusNotification .*Available", timeout=STARTUP)

    def run(self, line: str) -> tuple:
        """Send a sample's curl line: (status, the answer, as JSON when it is)."""
        method, url, body, headers, output = curl_request(line, self.base, self.folder)
        status, answer = send(url, method, body, headers)
        if output is None:
            return status, json.loads(answer.decode("utf-8"))
        return status, answer

    def check(self, line: str, sample: str) -> None:
        status, answer = self.run(line)
        assert 200 <= status < 300, (line, status, answer)
        assert differences(sample_json(sample), answer) == [], (line, answer)

    def rebooted(self, since: int) -> None:
        """Wait for the demo charger's reboot (after a Reset) to be over."""
        self.server.wait_for(r"CP-1 \*\* disconnected", since=since)
        lines = self.server.output(since).splitlines()
        after = since + next(
            index for index, line in enumerate(lines) if "CP-1 ** disconnected" in line
        )
        self.server.wait_for(r"CP-1 <- StatusNotification .*Available", since=after, timeout=10)

    def close(self) -> None:
        self.demo.terminate()
        self.demo.wait(TIMEOUT)
        assert self.server.stop() == 0
        assert "Traceback" not in self.server.output(), self.server.output()


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    setup = DemoSetup(tmp_path_factory.mktemp("docs-api"))
    yield setup
    setup.close()


def record_fields_documented() -> set:
    """The fields api.md's prose names for a charger record."""
    text = (HERE / "docs" / "api.md").read_text(encoding="utf-8")
    paragraph = text.split("A\nrecord's ")[1].split("\n\n")[0]
    return set(re.findall(r"(?:fields:|;|\) and)\s+`(\w+)`", paragraph))


def sse_messages(text: str) -> list:
    """The messages of an event stream's text: [(event name or None, SSE id, data as JSON)]."""
    messages = []
    for chunk in text.strip().split("\n\n"):
        fields = {}
        for line in re.sub(r"\n\s+", " ", chunk).splitlines():  # a sample's continuation lines
            name, _, value = line.partition(": ")
            fields[name] = value
        if "data" in fields:
            messages.append((fields.get("event"), fields.get("id"), sample_json(fields["data"])))
    return messages


def _message_key(event_name, data: dict) -> tuple:
    return event_name, data.get("type"), data.get("label", data.get("action"))


def check_events_sample(demo: DemoSetup, sample: str) -> None:
    """api.md's event stream: the retry line, then messages whose SSE id ends with their id,
    shaped as shown."""
    wanted = {_message_key(name, data): data for name, _, data in sse_messages(sample)}
    port = int(demo.base.rsplit(":", 1)[1])
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=TIMEOUT)
    connection.request("GET", "/api/events?charger=CP-1")
    stream = connection.getresponse()
    try:
        assert stream.readline().decode() == sample.splitlines()[0] + "\n"  # retry: 1000
        status, _ = demo.run(
            "$ curl -s -X POST -H 'Content-Type: application/json' "
            '-d \'{"requestedMessage":"Heartbeat"}\' '
            "$API/api/chargers/CP-1/TriggerMessage"
        )
        assert status == 200
        deadline = time.monotonic() + TIMEOUT
        chunk = ""
        while wanted and time.monotonic() < deadline:
            line = stream.readline().decode("utf-8")
            if line.strip():
                chunk += line
                continue
            for name, sse_id, data in sse_messages(chunk):
                if "id" in data:
                    assert sse_id.rsplit(":", 1)[-1] == str(data["id"]), (sse_id, data)
                key = _message_key(name, data)
                if key in wanted and data.get("direction", "in") == "in":
                    assert differences(wanted.pop(key), data) == [], data
            chunk = ""
        assert not wanted, f"no such event came: {list(wanted)}"
    finally:
        connection.close()


def test_the_api_samples_that_read_are_what_a_real_server_answers(demo):
    status, started = demo.run(block(README_CURL).strip())
    assert status == 200 and started["result"] == {"status": "Accepted"}, started
    mark = demo.server.mark()
    demo.server.wait_for(r"CP-1 <- MeterValues connector 1, transaction", since=mark)
    ((line, sample),) = exchanges(block(API_RECORD))
    demo.check(line, sample)
    assert set(demo.run(line)[1]) == record_fields_documented(), "api.md's record fields"
    check_events_sample(demo, block(API_EVENTS).split("\n", 1)[1])
    for line, sample in exchanges(block(API_TRANSCRIPT)):
        status, answer = demo.run(line)
        assert status == 200 and len(answer["records"]) == 2, answer
        for record in answer["records"]:
            assert set(record) == set(sample_json(sample)["records"][0]), record
    check_file_samples(demo)
    records = [json.loads(line) for line in demo.log.read_text().splitlines()]
    for line in block(GUIDE_TRANSCRIPT).splitlines():
        shown = sample_json(line)
        assert any(differences(shown, record) == [] for record in records), line


def check_file_samples(demo: DemoSetup) -> None:
    """api.md's files: store an image, list the folder, fetch what the demo charger uploaded."""
    (demo.folder / "firmware.bin").write_bytes(b"\xff" * 1048576)
    (store, stored), (listing, listed), (fetch, _) = exchanges(block(API_FILES))
    demo.check(store, stored)
    demo.check(listing, listed)
    mark = demo.server.mark()
    status, _ = demo.run(
        "$ curl -s -X POST -H 'Content-Type: application/json' -d '{}' "
        "$API/api/chargers/CP-1/GetDiagnostics"
    )
    assert status == 200
    demo.server.wait_for(r"CP-1 <- DiagnosticsStatusNotification .*Uploaded", since=mark)
    status, body = demo.run(fetch)
    assert status == 200 and body, (fetch, status, body)


def test_the_api_samples_that_send_actions_are_what_a_real_server_answers(demo):
    (reset, reset_sample), (clear, clear_sample) = exchanges(block(API_ACTIONS))
    mark = demo.server.mark()
    demo.check(reset, reset_sample)
    demo.rebooted(mark)
    demo.check(clear, clear_sample)
    (reset, reset_sample), (chargers, chargers_sample) = exchanges(block(API_COMMANDS))
    mark = demo.server.mark()
    demo.check(reset, reset_sample)
    demo.rebooted(mark)
    demo.check(chargers, chargers_sample)


# ---------------------------------------------------------------- ci.md


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.slow(3)
def test_the_ci_shell_step_runs_and_keeps_its_files_in_its_own_folder(tmp_path):
    repository = tmp_path / "charger-repository"
    (repository / "examples" / "scenarios").mkdir(parents=True)
    shutil.copy(SERVER, repository)
    shutil.copy(DEMO_CHARGER, repository / "examples")
    shutil.copy(SCENARIOS / "smoke.txt", repository / "examples" / "scenarios")
    step = block(CI_SHELL_STEP)
    assert "pip install websockets\n" in step  # the one line not run here: it needs the network
    step = step.replace("pip install websockets\n", "").replace("60003", str(_free_port()))
    (tmp_path / "step.sh").write_text(step)
    path = os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"]
    environment = dict(os.environ, PATH=path)  # `python` is this Python, with websockets
    run = subprocess.run(
        ["bash", str(tmp_path / "step.sh")],
        cwd=repository,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    sample = [line for line in block(CI_SMOKE).splitlines() if not line.startswith(("$ ", "..."))]
    assert_lines_shown(sample, run.stdout)
    assert sorted(os.listdir(repository)) == ["examples", "ocpp-ci", "ocpp_mock_server.py"]
    assert sorted(os.listdir(repository / "ocpp-ci")) == ["ocpp-mock.log", "ocpp-transcript.jsonl"]
    assert "add `ocpp-ci/` to" in (HERE / "docs" / "ci.md").read_text(encoding="utf-8")


def test_the_ci_failure_sample_is_what_blocked_txt_prints():
    status, output = run_scenario(SCENARIOS / "blocked.txt", "--tag", "1=Blocked")
    assert status == 1, output
    assert_lines_shown(block(CI_FAILURE).splitlines(), output)


# ---------------------------------------------------------------- faults.md and the guide


@charger_test
async def test_the_fault_samples_are_what_a_real_run_prints_and_takes(start_server, tmp_path):
    marked = block(FAULTS_MARKED).splitlines()
    log = tmp_path / "faults.jsonl"
    fault = re.search(r"\(fault (.*?)\)", marked[0]).group(1)
    server = start_server("--fault", fault, "--log", str(log))
    charger = await Charger.connect(server.url)
    boot = {"chargePointVendor": "V", "chargePointModel": "M"}
    reply = await charger.call("BootNotification", boot)
    assert reply.payload["status"] == "Pending"
    server.wait_for(r"!! FAULT injected")
    assert_lines_shown(marked[:1], server.output())
    await charger.close()
    records = read_transcript(log)
    assert any(differences(sample_json(marked[1]), record) == [] for record in records), records
    for line in block(FAULTS_WORDS).splitlines():
        # parse_command raises CommandError for a line the console would refuse
        assert mock.parse_command(line).word == "fault", line


def test_the_offline_scenario_shown_is_the_one_that_ships():
    def steps(text):
        return [
            " ".join(line.split())
            for line in text.splitlines()
            if line.strip() and not line.startswith("#")
        ]

    assert steps(block(FAULTS_OFFLINE)) == steps((SCENARIOS / "offline.txt").read_text())


@charger_test
async def test_the_spec_warning_sample_is_what_a_real_run_prints(start_server):
    server = start_server()
    charger = await Charger.connect(server.url, "CP-7")
    await charger.boot()
    status = {"connectorId": "1", "errorCode": "NoError", "status": "Available"}
    await charger.call("StatusNotification", status)
    await charger.call("MeterValues", {"connectorId": 1})
    server.wait_for(r"CP-7 !! spec: MeterValues")
    assert_lines_shown(block(GUIDE_SPEC).splitlines(), server.output())
    await charger.close()


@pytest.mark.slow(3)
def test_the_profile_3_commands_make_certificates_the_server_takes(tmp_path):
    commands = block(GUIDE_PROFILE_3).replace("\\\n", " ").splitlines()
    assert commands[-1].startswith("python ocpp_mock_server.py ")
    throwaway = block(GUIDE_THROWAWAY_CERTIFICATE)  # the guide's profile 2 certificate
    made = subprocess.run(
        ["bash", "-c", "\n".join(["set -e", throwaway, *commands[:-1]])],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert made.returncode == 0, made.stderr
    servers = [
        ServerProcess(
            *arguments, "--port", "0", "--no-http", stdin=subprocess.DEVNULL, cwd=tmp_path
        )
        for arguments in (
            server_arguments(commands[-1]),
            ["--certfile", "cert.pem", "--keyfile", "key.pem"],
        )
    ]
    try:
        for server in servers:
            assert listening(server).url.startswith("wss://127.0.0.1:"), server.output()
    finally:
        codes = [server.stop() for server in servers]
    assert codes == [0, 0], [server.output() for server in servers]


def test_the_certificate_command_lines_are_valid_console_lines(tmp_path):
    (tmp_path / "ca.pem").write_text(mock.DEMO_CERTIFICATE)
    for line in block(GUIDE_CERTIFICATES).splitlines():
        # parse_command raises CommandError for a line the console would refuse
        command = mock.parse_command(line, files_from=str(tmp_path))
        assert command.word not in ("help", "echo"), line


@charger_test
async def test_the_key_rotation_line_rotates_the_key_and_the_record_says_when(start_server):
    server = start_server()
    charger = await Charger.connect(server.url)
    await charger.boot()
    server.type(block(GUIDE_KEY).strip())
    call = await charger.expect_call("ChangeConfiguration")
    key = "00112233445566778899aabbccddeeff0011aabb"
    assert call.payload == {"key": "AuthorizationKey", "value": key}
    await charger.answer(call, {"status": "Accepted"})
    server.wait_for(r"CP-1 \*\* AuthorizationKey rotated")
    record = (await http_request(server, "GET", "/api/chargers/CP-1")).json
    when = record["authorizationKeyRotated"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", when), record
    await charger.close()
