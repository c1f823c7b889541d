"""A charger test driven through the mock server's HTTP API (the example of docs/api.md).

    python -m pytest examples/test_charger_via_api.py

The mock server runs on free ports; the charger under test here is
examples/demo_charger.py: put your own charger's start command in
CHARGER_COMMAND (it gets the websocket URL as its last argument).  Only the
standard library talks to the API.
"""

import json
import re
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
MOCK_SERVER = HERE.parent / "ocpp_mock_server.py"
CHARGER_COMMAND = [sys.executable, str(HERE / "demo_charger.py"), "--meter-interval", "0.2"]


@pytest.fixture
def mock():
    """The mock server on free ports: {"ws": its websocket URL, "http": its API's base URL}."""
    server = subprocess.Popen(
        [sys.executable, str(MOCK_SERVER), "--port", "0", "--quiet"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        text=True,
    )
    urls = {}
    for line in server.stdout:  # the banner names both ports
        for name, pattern in (
            ("ws", r"listening on (ws://\S+)"),
            ("http", r"HTTP API: (http://\S+/)"),
        ):
            match = re.search(pattern, line)
            if match:
                urls[name] = match.group(1)
        if len(urls) == 2:
            break
    yield urls
    server.terminate()
    server.wait(10)


def api(mock: dict, method: str, path: str, body=None):
    """One API request: (HTTP status, JSON answer)."""
    request = urllib.request.Request(
        mock["http"] + path.lstrip("/"),
        method=method,
        data=None if body is None else json.dumps(body).encode("utf-8"),
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=35) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as error:
        return error.code, json.load(error)


def events(mock: dict, charger: str):
    """The charger's events from now on: open the stream before the charger starts, and none is
    lost."""
    stream = urllib.request.urlopen(mock["http"] + "api/events?charger=" + charger, timeout=30)

    def each_event():
        for line in stream:
            if line.startswith(b"data: "):
                yield json.loads(line[6:])

    return each_event()


def next_event(stream, event_type: str) -> dict:
    return next(event for event in stream if event["type"] == event_type)


def test_a_remote_start_charges_and_a_remote_stop_ends_the_transaction(mock):
    stream = events(mock, "CP-1")
    charger = subprocess.Popen(CHARGER_COMMAND + [mock["ws"] + "/CP-1"], stdout=subprocess.DEVNULL)
    try:
        next_event(stream, "ready")  # booted, BootData answered

        status, reply = api(mock, "POST", "/api/chargers/CP-1/startRemote", {"idTag": "1"})
        assert status == 200 and reply["result"] == {"status": "Accepted"}
        started = next_event(stream, "transaction_started")
        meter = next_event(stream, "meter_values")
        assert meter["transactionId"] == started["transactionId"]

        status, charger_state = api(mock, "GET", "/api/chargers/CP-1")
        assert [tx["transactionId"] for tx in charger_state["transactions"]] == [
            started["transactionId"]
        ]

        status, reply = api(mock, "POST", "/api/chargers/CP-1/stopRemote", {})
        assert status == 200 and reply["request"] == {"transactionId": started["transactionId"]}
        assert reply["result"] == {"status": "Accepted"}
        stopped = next_event(stream, "transaction_stopped")
        assert stopped["transactionId"] == started["transactionId"]
    finally:
        charger.terminate()
        charger.wait(10)
