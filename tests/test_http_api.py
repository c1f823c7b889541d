"""HTTP API, event stream and file server on the second port.

Real HTTP over a real socket (a small asyncio client in conftest.py, so a test can be the charger
and the API caller at once): the routes, their refusals, the event stream's order, filters, resume
and slow readers, the transcript endpoint, uploads and downloads, the token, and cross-site
protection.
"""

import asyncio
import json
import re
import socket
import subprocess
import time

import pytest

import ocpp_mock_server as mock
from conftest import (
    CHARGER_REQUEST_SAMPLES,
    TIMEOUT,
    Charger,
    EventStream,
    InProcessDemo,
    ServerProcess,
    _listing,
    assert_valid,
    booted_charger,
    charger_test,
    http,
    http_port,
    http_sync,
    is_frame,
    read_transcript,
    run,
    server_command,
)


@charger_test
async def test_api_lists_the_chargers_and_their_state(start_server):
    server = start_server()
    assert (await http(server, "GET", "/api/chargers")).json == {"apiVersion": 3, "chargers": []}
    charger = await booted_charger(server)
    await charger.call(
        "StatusNotification", dict(CHARGER_REQUEST_SAMPLES["StatusNotification"], status="Charging")
    )
    started = await charger.call("StartTransaction", CHARGER_REQUEST_SAMPLES["StartTransaction"])
    await charger.call("MeterValues", CHARGER_REQUEST_SAMPLES["MeterValues"])
    await charger.call("Heartbeat", {"extra": 1})  # a spec warning
    listing = (await http(server, "GET", "/api/chargers")).json
    one = await http(server, "GET", "/api/chargers/CP-1")
    assert one.status == 200 and one.headers["content-type"] == "application/json"
    assert listing["chargers"] == [one.json]
    record = one.json
    assert record["id"] == "CP-1" and record["connected"] is True and record["dialect"] == "ocpp1.6"
    assert record["boot"] == {"chargePointVendor": "Test", "chargePointModel": "Mock-1"}
    assert record["bootStatus"] == "Accepted"
    assert record["connectors"] == {"1": "Charging"}
    assert record["transactions"] == [
        {
            "transactionId": started.payload["transactionId"],
            "connectorId": 1,
            "idTag": CHARGER_REQUEST_SAMPLES["StartTransaction"]["idTag"],
            "meterStart": CHARGER_REQUEST_SAMPLES["StartTransaction"]["meterStart"],
        }
    ]
    assert record["lastMeterValues"] == CHARGER_REQUEST_SAMPLES["MeterValues"]
    assert record["specWarnings"] == 1
    missing = await http(server, "GET", "/api/chargers/CP-9")
    assert missing.status == 404 and "CP-9" in missing.json["error"]
    await charger.close()
    server.wait_for(r"CP-1 \*\* disconnected")
    assert (await http(server, "GET", "/api/chargers/CP-1")).json["connected"] is False


@charger_test
async def test_api_sends_an_action_and_answers_with_the_chargers_reply(start_server):
    server = start_server()
    charger = await booted_charger(server)

    async def api_call(path, body, answer):
        request = asyncio.ensure_future(
            http(server, "POST", path, body, headers={"Content-Type": "application/json"})
        )
        call = await charger.expect_call(
            path.rsplit("/", 1)[1] if "/startRemote" not in path else "RemoteStartTransaction"
        )
        if isinstance(answer, dict):
            await charger.answer(call, answer)
        else:
            await charger.send_frame([4, call.message_id] + answer)
        reply = await request
        assert reply.status == 200, reply
        return call, reply.json

    call, reply = await api_call("/api/chargers/CP-1/Reset", None, {"status": "Accepted"})
    assert call.payload == {"type": "Soft"}  # an empty body sends the console's defaults
    assert reply == {"request": {"type": "Soft"}, "result": {"status": "Accepted"}}
    call, reply = await api_call(
        "/api/chargers/CP-1/Reset", {"type": "Hard"}, {"status": "Rejected"}
    )
    assert call.payload == {"type": "Hard"} and reply["result"] == {"status": "Rejected"}
    call, reply = await api_call(
        "/api/chargers/CP-1/startRemote", {"idTag": "API-TAG"}, {"status": "Accepted"}
    )
    assert call.payload == {"connectorId": 1, "idTag": "API-TAG"}
    # Nested objects merge field by field over the defaults.
    call, reply = await api_call(
        "/api/chargers/CP-1/SetChargingProfile",
        {"csChargingProfiles": {"stackLevel": 3}},
        {"status": "Accepted"},
    )
    assert call.payload["csChargingProfiles"]["stackLevel"] == 3
    assert call.payload["csChargingProfiles"]["chargingSchedule"]["chargingRateUnit"] == "A"
    assert_valid("SetChargingProfile", call.payload)
    call, reply = await api_call(
        "/api/chargers/CP-1/ClearCache", {}, ["NotSupported", "no cache here", {"a": 1}]
    )
    assert reply == {
        "request": {},
        "error": {"code": "NotSupported", "description": "no cache here", "details": {"a": 1}},
    }
    await charger.close()


@charger_test
async def test_api_refuses_what_cannot_be_sent_with_the_right_status(start_server):
    server = start_server()
    charger = await booted_charger(server)
    unknown = await http(server, "POST", "/api/chargers/CP-1/Teleport", {})
    assert unknown.status == 400 and "unknown action" in unknown.json["error"]
    broken = await http(
        server, "POST", "/api/chargers/CP-1/Reset", {"type": "Sideways", "extra": 1}
    )
    assert broken.status == 400
    assert {problem["field"] for problem in broken.json["problems"]} == {"type", "extra"}
    not_object = await http(server, "POST", "/api/chargers/CP-1/Reset", [1, 2])
    assert not_object.status == 400 and "JSON object" in not_object.json["error"]
    not_json = await http(
        server,
        "POST",
        "/api/chargers/CP-1/Reset",
        data=b"{type:",
        headers={"Content-Type": "application/json"},
    )
    assert not_json.status == 400 and "not JSON" in not_json.json["error"]
    no_transaction = await http(server, "POST", "/api/chargers/CP-1/stopRemote", {})
    assert no_transaction.status == 400 and "no transaction is open" in no_transaction.json["error"]
    elsewhere = await http(server, "POST", "/api/chargers/CP-2/Reset", {})
    assert elsewhere.status == 404 and "CP-2" in elsewhere.json["error"]
    wrong_method = await http(
        server, "DELETE", "/api/chargers/CP-1", headers={"Content-Type": "application/json"}
    )
    assert wrong_method.status == 405 and wrong_method.headers["allow"] == "GET"
    # No reply in time: 504.  The first call stays outstanding; the second, still queued behind it,
    # is dropped.
    first = await http(server, "POST", "/api/chargers/CP-1/ClearCache?timeout=0.3", {})
    assert first.status == 504 and "stays outstanding" in first.json["error"]
    clear_cache = await charger.expect_call("ClearCache")
    second = await http(server, "POST", "/api/chargers/CP-1/Reset?timeout=0.3", {})
    assert second.status == 504 and "dropped" in second.json["error"]
    bad_timeout = await http(server, "POST", "/api/chargers/CP-1/Reset?timeout=soon", {})
    assert bad_timeout.status == 400
    await charger.answer(clear_cache, {"status": "Accepted"})
    server.wait_for(r"CP-1 <- ClearCache\.conf")
    third = asyncio.ensure_future(http(server, "POST", "/api/chargers/CP-1/UnlockConnector", {}))
    assert (await charger.expect_call("UnlockConnector")).payload == {
        "connectorId": 1
    }  # not the dropped Reset
    await charger.close()
    assert (await third).status == 502  # the charger went away before replying
    for response in (unknown, broken, not_json, elsewhere, first, (await third)):
        assert "Traceback" not in response.body.decode()


@charger_test
async def test_api_command_runs_a_console_line_and_is_never_held(start_server):
    server = start_server()
    help_reply = await http(server, "POST", "/api/command", {"line": "help Reset"})
    assert help_reply.status == 200 and help_reply.json["lines"][0].startswith("Reset")
    held = await http(server, "POST", "/api/command", {"line": "ClearCache"})
    assert held.status == 409 and "no charger is connected" in held.json["error"]
    mistyped = await http(server, "POST", "/api/command", {"line": "Rest type=Hard"})
    assert mistyped.status == 400 and "did you mean Reset" in mistyped.json["error"]
    for body in (
        {"command": "Reset"},
        {"line": "Reset\nReset"},
        {"line": "DataTransfer vendorId=@/etc/passwd"},
    ):
        assert (await http(server, "POST", "/api/command", body)).status == 400
    charger = await booted_charger(server)
    request = asyncio.ensure_future(
        http(server, "POST", "/api/command", {"line": "@CP-1 Reset type=Hard"})
    )
    call = (
        await charger.server_calls.pop(0)
        if charger.server_calls
        else await charger.expect_call("Reset")
    )
    assert call.action == "Reset" and call.payload == {
        "type": "Hard"
    }  # the 409 ClearCache was not kept
    await charger.answer(call, {"status": "Accepted"})
    reply = await request
    assert reply.status == 200
    assert reply.json["call"] == {
        "action": "Reset",
        "request": {"type": "Hard"},
        "outcome": "result",
        "result": {"status": "Accepted"},
    }
    server.wait_for(r">> api: @CP-1 Reset type=Hard")
    await charger.close()


@charger_test
async def test_event_stream_delivers_in_order_filters_and_resumes(start_server):
    server = start_server()
    everything = await EventStream.open(server)
    only_two = await EventStream.open(server, "?charger=CP-2")
    one = await booted_charger(server, "CP-1")
    two = await booted_charger(server, "CP-2")
    await two.call("Heartbeat", {})
    events = await everything.until(is_frame("out", "Heartbeat.conf"))
    ids = [event["id"] for event in events]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert {event["charger"] for event in events} == {"CP-1", "CP-2"}
    boot = next(
        event
        for event in events
        if event["type"] == "frame" and event["label"] == "BootNotification"
    )
    assert json.loads(boot["text"])[2] == "BootNotification" and boot["direction"] == "in"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", boot["ts"])
    for event in events:
        assert set(event) - {"id", "type", "charger", "ts"} <= set(
            mock.EVENT_FIELDS[event["type"]]
        ), event
    answered = next(event for event in events if event["type"] == "call_answered")
    # The frame has the payload.
    assert "payload" not in answered and answered["reply"]["status"] == "Accepted"
    filtered = await only_two.until(is_frame("out", "Heartbeat.conf"))
    assert {event["charger"] for event in filtered} == {"CP-2"}
    assert [event["id"] for event in filtered] == [
        event["id"] for event in events if event["charger"] == "CP-2"
    ]
    # Resume after the first CP-2 event: exactly the ones after it, then live ones.
    only_two.close()
    resumed = await EventStream.open(
        server, "?charger=CP-2", f"Last-Event-ID: {filtered[0]['id']}\r\n"
    )
    again = await resumed.until(is_frame("out", "Heartbeat.conf"))
    assert [event["id"] for event in again] == [event["id"] for event in filtered[1:]]
    assert "missed" not in again[0]
    await two.call("Heartbeat", {})
    live = await resumed.until(is_frame("out", "Heartbeat.conf"))
    assert live[0]["id"] > again[-1]["id"]
    bad = await http(server, "GET", "/api/events", headers={"Last-Event-ID": "yesterday"})
    assert bad.status == 400
    for stream in (everything, resumed):
        stream.close()
    await one.close()
    await two.close()


@charger_test
async def test_a_reader_that_never_reads_slows_nobody_and_learns_what_it_missed(start_server):
    server = start_server()
    stalled = await EventStream.open(server, receive_buffer=4096)
    charger = await booted_charger(server)
    big = {"vendorId": "com.example", "data": "x" * 60000}
    for _number in range(
        400
    ):  # 24 MB of frames: three times what the history keeps, and the sockets hold
        reply = await charger.call("DataTransfer", big)
        assert reply.payload["status"] in ("Accepted", "UnknownVendorId")
    await charger.call("Heartbeat", {})
    events = await stalled.until(lambda event: "missed" in event, timeout=20)
    assert events[-1]["missed"] > 0
    # It is still live after its losses.
    later = await stalled.until(is_frame("out", "Heartbeat.conf"))
    assert later[-1]["charger"] == "CP-1"
    stalled.close()
    await charger.close()


@charger_test
async def test_transcript_endpoint_gives_the_log_files_records(start_server, tmp_path):
    log = tmp_path / "transcript.jsonl"
    server = start_server("--log", str(log))
    charger = await booted_charger(server)
    other = await booted_charger(server, "CP-2")
    await charger.call("Heartbeat", {})
    await other.call("Heartbeat", {})
    reply = await http(server, "GET", "/api/transcript?charger=CP-1&limit=4")
    records = reply.json["records"]
    in_file = [record for record in read_transcript(log) if record["charger"] == "CP-1"]
    assert len(records) == 4 and records == in_file[-4:]
    assert records[-1]["dir"] == "out" and json.loads(records[-1]["frame"])[0] == 3
    everyone = (await http(server, "GET", "/api/transcript")).json["records"]
    assert everyone == read_transcript(log)[-len(everyone) :]
    assert (await http(server, "GET", "/api/transcript?limit=0")).status == 400
    await charger.close()
    await other.close()


def test_file_server_stores_and_serves_raw_and_multipart_uploads(start_server, tmp_path):
    files = tmp_path / "files"
    server = start_server("--files-dir", str(files))
    content = bytes(range(256)) * 100
    put = http_sync(server, "PUT", "/files/CP-1/image.bin", data=content)
    assert put.status == 201 and put.json == {"name": "CP-1/image.bin", "size": len(content)}
    assert (files / "CP-1" / "image.bin").read_bytes() == content
    got = http_sync(server, "GET", "/files/CP-1/image.bin")
    assert got.status == 200 and got.body == content
    # Some chargers ask before they download.
    head = http_sync(server, "HEAD", "/files/CP-1/image.bin")
    assert (
        head.status == 200
        and head.headers["content-length"] == str(len(content))
        and head.body == b""
    )
    assert got.headers["content-type"] == "application/octet-stream"  # never rendered as a page
    boundary = "----diag7MA4YWxkTrZu0gW"
    multipart = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="note"\r\n\r\nhello\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
            f'filename="..\\\\evil\\\\diag 1.zip"\r\n'
            "Content-Type: application/zip\r\n\r\n"
        ).encode()
        + content
        + (f"\r\n--{boundary}--\r\n").encode()
    )
    post = http_sync(
        server,
        "POST",
        "/files/CP-1/",
        data=multipart,
        headers={"Content-Type": "multipart/form-data; boundary=" + boundary},
    )
    # The sender's name, made safe.
    assert post.status == 201 and post.json["name"] == "CP-1/diag 1.zip"
    assert (files / "CP-1" / "diag 1.zip").read_bytes() == content
    chunked = (
        b"".join(b"%x\r\n%s\r\n" % (len(piece), piece) for piece in (b"abc", b"defg"))
        + b"0\r\n\r\n"
    )
    sent = http_sync(
        server, "PUT", "/files/notes.txt", data=chunked, headers={"Transfer-Encoding": "chunked"}
    )
    assert sent.status == 201 and (files / "notes.txt").read_bytes() == b"abcdefg"
    assert _listing(server) == {
        "CP-1/image.bin": len(content),
        "CP-1/diag 1.zip": len(content),
        "notes.txt": 7,
    }
    assert http_sync(server, "GET", "/files/CP-1/missing.bin").status == 404
    server.wait_for(r"file server: received CP-1/image\.bin \(25600 bytes\) from 127\.0\.0\.1")


@pytest.mark.parametrize(
    "path",
    [
        "/files/../escape.txt",
        "/files/%2e%2e/escape.txt",
        "/files/CP-1%2F..%2F..%2Fescape.txt",
        "/files/CP-1/..%5C..%5Cescape.txt",
        "/files//etc/escape.txt",
        "/files/.hidden",
        "/files/a%00b",
        "/files/CP-1/%2Fetc%2Fescape.txt",
    ],
)
def test_file_names_outside_the_folder_are_refused(start_server, tmp_path, path):
    files = tmp_path / "files"
    server = start_server("--files-dir", str(files))
    reply = http_sync(server, "PUT", path, data=b"payload")
    assert reply.status in (400, 404), reply
    assert not list(tmp_path.rglob("escape.txt")) and not (tmp_path / "etc").exists()
    assert _listing(server) == {}


def test_uploads_over_the_cap_or_the_quota_are_refused_and_nothing_is_kept(start_server, tmp_path):
    files = tmp_path / "files"
    server = start_server(
        "--files-dir", str(files), "--max-upload-size", "1K", "--files-quota", "3K"
    )
    assert http_sync(server, "PUT", "/files/a.bin", data=b"x" * 1024).status == 201
    over = http_sync(server, "PUT", "/files/b.bin", data=b"x" * 1025)
    assert over.status == 413 and "1024" in over.json["error"]
    # 1,025 bytes, length not announced.
    chunked = b"400\r\n" + b"x" * 1024 + b"\r\n1\r\nx\r\n0\r\n\r\n"
    assert (
        http_sync(
            server, "PUT", "/files/c.bin", data=chunked, headers={"Transfer-Encoding": "chunked"}
        ).status
        == 413
    )
    assert http_sync(server, "PUT", "/files/d.bin", data=b"x" * 1000).status == 201
    assert http_sync(server, "PUT", "/files/e.bin", data=b"x" * 1000).status == 201
    full = http_sync(server, "PUT", "/files/f.bin", data=b"x" * 1000)
    assert full.status == 507 and "quota" in full.json["error"]
    assert sorted(path.name for path in files.rglob("*")) == [
        "a.bin",
        "d.bin",
        "e.bin",
    ]  # no part files either


def test_get_diagnostics_bare_ends_with_the_file_on_disk_and_firmware_is_served(
    start_server, tmp_path
):
    files = tmp_path / "files"
    server = start_server("--files-dir", str(files))
    port = http_port(server)
    demo = InProcessDemo(server.url + "/CP-DEMO")
    try:
        server.wait_for(r"CP-DEMO <- DataTransfer\.conf")
        server.type("GetDiagnostics")
        sent = server.wait_for(r"CP-DEMO -> GetDiagnostics (\{.*\})")
        assert json.loads(sent.group(1))["location"] == f"http://127.0.0.1:{port}/files/CP-DEMO/"
        server.wait_for(
            r"CP-DEMO \*\* file server: received CP-DEMO/demo-diagnostics\.log \(\d+ bytes\)"
        )
        server.wait_for(r'CP-DEMO <- DiagnosticsStatusNotification \{"status": "Uploaded"\}')
        assert (
            (files / "CP-DEMO" / "demo-diagnostics.log")
            .read_text()
            .startswith("demo charger diagnostics")
        )
        (files / "CP-DEMO" / "firmware.bin").write_bytes(b"\x7fFIRMWARE" * 1000)
        server.type("UpdateFirmware")
        server.wait_for(r"CP-DEMO \*\* file server: sent CP-DEMO/firmware\.bin \(9000 bytes\)")
        server.wait_for(r'CP-DEMO <- FirmwareStatusNotification \{"status": "Downloaded"\}')
    finally:
        demo.stop()


@charger_test
async def test_an_upload_publishes_an_event_naming_the_file_and_sender(start_server, tmp_path):
    server = start_server("--files-dir", str(tmp_path))
    charger = await booted_charger(server, "CP-7")
    stream = await EventStream.open(server, "?charger=CP-7")
    assert (await http(server, "PUT", "/files/CP-7/log.txt", data=b"12345")).status == 201
    event = (await stream.until(lambda event: event["type"] == "file_received"))[-1]
    assert (
        event["name"] == "CP-7/log.txt"
        and event["size"] == 5
        and event["peer"].startswith("127.0.0.1:")
    )
    stream.close()
    await charger.close()


@charger_test
async def test_the_token_guards_every_request_but_the_chargers_file_urls(start_server, tmp_path):
    server = start_server("--http-token", "s3cret", "--files-dir", str(tmp_path))
    port = http_port(server)
    server.wait_for(rf"web page and HTTP API: http://127\.0\.0\.1:{port}/\?token=s3cret")
    for method, path in (
        ("GET", "/"),
        ("GET", "/api/chargers"),
        ("GET", "/api/events"),
        ("GET", "/files/"),
        ("POST", "/api/command"),
    ):
        refused = await http(server, method, path, {"line": "help"} if method == "POST" else None)
        assert refused.status == 401, (path, refused)
        assert refused.headers["www-authenticate"].startswith("Bearer")
    wrong = await http(server, "GET", "/api/chargers", headers={"Authorization": "Bearer s3cre"})
    assert wrong.status == 401
    assert (await http(server, "GET", "/?token=nope")).status == 401
    bearer = await http(server, "GET", "/api/chargers", headers={"Authorization": "Bearer s3cret"})
    assert bearer.status == 200
    login = await http(server, "GET", "/?token=s3cret")
    assert login.status == 303 and login.headers["location"] == "/"
    cookie = login.headers["set-cookie"]
    assert cookie.startswith(f"ocpp_mock_token_{port}=s3cret;")
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
    page = await http(server, "GET", "/", headers={"Cookie": "other=1; " + cookie.split(";")[0]})
    assert page.status == 200 and b"<!doctype html>" in page.body
    # A charger cannot send a token: its file URLs carry the run's secret path segment instead.
    charger = await booted_charger(server)
    server.type("GetDiagnostics")
    call = await charger.expect_call("GetDiagnostics")
    location = call.payload["location"]
    match = re.fullmatch(rf"http://127\.0\.0\.1:{port}(/files/([\w-]{{20,}})/CP-1/)", location)
    assert match, location
    stored = await http(server, "PUT", match.group(1) + "diag.txt", data=b"diagnostics")
    assert stored.status == 201 and (tmp_path / "CP-1" / "diag.txt").read_bytes() == b"diagnostics"
    assert (await http(server, "GET", match.group(1) + "diag.txt")).body == b"diagnostics"
    secret = match.group(2)
    assert (await http(server, "GET", f"/api/chargers/../files/{secret}/x")).status in (401, 404)
    assert (await http(server, "GET", "/files/CP-1/diag.txt")).status == 401
    await charger.close()


@pytest.mark.slow(1)
def test_http_flags_that_would_expose_or_cannot_work_are_start_up_errors(tmp_path):
    exposed = subprocess.run(
        server_command("--http-host", "0.0.0.0"),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=TIMEOUT * 2,
    )
    assert exposed.returncode == 2 and "give --http-token TOKEN" in exposed.stderr
    assert (
        exposed.stderr.strip()
        .splitlines()[-1]
        .startswith("ocpp_mock_server.py: error: --http-host 0.0.0.0")
    )
    for args in (["--http-token", ""], ["--max-upload-size", "lots"], ["--http-port", "70000"]):
        result = subprocess.run(
            server_command(*args),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=TIMEOUT * 2,
        )
        assert result.returncode == 2 and "Traceback" not in result.stderr, args
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        given = subprocess.run(
            server_command("--port", "0", "--http-port", str(port)),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=TIMEOUT * 2,
        )
    assert given.returncode == 1 and f"cannot listen for HTTP on 127.0.0.1:{port}" in given.stdout


@pytest.mark.slow(1.5)
def test_a_taken_default_http_port_is_one_warning_and_ocpp_runs_on():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        http_taken = taken.getsockname()[1]
        server = ServerProcess(port_args=("--port", str(http_taken - 1)), stdin=subprocess.DEVNULL)
        try:
            server.wait_ready()
        except AssertionError:
            server.stop()
            pytest.skip("the port below a free one was taken too")
        try:
            server.wait_for(
                rf"!! HTTP port {http_taken} is in use: no web page, API or file server this run"
            )

            async def boot():  # the OCPP port still serves
                charger = await Charger.connect(server.url)
                await charger.boot()
                await charger.close()

            run(boot())
        finally:
            assert server.stop() == 0
    assert "web page and HTTP API" not in server.output()


def test_no_http_means_no_second_port_and_the_old_file_defaults(start_server):
    server = start_server("--no-http")

    async def scenario():
        charger = await booted_charger(server)
        server.type("GetDiagnostics")
        assert (await charger.expect_call("GetDiagnostics")).payload == {
            "location": "ftp://127.0.0.1/diagnostics/"
        }
        await charger.close()

    run(scenario())
    assert "HTTP API" not in server.settled_output()


@charger_test
async def test_other_sites_pages_cannot_drive_the_mock(start_server):
    server = start_server()
    port = http_port(server)
    charger = await booted_charger(server)
    attempts = [
        ({"Content-Type": "text/plain"}, "Content-Type: application/json"),  # a plain form or fetch
        ({"Origin": "http://evil.example"}, "Origin"),
        ({"Host": f"evil.example:{port}"}, "Host"),  # DNS rebinding
        ({"Origin": "null"}, "Origin"),
    ]
    for headers, why in attempts:
        reply = await http(
            server, "POST", "/api/command", {"line": "Reset type=Hard"}, headers=headers
        )
        assert reply.status == 403 and why in reply.json["error"], (headers, reply)
    assert (
        await http(server, "GET", "/api/chargers", headers={"Host": "evil.example"})
    ).status == 403
    own = asyncio.ensure_future(
        http(
            server,
            "POST",
            "/api/command",
            {"line": "ClearCache"},
            headers={"Origin": f"http://127.0.0.1:{port}"},
        )
    )
    # The first CALL since boot: nothing refused was sent.
    call = await charger.expect_call("ClearCache")
    await charger.answer(call, {"status": "Accepted"})
    assert (await own).status == 200
    assert (
        await http(server, "GET", "/api/chargers", headers={"Host": f"localhost:{port}"})
    ).status == 200
    server.wait_for(
        r"!! HTTP 403 for POST /api/command from 127\.0\.0\.1:\d+: Origin \"http://evil\.example\""
    )
    await charger.close()


def test_a_malformed_or_hostile_http_request_gets_a_4xx_and_the_server_goes_on(start_server):
    server = start_server()
    port = http_port(server)
    for raw in (
        b"NONSENSE\r\n\r\n",
        b"GET nothing HTTP/1.1\r\n\r\n",
        b"GET / HTTP/1.1\r\nbad header\r\n\r\n",
        b"GET /api/chargers HTTP/1.1\r\nHost: 127.0.0.1\r\nHost: evil\r\n\r\n",
        b"GET /%ff%fe HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
        b"GET / HTTP/1.1\r\n" + b"X: y\r\n" * 200 + b"\r\n",
        b"GET /" + b"a" * 70000 + b" HTTP/1.1\r\n\r\n",
    ):
        with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as sock:
            sock.sendall(raw)
            answer = sock.makefile("rb").read()
        assert re.match(rb"HTTP/1\.1 4\d\d ", answer), (raw[:40], answer[:200])
        assert b"Traceback" not in answer
    assert http_sync(server, "GET", "/api/chargers").status == 200


@charger_test
async def test_streams_keep_every_event_while_open_then_frames_and_the_transcript_only(
    start_server, monkeypatch
):
    # Read when a stream closes, in this process.
    monkeypatch.setattr(mock, "EVENT_RESUME_SECONDS", 0.2)
    server = start_server()
    charger = await booted_charger(server)
    stream = await EventStream.open(server)
    await charger.call("Heartbeat", {})
    seen = await stream.until(is_frame("out", "Heartbeat.conf"))
    assert "call_answered" in [event["type"] for event in seen]
    stream.close()
    # The server stops keeping other events 0.2 s after the close.
    deadline = time.monotonic() + TIMEOUT
    while server.call_in_loop(
        lambda: (
            server.system.http.streams._keep_every_event is not None
            or server.system.http.history.readers > 0
        )
    ):
        assert time.monotonic() < deadline
        await asyncio.sleep(0.02)
    # A frame pair, a call_answered and a spec_problem.
    await charger.call("Heartbeat", {"extra": 1})
    replay = await EventStream.open(server, f"?lastEventId={seen[-1]['id']}")
    later = await replay.until(is_frame("out", "Heartbeat.conf"))
    # kept: frames (and operator lines) only, now
    assert [event["type"] for event in later if event["type"] != "log"] == ["frame", "frame"]
    transcript = (await http(server, "GET", "/api/transcript?charger=CP-1&limit=5")).json["records"]
    assert [record["dir"] for record in transcript if "dir" in record][-2:] == ["in", "out"]
    assert any(record.get("event") == "log" for record in transcript)  # the spec warning's line
    await charger.call("Heartbeat", {})  # a stream is open again: every event is kept
    live = await replay.until(is_frame("out", "Heartbeat.conf"))
    assert "call_answered" in [event["type"] for event in live]
    replay.close()
    await charger.close()
