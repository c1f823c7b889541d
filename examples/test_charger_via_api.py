"""A charger test driven through the mock server's HTTP API (the example of docs/api.md).

    python -m pytest examples/test_charger_via_api.py

The mock server runs on free ports; the charger under test here is
examples/demo_charger.py: put your own charger's start command in
CHARGER_COMMAND (it gets the websocket URL as its last argument).  Only the
standard library talks to the API.

A charger on a board on the network (a Raspberry Pi, an EVSE on the bench)
is not started by the test: the mock listens on every address with a token,
and the test waits for the station to connect and boot:

    CHARGER_ON_NETWORK=CP-7 OCPP_MOCK_PORT=60003 \
        python -m pytest -s examples/test_charger_via_api.py

(point the station at ws://<this machine>:60003/CP-7; the test prints the
addresses).  OCPP_MOCK_SERVER names ocpp_mock_server.py when this file is
copied into a charger's own repository.
"""

import json
import os
import re
import secrets
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
MOCK_SERVER = Path(os.environ.get("OCPP_MOCK_SERVER", HERE.parent / "ocpp_mock_server.py"))
CHARGER_COMMAND = [sys.executable, str(HERE / "demo_charger.py"), "--meter-interval", "0.2"]
# A station on the network instead: its charge point id (it connects by itself).
ON_NETWORK = os.environ.get("CHARGER_ON_NETWORK")
BOOT_TIMEOUT = 300 if ON_NETWORK else 30  # seconds to wait for the station to connect and boot


@pytest.fixture
def mock():
    """The mock server: {"ws": its websocket URL, "http": its API's base URL, "token": the API's
    token}.

    On free ports on 127.0.0.1; for a station on the network, on every address (its port from
    OCPP_MOCK_PORT, 60003 by default), with a bearer token on the HTTP API.
    """
    command = [sys.executable, str(MOCK_SERVER), "--quiet"]
    urls = {"token": None}
    if ON_NETWORK:
        urls["token"] = secrets.token_urlsafe(16)
        command += [
            "--host",
            "0.0.0.0",
            "--port",
            os.environ.get("OCPP_MOCK_PORT", "60003"),
            "--http-host",
            "0.0.0.0",
            "--http-token=" + urls["token"],  # "=": a token may start with "-"
        ]
    else:
        command += ["--port", "0"]
    server = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True)
    for line in server.stdout:  # the banner names both ports
        if ON_NETWORK and "reachable as" in line:
            print(
                "point the station at "
                + line.split("reachable as ", 1)[1].split()[0]
                + "/"
                + ON_NETWORK
            )
        for name, pattern in (
            ("ws", r"listening on (ws://\S+)"),
            ("http", r"HTTP API: (http://\S+/)"),
        ):
            match = re.search(pattern, line)
            if match:
                urls[name] = match.group(1).replace("0.0.0.0", "127.0.0.1")
        if "http" in urls:
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
        headers=_headers(mock, {"Content-Type": "application/json"}),
    )
    try:
        with urllib.request.urlopen(request, timeout=35) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as error:
        return error.code, json.load(error)


def _headers(mock: dict, headers: dict) -> dict:
    return dict(headers, Authorization="Bearer " + mock["token"]) if mock["token"] else headers


def events(mock: dict, charger: str):
    """The charger's events from now on: open the stream before the charger starts, and none is
    lost."""
    request = urllib.request.Request(
        mock["http"] + "api/events?charger=" + charger, headers=_headers(mock, {})
    )
    stream = urllib.request.urlopen(request, timeout=BOOT_TIMEOUT)

    def each_event():
        for line in stream:
            if line.startswith(b"data: "):
                yield json.loads(line[6:])

    return each_event()


def next_event(stream, event_type: str) -> dict:
    return next(event for event in stream if event["type"] == event_type)


def start_charger(mock: dict, charger_id: str):
    """The charger under test, started here; None for a station on the network (it connects by
    itself)."""
    if ON_NETWORK:
        return None
    return subprocess.Popen(
        CHARGER_COMMAND + [mock["ws"] + "/" + charger_id], stdout=subprocess.DEVNULL
    )


def booted_already(mock: dict, charger_id: str) -> bool:
    """A station on the network may have connected and booted before the stream opened."""
    status, record = api(mock, "GET", "/api/chargers/" + charger_id)
    return status == 200 and record["connected"] and record["bootStatus"] == "Accepted"


def test_a_remote_start_charges_and_a_remote_stop_ends_the_transaction(mock):
    charger_id = ON_NETWORK or "CP-1"
    stream = events(mock, charger_id)
    charger = start_charger(mock, charger_id)
    try:
        if not booted_already(mock, charger_id):
            next_event(stream, "ready")  # booted, BootData answered

        status, reply = api(mock, "POST", f"/api/chargers/{charger_id}/startRemote", {"idTag": "1"})
        assert status == 200 and reply["result"] == {"status": "Accepted"}
        started = next_event(stream, "transaction_started")
        meter = next_event(stream, "meter_values")
        assert meter["transactionId"] == started["transactionId"]

        status, charger_state = api(mock, "GET", "/api/chargers/" + charger_id)
        assert [tx["transactionId"] for tx in charger_state["transactions"]] == [
            started["transactionId"]
        ]

        status, reply = api(mock, "POST", f"/api/chargers/{charger_id}/stopRemote", {})
        assert status == 200 and reply["request"] == {"transactionId": started["transactionId"]}
        assert reply["result"] == {"status": "Accepted"}
        stopped = next_event(stream, "transaction_stopped")
        assert stopped["transactionId"] == started["transactionId"]
    finally:
        if charger is not None:
            charger.terminate()
            charger.wait(10)
