"""Scenario scripts (``--script``): exit 0 passed, 1 failed, 2 invalid, for a charger's CI."""

import re

import pytest

from conftest import (
    SCENARIOS,
    run_scenario_in_process,
)


@pytest.mark.slow(1)
@pytest.mark.parametrize("script", ["smoke.txt", "commands.txt"])
@pytest.mark.parametrize("dialect", ["ocpp1.6", "flexicharge"])
def test_the_example_scenarios_pass_against_the_demo_charger(script, dialect):
    charger_args = ("--meter-interval", "0.2") + (
        ("--flexicharge",) if dialect == "flexicharge" else ()
    )
    status, output = run_scenario_in_process(SCENARIOS / script, charger_args=charger_args)
    assert status == 0, output
    assert re.search(rf">> scenario {re.escape(script)}: PASS, (\d+) of \1 steps passed", output), (
        output
    )
    assert "Traceback" not in output


def test_a_scenario_whose_expect_cannot_hold_exits_1_naming_the_line(tmp_path):
    script = tmp_path / "blocked.txt"
    script.write_text(
        "wait BootNotification\nwait DataTransfer.conf\n# the tag is blocked below\n"
        "startRemote\nwait StartTransaction\nexpect idTagInfo.status=Accepted\nsleep 5\n"
    )
    status, output = run_scenario_in_process(script, "--tag", "1=Blocked")
    assert status == 1, output
    assert re.search(
        r"!! blocked\.txt:6 FAILED expect idTagInfo\.status=Accepted: expected "
        r"idTagInfo\.status=Accepted in StartTransaction, got \"Blocked\"",
        output,
    ), output
    assert re.search(
        r">> scenario blocked\.txt: FAIL at line 6, 4 of 6 steps passed \(1 not run\)", output
    ), output
    # It stopped at the failure.
    assert "smoke" not in output and "sleep 5" not in output.split("FAILED")[1]


@pytest.mark.slow(1)
def test_a_timed_out_wait_exits_1_with_what_arrived(tmp_path):
    script = tmp_path / "slow.txt"
    script.write_text("wait BootNotification\nwait MeterValues x2 within 1\n")
    status, output = run_scenario_in_process(script)
    assert status == 1, output
    assert (
        "slow.txt:2 FAILED wait MeterValues x2 within 1: expected MeterValues x2 within 1 s, 0 "
        "arrived" in output
    )


@pytest.mark.parametrize(
    "text, message",
    [
        (
            "wait BootNotification\nwiat StartTransaction\n",
            r"bad\.txt:2: unknown step 'wiat'; did you mean wait\?",
        ),
        (
            "Reset typ=Hard\n",
            r"bad\.txt:1: Reset not sent: typ is not a field of this message \(did you mean "
            r"type\?\)",
        ),
        (
            "Reset type=hard\n",
            r"bad\.txt:1: Reset not sent: type \"hard\" is not allowed \(did you mean Hard\?\)",
        ),
        ("@CP-1 Reset\n", r"bad\.txt:1: @CP-1 is for the interactive console, not for scripts"),
        (
            "wait RemoteStartTransaction\n",
            r"bad\.txt:1: a charger does not send 'RemoteStartTransaction'",
        ),
        ("wait Heartbeat x0\n", r"bad\.txt:1: usage: wait"),
        ("sleep soon\n", r"bad\.txt:1: expected seconds, got 'soon'"),
        (
            "wait Heartbeat\ncharger CP-1\n",
            r"bad\.txt:2: a charger line must come before every step",
        ),
        ("expect status\n", r"bad\.txt:1: usage: expect key=value"),
        ("use CP-1\n", r"bad\.txt:1: use is for the interactive console, not for scripts"),
        ("# only a comment\n", r"bad\.txt:0: the script has no steps"),
    ],
)
def test_an_invalid_script_exits_2_before_listening(tmp_path, text, message):
    script = tmp_path / "bad.txt"
    script.write_text(text)
    status, output = run_scenario_in_process(script, start_charger=False, timeout=10)
    assert status == 2, output
    assert re.search(message, output), output
    assert "listening on" not in output


@pytest.mark.slow(1)
def test_a_charger_that_never_connects_fails_by_timeout(tmp_path):
    script = tmp_path / "lonely.txt"
    script.write_text("charger CP-9 within 1\nwait BootNotification\n")
    status, output = run_scenario_in_process(script, start_charger=False, timeout=15)
    assert status == 1, output
    assert (
        "lonely.txt:1 FAILED charger CP-9 within 1: charger CP-9 did not connect within 1 s"
        in output
    )


@pytest.mark.slow(0.6)
def test_disconnect_and_expect_reconnect(tmp_path):
    script = tmp_path / "reconnect.txt"
    script.write_text(
        "charger CP-R\nwait BootNotification\ndisconnect\nexpect-reconnect within 10\n"
        "wait BootNotification within 10\nTriggerMessage requestedMessage=Heartbeat\n"
        "expect status=Accepted\nwait Heartbeat within 5\n"
    )
    status, output = run_scenario_in_process(
        script, charger_args=("--reconnect",), charger_id="CP-R"
    )
    assert status == 0, output
    assert output.count("CP-R ** connected from") == 2


@pytest.mark.slow(1)
def test_strict_scenarios_fail_on_spec_warnings_even_when_every_step_passes(tmp_path):
    script = tmp_path / "gate.txt"
    script.write_text("wait BootNotification\nsleep 1\n")
    status, output = run_scenario_in_process(script, "--strict", charger_args=("--flexicharge",))
    assert status == 1, output
    assert ">> gate.txt:2 ok  sleep 1" in output
    assert re.search(
        r"!! --strict: \d+ spec warning\(s\) about the charger's frames fail the run", output
    ), output
    assert re.search(r">> scenario gate\.txt: FAIL at --strict, 2 of 2 steps passed", output), (
        output
    )


def test_strict_smoke_scenario_fails_on_the_flexicharge_dialect():
    status, output = run_scenario_in_process(
        SCENARIOS / "smoke.txt", "--strict", charger_args=("--flexicharge",)
    )
    assert status == 1, output
    assert (
        "smoke.txt:11 FAILED wait StartTransaction within 10: StartTransaction was answered with "
        "CALLERROR "
        "OccurenceConstraintViolation" in output
    ), output


@pytest.mark.slow(2.5)
@pytest.mark.parametrize("dialect", ["ocpp1.6", "flexicharge"])
def test_the_offline_scenario_passes_against_the_demo_charger(dialect):
    charger_args = ("--meter-interval", "0.2", "--reconnect") + (
        ("--flexicharge",) if dialect == "flexicharge" else ()
    )
    # --strict makes a behaviour check fail the run; the FlexiCharge dialect is off-spec by design.
    server_args = ("--strict",) if dialect == "ocpp1.6" else ()
    status, output = run_scenario_in_process(
        SCENARIOS / "offline.txt", *server_args, charger_args=charger_args
    )
    assert status == 0, output
    assert "!! FAULT injected (fault offline 2): upgrade refused (HTTP 503)" in output
    assert "!! check" not in output


@pytest.mark.slow(0.7)
def test_a_behaviour_check_fails_a_strict_scenario_run():
    status, output = run_scenario_in_process(
        SCENARIOS / "smoke.txt",
        "--strict",
        charger_args=("--meter-interval", "0.2", "--misbehave", "meter-backwards"),
    )
    assert status == 1, output
    assert "!! check energy-decreases:" in output and "FAIL at --strict" in output
