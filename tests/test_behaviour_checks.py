"""Behaviour checks: each check catches its misbehaviour of the demo charger, and only that."""

import re
import subprocess
import sys

import pytest

from conftest import DEMO_CHARGER, TIMEOUT, InProcessDemo

# Each check fires for the demo charger told to break its rule, and stays quiet for the
# well-behaved one under the same conditions.
MISBEHAVIOUR_CASES = [
    # --misbehave, server flags, typed once the charger is up, the lines to wait for (in turn),
    # the check's rule
    (
        "skip-boot-wait",
        ("--fault", "BootNotification status=Pending interval=1 times=1"),
        None,
        [r"<- StatusNotification .*Available"],
        "call-before-boot",
    ),
    (
        "meter-backwards",
        (),
        "startRemote",
        [r"<- MeterValues .*transaction 1"] * 3,
        "energy-decreases",
    ),
    # The triggered status comes after the ones before it.
    (
        "bad-transition",
        (),
        "TriggerMessage",
        [r"<- TriggerMessage\.conf", r"<- StatusNotification"],
        "status-transition",
    ),
    (
        "fast-heartbeat",
        ("--heartbeat-interval", "2"),
        None,
        [r"<- Heartbeat"] * 2,
        "heartbeat-interval",
    ),
    (
        "two-calls",
        ("--fault", "StatusNotification delay=0.5 times=1"),
        None,
        [r"-> StatusNotification\.conf"],
        "two-calls",
    ),
]


@pytest.mark.parametrize(
    "misbehave, server_args, typed, waits, rule",
    [
        # fast-heartbeat: the well-behaved charger's two heartbeats take two intervals of 2 s (the
        # shortest one whose quarter the check tells from it: TIMING_SLACK is 1 s)
        pytest.param(
            *case, id=case[0], marks=pytest.mark.slow(4 if case[0] == "fast-heartbeat" else 1)
        )
        for case in MISBEHAVIOUR_CASES
    ],
)
@pytest.mark.parametrize("behaves", [False, True], ids=["misbehaves", "behaves"])
def test_each_behaviour_check_catches_its_misbehaviour_and_only_that(
    start_server, misbehave, server_args, typed, waits, rule, behaves
):
    server = start_server(*server_args)
    arguments = [server.url + "/CP-DEMO", "--meter-interval", "0.2"]
    if not behaves:
        arguments += ["--misbehave", misbehave]
    demo = InProcessDemo(*arguments)
    try:
        first = server.wait_for(r"CP-DEMO <- BootNotification", timeout=10)
        mark = next(index for index, line in enumerate(server.lines) if first.group(0) in line) + 1
        booted = mark
        if typed:
            server.type(typed)
        for pattern in waits:
            found = server.wait_for("CP-DEMO " + pattern, since=mark, timeout=10)
            mark = (
                next(
                    index
                    for index in range(mark, len(server.lines))
                    if found.group(0) in server.lines[index]
                )
                + 1
            )
        if not behaves:  # the misbehaviour may come after the lines waited for: its check, then
            server.wait_for(rf"CP-DEMO !! check {rule}:", since=booted, timeout=10)
        output = server.settled_output()
    finally:
        demo.stop()
    checks = re.findall(r"!! check ([\w-]+):", output)
    assert checks == ([] if behaves else [rule]), output


@pytest.mark.slow(2)
def test_the_offline_queue_arrives_in_order_after_an_outage_and_no_transaction_is_lost(
    start_server,
):
    server = start_server("--call-timeout", "5")
    # A process of its own: its reconnect must fall inside the 1 s outage, on its own clock.
    demo = subprocess.Popen(
        [
            sys.executable,
            str(DEMO_CHARGER),
            server.url + "/CP-DEMO",
            "--meter-interval",
            "0.2",
            "--reconnect",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        server.wait_for(r"CP-DEMO <- StatusNotification .*Available", timeout=10)
        server.type("startRemote")
        server.wait_for(r"CP-DEMO <- MeterValues connector 1, transaction 1")
        server.type("fault offline 1")
        server.wait_for(r"!! FAULT injected \(fault offline 1\): upgrade refused \(HTTP 503\)")
        outage = server.mark()
        back = server.wait_for(r"CP-DEMO \*\* connected", since=outage, timeout=10)
        mark = next(
            index
            for index in range(outage, len(server.lines))
            if back.group(0) in server.lines[index]
        )
        # Still charging.
        server.wait_for(r"CP-DEMO <- StatusNotification .*Charging", since=mark, timeout=10)
        after = server.output(mark)
        queued = re.findall(
            r"CP-DEMO <- MeterValues connector 1, transaction 1: Energy\.Active\.Import\.Register "
            r"(\d+) Wh",
            after.split("<- StatusNotification")[0],
        )
        assert len(queued) >= 2, after  # kept while the server was away, sent before anything else
        assert [int(value) for value in queued] == sorted(int(value) for value in queued)
        server.type("stopRemote")
        server.wait_for(r"CP-DEMO -> StopTransaction\.conf", since=mark)
        output = server.settled_output()
    finally:
        demo.terminate()
        demo.communicate(timeout=TIMEOUT)
    assert "!! check" not in output, output
    assert back
