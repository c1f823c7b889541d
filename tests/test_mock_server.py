"""Tests not yet moved to their area's file in this folder (see conftest.py for the helpers)."""

import asyncio
import base64
import io
import json
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time

import pytest
import websockets

import ocpp_mock_server as mock
from conftest import (
    CHARGER_REQUEST_SAMPLES,
    DEMO_CHARGER,
    HERE,
    NOW,
    SERVER,
    TIMEOUT,
    Charger,
    EventStream,
    ServerProcess,
    _basic,
    _certificate_authority,
    _connect_kwargs,
    _connect_with_key,
    _demo,
    _listing,
    _raw_close_code,
    _raw_handshake,
    _raw_send,
    _refusal_status,
    _self_signed_certificate,
    _signed_by,
    assert_valid,
    booted_charger,
    charger_test,
    check_transcript_is_a_whole_session,
    headless_browser,
    http,
    http_port,
    http_sync,
    is_frame,
    read_transcript,
    run,
    urllib_quote,
    wait_in_browser,
)


@charger_test
async def test_charger_id_is_the_percent_decoded_last_path_segment(start_server):
    server = start_server("--no-boot-data")

    charger = await Charger.connect(server.url, "ocpp/central/Station%20%231")
    await charger.call("Heartbeat", {})
    await charger.close()

    server.wait_for(r"Station #1 \*\* connected from")


@charger_test
async def test_a_charger_without_subprotocol_is_served_with_a_warning(start_server):
    server = start_server("--no-boot-data")

    charger = await Charger.connect(server.url, subprotocols=())
    assert charger.ws.subprotocol is None
    assert (await charger.call("Heartbeat", {}))[0] == 3
    await charger.close()
    negotiated = await Charger.connect(server.url, "CP-2", subprotocols=("ocpp2.0.1", "ocpp1.6"))
    assert negotiated.ws.subprotocol == "ocpp1.6"
    await negotiated.close()

    server.wait_for(r"CP-1 !! spec: no ocpp1.6 subprotocol negotiated \(charger offered: none\)")


@charger_test
async def test_a_charger_offering_only_other_subprotocols_is_refused_in_every_mode(start_server):
    server = start_server("--no-boot-data")
    with pytest.raises(websockets.InvalidHandshake) as refused:
        await Charger.connect(server.url, "CP-20", subprotocols=("ocpp2.0.1", "ocpp2.0"))
    assert _refusal_status(refused.value) == 400
    server.wait_for(r"!! refused a connection( from 127\.0\.0\.1:\d+)? to \"/CP-20\": HTTP 400, the charger offered "
                    r"the subprotocols ocpp2\.0\.1, ocpp2\.0, not ocpp1\.6")
    served = await Charger.connect(server.url, "CP-16", subprotocols=("ocpp2.0.1", "ocpp1.6"))
    assert served.ws.subprotocol == "ocpp1.6"
    await served.close()


def test_port_in_use_is_one_clear_line():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run([sys.executable, str(SERVER), "--port", str(port)], stdin=subprocess.DEVNULL,
                                capture_output=True, text=True, timeout=TIMEOUT * 2)
    assert result.returncode == 1
    assert "Traceback" not in result.stdout + result.stderr
    hint = re.search(r"port %d on 127\.0\.0\.1 is already in use .* --port (\d+) \(the HTTP port takes the one "
                     r"after it\)" % port, result.stdout)
    assert hint, result.stdout
    suggested = int(hint.group(1))
    assert suggested != port
    for free in (suggested, suggested + 1):  # the hint's port, and its neighbour for the HTTP port, are free
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", free))


def test_default_address_comes_from_config_py(tmp_path):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    shutil.copy(SERVER, tmp_path / SERVER.name)
    config = (HERE / "config.py").read_text().replace("ws://127.0.0.1:60003", "ws://127.0.0.1:%d" % port)
    (tmp_path / "config.py").write_text(config)
    server = ServerProcess(script=tmp_path / SERVER.name, port_args=(), stdin=subprocess.DEVNULL).wait_ready()
    try:
        assert server.url == "ws://127.0.0.1:%d" % port
    finally:
        assert server.stop() == 0


def test_default_address_without_config_py(tmp_path):
    assert mock.config_default_address(str(tmp_path / "missing.py")) == ("127.0.0.1", 60003)
    (tmp_path / "config.py").write_text("this is not python (")
    assert mock.config_default_address(str(tmp_path / "config.py")) == ("127.0.0.1", 60003)


def test_config_py_is_the_chargers_configuration():
    import config
    configuration = config.Configurations()
    assert configuration._protocols == ["ocpp1.6"]
    configuration._useMockServer = True
    assert configuration.getServerAddress() == "ws://127.0.0.1:60003"
    configuration._useMockServer = False
    assert configuration.getServerAddress() != "ws://127.0.0.1:60003"


def test_help_and_version():
    result = subprocess.run([sys.executable, str(SERVER), "--help"], capture_output=True, text=True, timeout=10)
    assert result.returncode == 0
    for flag in ("--host", "--port", "--dialect", "--strict", "--auto-start-after", "--call-timeout"):
        assert flag in result.stdout


@charger_test
async def test_quit_closes_chargers_with_going_away_and_exits_zero():
    server = ServerProcess().wait_ready()

    charger = await Charger.connect(server.url)
    server.type("quit")
    with pytest.raises(websockets.ConnectionClosed):
        await charger.receive()
    assert charger.ws.close_code == 1001

    assert server.proc.wait(TIMEOUT) == 0
    server.stop()


def test_sigterm_stops_cleanly():
    server = ServerProcess(stdin=subprocess.DEVNULL).wait_ready()
    server.proc.send_signal(signal.SIGTERM)
    assert server.proc.wait(TIMEOUT) == 0
    server.stop()
    assert "Traceback" not in server.output()


@pytest.mark.parametrize("dialect", ["ocpp1.6", "flexicharge"])
def test_end_to_end_demo_session_in_both_dialects(start_server, tmp_path, dialect):
    log = tmp_path / "transcript.jsonl"
    log.write_text('{"ts":"2026-01-01T00:00:00.000Z","charger":"old","event":"connect"}\n')
    server = start_server("--auto-start-after", "0.2", "--auto-stop-after", "1.2", "--log", str(log),
                          stdin=subprocess.DEVNULL)
    command = [sys.executable, "-W", "error::DeprecationWarning", str(DEMO_CHARGER), server.url + "/CP-DEMO",
               "--once", "--meter-interval", "0.2"]
    if dialect == "flexicharge":
        command.append("--flexicharge")
    charger = subprocess.run(command, capture_output=True, text=True, timeout=30)
    assert charger.returncode == 0, charger.stdout + charger.stderr
    assert "transaction 1 stopped" in charger.stdout
    server.wait_for(r"CP-DEMO \*\* disconnected")
    assert server.stop() == 0
    records = read_transcript(log)
    assert records[0]["charger"] == "old"  # appended, never truncated
    check_transcript_is_a_whole_session(records, "CP-DEMO", dialect == "flexicharge")
    if dialect == "flexicharge":
        server.wait_for(r"CP-DEMO \*\* speaks the FlexiCharge dialect")
        server.wait_for(r"CP-DEMO <- MeterValues connector 1, transaction 1: SoC \d+ %, Power\.Active\.Import "
                        r"7400 W, Energy\.Active\.Import \d+ Wh")
    else:
        assert "spec:" not in server.output()  # complete: the server has stopped


def test_the_demo_charger_answers_every_console_command_validly(start_server):
    server = start_server("--log", "/dev/null")
    demo = subprocess.Popen([sys.executable, str(DEMO_CHARGER), server.url + "/CP-DEMO", "--meter-interval", "0.2"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        server.wait_for(r"CP-DEMO <- StatusNotification .*Available", timeout=10)
        for action in mock.SERVER_ACTION_DEFAULTS:
            mark = server.mark()
            server.type(action if action != "RemoteStopTransaction" else "RemoteStopTransaction transactionId=1")
            reply = server.wait_for(r"CP-DEMO <- %s(\.conf| CALLERROR) (.*)$" % action, since=mark)
            assert reply.group(1) == ".conf", reply.group(0)
            assert_valid(action + "Response", json.loads(reply.group(2)))
        assert "spec:" not in server.settled_output()
    finally:
        demo.terminate()
        demo.wait(TIMEOUT)


def test_a_non_loopback_host_prints_a_warning():
    server = ServerProcess("--host", "0.0.0.0", stdin=subprocess.DEVNULL).wait_ready()
    try:
        server.wait_for(r"!! listening on 0\.0\.0\.0, not loopback: any machine that reaches this port can act "
                        r"as a charger")
    finally:
        assert server.stop() == 0
    quiet = ServerProcess("--host", "127.0.0.1", stdin=subprocess.DEVNULL).wait_ready()
    assert quiet.stop() == 0
    assert "not loopback" not in quiet.output()


@charger_test
async def test_a_text_frame_that_is_not_utf8_closes_with_1007_and_others_are_served(start_server):
    server = start_server("--no-boot-data")
    port = int(server.url.rsplit(":", 1)[1])
    sock = _raw_handshake(port)
    _raw_send(sock, 0x1, b'[2,"u","Heartbeat",{"x":"\xff\xfe"}]')
    assert _raw_close_code(sock) == 1007  # RFC 6455 8.1: MUST fail the connection
    sock.close()
    server.wait_for(r"CP-RAW \*\* disconnected \(closed by the server with 1007.*not valid UTF-8; RFC 6455 section 8\.1")

    charger = await Charger.connect(server.url, "CP-2")
    assert (await charger.call("Heartbeat", {}))[0] == 3
    await charger.close()


@pytest.mark.parametrize("limit_args, size", [((), 70 * 1024), (("--max-message-size", "1024"), 1200)])
@charger_test
async def test_a_frame_over_the_size_limit_closes_with_1009(start_server, limit_args, size):
    server = start_server("--no-boot-data", *limit_args)

    big = await Charger.connect(server.url, "CP-BIG")
    witness = await Charger.connect(server.url, "CP-2")
    await big.send_frame([2, "big", "DataTransfer", {"vendorId": "x", "data": "y" * size}])
    with pytest.raises(websockets.ConnectionClosed):
        await big.receive()
    assert big.ws.close_code == 1009
    assert (await witness.call("Heartbeat", {}))[0] == 3
    await witness.close()

    server.wait_for(r"CP-BIG \*\* disconnected \(closed by the server with 1009.*a frame over --max-message-size")


def test_a_half_open_connection_does_not_block_anyone_or_the_shutdown():
    server = ServerProcess("--no-boot-data", stdin=subprocess.DEVNULL).wait_ready()
    port = int(server.url.rsplit(":", 1)[1])
    silent = socket.create_connection(("127.0.0.1", port))  # TCP only, no HTTP at all
    partial = _raw_handshake(port, complete=False)  # an upgrade request that never ends

    async def scenario():
        charger = await Charger.connect(server.url)
        for _ in range(3):
            assert (await charger.call("Heartbeat", {}))[0] == 3
        await charger.close()

    try:
        run(scenario())
        started = time.monotonic()
        server.proc.send_signal(signal.SIGINT)
        assert server.proc.wait(TIMEOUT) == 0
        assert time.monotonic() - started < mock.SHUTDOWN_GRACE + 1.5
        server.wait_for(r"!! connections still closing or opening after 3 s; dropping them")
    finally:
        silent.close()
        partial.close()
        server.stop()


def test_a_charger_that_ignores_the_close_frame_does_not_hold_up_shutdown():
    server = ServerProcess("--no-boot-data", stdin=subprocess.DEVNULL).wait_ready()
    port = int(server.url.rsplit(":", 1)[1])
    deaf = _raw_handshake(port, "/CP-DEAF")  # never reads, never answers the close
    try:
        server.wait_for(r"CP-DEAF \*\* connected")
        started = time.monotonic()
        server.proc.send_signal(signal.SIGINT)
        assert server.proc.wait(TIMEOUT) == 0
        assert time.monotonic() - started < mock.CLOSE_TIMEOUT + 1.5
        server.wait_for(r"CP-DEAF \*\* disconnected \(close code 1006")
    finally:
        deaf.close()
        server.stop()


@charger_test
async def test_sigterm_closes_chargers_with_going_away_and_keeps_the_transcript(tmp_path):
    log = tmp_path / "transcript.jsonl"
    server = ServerProcess("--no-boot-data", "--log", str(log), stdin=subprocess.DEVNULL).wait_ready()

    charger = await Charger.connect(server.url)
    await charger.call("Heartbeat", {}, message_id="last-before-term")
    server.proc.send_signal(signal.SIGTERM)
    with pytest.raises(websockets.ConnectionClosed):
        await charger.receive()
    assert charger.ws.close_code == 1001

    assert server.proc.wait(TIMEOUT) == 0
    server.stop()
    records = read_transcript(log)
    assert any(record.get("frame", "").startswith('[2, "last-before-term"') for record in records)
    assert records[-1]["event"] == "disconnect" and records[-1]["code"] == 1001


@pytest.mark.parametrize("args, user, password, status", [
    (("--basic-auth", "s3cret"), "CP-1", b"s3cret", None),
    (("--basic-auth", "s3cret"), "CP-1", b"wrong", 401),
    (("--basic-auth", "s3cret"), "CP-2", b"s3cret", 401),  # username must be the id in the URL
    (("--basic-auth", "s3cret"), None, None, 401),
    (("--basic-auth-hex", "00ff10203040"), "CP-1", bytes.fromhex("00ff10203040"), None),
    (("--basic-auth-hex", "00ff10203040"), "CP-1", b"00ff10203040", 401),
])
@charger_test
async def test_basic_auth_security_profile_1(start_server, args, user, password, status):
    server = start_server("--no-boot-data", *args)
    headers = [("Authorization", _basic(user, password))] if user is not None else []

    if status is None:
        websocket = await websockets.connect(server.url + "/CP-1", subprotocols=["ocpp1.6"],
                                             **_connect_kwargs(headers))
        assert (await Charger(websocket).call("Heartbeat", {}))[0] == 3
        await websocket.close()
    else:
        with pytest.raises(websockets.InvalidHandshake) as refused:
            await websockets.connect(server.url + "/CP-1", subprotocols=["ocpp1.6"], **_connect_kwargs(headers))
        assert _refusal_status(refused.value) == status

    if status is not None:
        server.wait_for(r"!! refused a connection.* to \"/CP-1\": HTTP 401")
        assert "CP-1 ** connected" not in server.settled_output()


@charger_test
async def test_charger_ids_allow_list(start_server):
    server = start_server("--no-boot-data", "--charger-ids", "CP-1,CP-2")

    allowed = await Charger.connect(server.url, "CP-2")
    assert (await allowed.call("Heartbeat", {}))[0] == 3
    await allowed.close()
    with pytest.raises(websockets.InvalidHandshake) as refused:
        await Charger.connect(server.url, "CP-3")
    assert _refusal_status(refused.value) == 404

    server.wait_for(r"CP-3 !! refused a connection.*HTTP 404, unknown charge point id \"CP-3\"")


@charger_test
async def test_tls_security_profile_2(start_server, tmp_path):
    certfile, keyfile = _self_signed_certificate(tmp_path)
    server = start_server("--no-boot-data", "--certfile", str(certfile), "--keyfile", str(keyfile),
                          "--basic-auth", "pw")
    assert server.url.startswith("wss://127.0.0.1:")
    client_context = ssl.create_default_context(cafile=str(certfile))  # verifies the server's certificate

    websocket = await websockets.connect(server.url + "/CP-1", subprotocols=["ocpp1.6"], ssl=client_context,
                                         **_connect_kwargs([("Authorization", _basic("CP-1", b"pw"))]))
    assert websocket.subprotocol == "ocpp1.6"
    assert (await Charger(websocket).call("Heartbeat", {}))[0] == 3
    await websocket.close()

    assert mock.make_ssl_context(str(certfile), str(keyfile), mock.Output(io.StringIO())).minimum_version == ssl.TLSVersion.TLSv1_2


@pytest.mark.parametrize("args, message", [
    (["--basic-auth", "a", "--basic-auth-hex", "00"], "not both"),
    (["--basic-auth-hex", "xyz"], "needs hex digits"),
    (["--keyfile", "k.pem"], "--keyfile needs --certfile"),
])
def test_security_flag_mistakes_are_one_line(args, message):
    result = subprocess.run([sys.executable, str(SERVER), *args], capture_output=True, text=True, timeout=10,
                            stdin=subprocess.DEVNULL)
    assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr


def test_a_missing_certificate_is_one_line(tmp_path):
    result = subprocess.run([sys.executable, str(SERVER), "--port", "0", "--certfile", str(tmp_path / "none.pem")],
                            capture_output=True, text=True, timeout=10, stdin=subprocess.DEVNULL)
    assert result.returncode == 2 and "cannot load the TLS certificate" in result.stdout
    assert "Traceback" not in result.stdout + result.stderr


@charger_test
async def test_strict_refuses_a_charger_without_the_ocpp16_subprotocol(start_server):
    server = start_server("--strict", "--no-boot-data")

    with pytest.raises(websockets.InvalidHandshake) as refused:
        await Charger.connect(server.url, subprotocols=())
    assert _refusal_status(refused.value) == 400
    with pytest.raises(websockets.InvalidHandshake):
        await Charger.connect(server.url, subprotocols=("ocpp2.0.1",))
    charger = await Charger.connect(server.url)  # offers ocpp1.6
    await charger.call("BootNotification", CHARGER_REQUEST_SAMPLES["BootNotification"])
    await charger.close()

    server.wait_for(r"!! refused a connection.*HTTP 400, the charger must offer the ocpp1\.6 subprotocol "
                    r"\(--strict\); it offered none")


# Items 11 and 12: fail closed, and every flag checked at the door.
@pytest.mark.parametrize("args, message", [
    (["--charger-ids", ""], "--charger-ids: must not be empty"),
    (["--charger-ids", ","], "--charger-ids ',' names no charge point id"),
    (["--charger-ids", " , "], "--charger-ids ' , ' names no charge point id"),
    (["--basic-auth", ""], "--basic-auth: must not be empty"),
    (["--basic-auth-hex", ""], "--basic-auth-hex: must not be empty"),
    (["--port", "99999"], "--port: 99999 is out of range: give 0 to 65535"),
    (["--port", "http"], "--port: 'http' is not a whole number"),
    (["--heartbeat-interval", "-1"], "--heartbeat-interval: -1 is out of range"),
    (["--max-message-size", "0"], "--max-message-size: 0 is out of range: give 1024 to"),
    (["--call-timeout", "0"], "--call-timeout: 0 is out of range: give 0.1 to 86400"),
    (["--call-timeout", "nan"], "--call-timeout: nan is out of range"),
    (["--auto-start-after", "inf"], "--auto-start-after: inf is out of range"),
    (["--id-tag", "X" * 24], "--id-tag: an idTag is 1 to 20 characters (CiString20), got 24"),
    (["--tag", "T" * 21 + "=Blocked"], "expected TAG=STATUS"),
])
def test_flag_mistakes_exit_2_with_one_line(capsys, args, message):
    with pytest.raises(SystemExit) as exited:
        mock.parse_settings(args)
    assert exited.value.code == 2
    error = capsys.readouterr().err
    assert message in error and "Traceback" not in error, error


def test_an_out_of_range_port_is_one_line_from_the_command_line():
    result = subprocess.run([sys.executable, str(SERVER), "--port", "99999"], capture_output=True, text=True,
                            timeout=10, stdin=subprocess.DEVNULL)
    assert result.returncode == 2 and "99999 is out of range" in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].endswith("--port: 99999 is out of range: give 0 to 65535")


def test_two_authorization_headers_get_400_and_one_log_line(in_process):
    server = in_process("--basic-auth", "pw")
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT)
    try:
        sock.sendall(("GET /CP-1 HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                      "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
                      "Authorization: %s\r\nAuthorization: %s\r\n\r\n"
                      % (_basic("CP-1", b"pw"), _basic("CP-1", b"other"))).encode())
        response = sock.recv(4096)
    finally:
        sock.close()
    assert response.startswith(b"HTTP/1.1 400"), response
    server.wait_for(r"CP-1 !! refused a connection .*HTTP 400, 2 Authorization headers; a request may carry one")


@charger_test
async def test_a_plain_client_on_the_tls_port_is_logged(start_server, tmp_path):
    certfile, keyfile = _self_signed_certificate(tmp_path)
    server = start_server("--no-boot-data", "--certfile", str(certfile), "--keyfile", str(keyfile))

    with pytest.raises(Exception):
        await websockets.connect(server.url.replace("wss://", "ws://") + "/CP-1", open_timeout=3)

    server.wait_for(r"!! TLS handshake failed: .+ \(a plain ws:// client on this wss:// port\?\)")


# Item 15: a websockets older than the oldest the server supports.
def test_a_websockets_older_than_10_3_is_one_line_and_exit_2(monkeypatch, capsys):
    monkeypatch.setattr(mock.websockets, "__version__", "10.2")
    assert mock.main(["--port", "0"]) == 2
    error = capsys.readouterr().err
    assert "websockets 10.2 is installed; this server needs websockets 10.3 or newer" in error
    monkeypatch.setattr(mock.websockets, "__version__", "16.0rc1")
    assert mock.websockets_too_old() is None


def test_the_demo_charger_ends_at_once_when_the_server_closes_while_it_waits():
    async def close_after_boot(websocket, *_):
        frame = json.loads(await websocket.recv())
        await websocket.send(json.dumps([3, frame[1], {"status": "Accepted", "currentTime": NOW, "interval": 60}]))
        await websocket.close()  # no BootData: the demo charger was waiting for it

    async def scenario():
        server = await websockets.serve(close_after_boot, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            process = await asyncio.create_subprocess_exec(
                sys.executable, str(DEMO_CHARGER), "ws://127.0.0.1:%d/CP-1" % port,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
            output, _ = await asyncio.wait_for(process.communicate(), TIMEOUT)  # not 30 s
            return process.returncode, output.decode()
        finally:
            server.close()
            await server.wait_closed()

    code, output = run(scenario())
    assert code == 0 and "the server closed the connection" in output and "Traceback" not in output, output


def test_the_demo_charger_says_once_why_it_cannot_connect(start_server):
    result, _ = _demo("http://127.0.0.1:1/CP-1")
    assert result.returncode == 2 and "cannot use the URL http://127.0.0.1:1/CP-1" in result.stdout
    server = start_server("--charger-ids", "SOMEONE-ELSE")
    result, elapsed = _demo(server.url + "/CP-1", "--connect-timeout", "30")
    assert result.returncode == 1 and "refused %s/CP-1 with HTTP 404; not retrying" % server.url in result.stdout
    assert elapsed < TIMEOUT and "Traceback" not in result.stdout + result.stderr


def test_the_demo_chargers_meter_values_stay_consistent(start_server, tmp_path):
    log = tmp_path / "demo.jsonl"
    server = start_server("--log", str(log))
    charger = subprocess.Popen([sys.executable, str(DEMO_CHARGER), server.url + "/CP-DEMO", "--meter-interval",
                                "0.05"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        server.wait_for(r"CP-DEMO <- StatusNotification .*Available")
        server.type("TriggerMessage requestedMessage=MeterValues")  # outside a transaction
        server.wait_for(r"CP-DEMO <- MeterValues connector 1: ")
        server.type("startRemote")
        server.wait_for(r"CP-DEMO <- MeterValues connector 1, transaction 1: .*SoC 23")
        server.type("TriggerMessage requestedMessage=MeterValues")  # while charging
        server.wait_for(r"CP-DEMO <- TriggerMessage\.conf")
        server.wait_for(r"CP-DEMO <- MeterValues connector 1, transaction 1: .*SoC 26")
        server.type("stopRemote")
        server.wait_for(r"CP-DEMO <- StopTransaction")
    finally:
        charger.terminate()
        output = charger.communicate(timeout=TIMEOUT)[0]
    assert "transaction None" not in output and "Traceback" not in output
    meter_values = [json.loads(record["frame"])[3] for record in read_transcript(log)
                    if record.get("dir") == "in" and '"MeterValues"' in record["frame"]]
    charging = [payload for payload in meter_values if "transactionId" in payload]
    assert len(charging) >= 6 and len(meter_values) > len(charging)
    assert all(payload.get("transactionId", 1) is not None for payload in meter_values)

    def reading(payload, measurand):
        return next(int(item["value"]) for item in payload["meterValue"][0]["sampledValue"]
                    if item["measurand"] == measurand)
    socs = [reading(payload, "SoC") for payload in charging]
    assert socs == sorted(socs)
    assert all(reading(payload, "Power.Active.Import") > 0 for payload in charging)


def test_a_request_websockets_refuses_itself_gets_one_line_and_ours_are_not_doubled(start_server):
    server = start_server("--charger-ids", "CP-1")
    port = int(server.url.rsplit(":", 1)[1])
    for request in (b"GET /CP-1 HTTP/1.1\r\nHost: x\r\n\r\n",  # no Upgrade: websockets answers 426
                    b"GET /CP-9 HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"):
        with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as sock:
            sock.sendall(request)
            assert sock.recv(4096).startswith((b"HTTP/1.1 426", b"HTTP/1.1 404"))
    server.wait_for(r"!! websockets: connection (rejected|failed) \(426 Upgrade Required\)")
    server.wait_for(r"CP-9 !! refused a connection .*HTTP 404, unknown charge point id")
    assert "404 Not Found" not in server.settled_output()  # the refusal is logged once, by the server


@charger_test
async def test_api_lists_the_chargers_and_their_state(start_server):
    server = start_server()
    assert (await http(server, "GET", "/api/chargers")).json == {"apiVersion": 1, "chargers": []}
    charger = await booted_charger(server)
    await charger.call("StatusNotification", dict(CHARGER_REQUEST_SAMPLES["StatusNotification"], status="Charging"))
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
    assert record["transactions"] == [{"transactionId": started.payload["transactionId"], "connectorId": 1,
                                       "idTag": CHARGER_REQUEST_SAMPLES["StartTransaction"]["idTag"],
                                       "meterStart": CHARGER_REQUEST_SAMPLES["StartTransaction"]["meterStart"]}]
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
        request = asyncio.ensure_future(http(server, "POST", path, body, headers={"Content-Type": "application/json"}))
        call = await charger.expect_call(path.rsplit("/", 1)[1] if "/startRemote" not in path
                                         else "RemoteStartTransaction")
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
    call, reply = await api_call("/api/chargers/CP-1/Reset", {"type": "Hard"}, {"status": "Rejected"})
    assert call.payload == {"type": "Hard"} and reply["result"] == {"status": "Rejected"}
    call, reply = await api_call("/api/chargers/CP-1/startRemote", {"idTag": "API-TAG"}, {"status": "Accepted"})
    assert call.payload == {"connectorId": 1, "idTag": "API-TAG"}
    # Nested objects merge field by field over the defaults.
    call, reply = await api_call("/api/chargers/CP-1/SetChargingProfile",
                                 {"csChargingProfiles": {"stackLevel": 3}}, {"status": "Accepted"})
    assert call.payload["csChargingProfiles"]["stackLevel"] == 3
    assert call.payload["csChargingProfiles"]["chargingSchedule"]["chargingRateUnit"] == "A"
    assert_valid("SetChargingProfile", call.payload)
    call, reply = await api_call("/api/chargers/CP-1/ClearCache", {}, ["NotSupported", "no cache here", {"a": 1}])
    assert reply == {"request": {}, "error": {"code": "NotSupported", "description": "no cache here",
                                              "details": {"a": 1}}}
    await charger.close()


@charger_test
async def test_api_refuses_what_cannot_be_sent_with_the_right_status(start_server):
    server = start_server()
    charger = await booted_charger(server)
    unknown = await http(server, "POST", "/api/chargers/CP-1/Teleport", {})
    assert unknown.status == 400 and "unknown action" in unknown.json["error"]
    broken = await http(server, "POST", "/api/chargers/CP-1/Reset", {"type": "Sideways", "extra": 1})
    assert broken.status == 400
    assert {problem["field"] for problem in broken.json["problems"]} == {"type", "extra"}
    not_object = await http(server, "POST", "/api/chargers/CP-1/Reset", [1, 2])
    assert not_object.status == 400 and "JSON object" in not_object.json["error"]
    not_json = await http(server, "POST", "/api/chargers/CP-1/Reset", data=b"{type:", headers={
        "Content-Type": "application/json"})
    assert not_json.status == 400 and "not JSON" in not_json.json["error"]
    no_transaction = await http(server, "POST", "/api/chargers/CP-1/stopRemote", {})
    assert no_transaction.status == 400 and "no transaction is open" in no_transaction.json["error"]
    elsewhere = await http(server, "POST", "/api/chargers/CP-2/Reset", {})
    assert elsewhere.status == 404 and "CP-2" in elsewhere.json["error"]
    wrong_method = await http(server, "DELETE", "/api/chargers/CP-1", headers={"Content-Type": "application/json"})
    assert wrong_method.status == 405 and wrong_method.headers["allow"] == "GET"
    # No reply in time: 504.  The first call stays outstanding; the second, still queued behind it, is dropped.
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
    assert (await charger.expect_call("UnlockConnector")).payload == {"connectorId": 1}  # not the dropped Reset
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
    for body in ({"command": "Reset"}, {"line": "Reset\nReset"}, {"line": "DataTransfer vendorId=@/etc/passwd"}):
        assert (await http(server, "POST", "/api/command", body)).status == 400
    charger = await booted_charger(server)
    request = asyncio.ensure_future(http(server, "POST", "/api/command", {"line": "@CP-1 Reset type=Hard"}))
    call = await charger.server_calls.pop(0) if charger.server_calls else await charger.expect_call("Reset")
    assert call.action == "Reset" and call.payload == {"type": "Hard"}  # the 409 ClearCache was not kept
    await charger.answer(call, {"status": "Accepted"})
    reply = await request
    assert reply.status == 200
    assert reply.json["call"] == {"action": "Reset", "request": {"type": "Hard"}, "outcome": "result",
                                  "result": {"status": "Accepted"}}
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
    boot = next(event for event in events if event["type"] == "frame" and event["label"] == "BootNotification")
    assert json.loads(boot["text"])[2] == "BootNotification" and boot["direction"] == "in"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", boot["ts"])
    for event in events:
        assert set(event) - {"id", "type", "charger", "ts"} <= set(mock.EVENT_FIELDS[event["type"]]), event
    answered = next(event for event in events if event["type"] == "call_answered")
    assert "payload" not in answered and answered["reply"]["status"] == "Accepted"  # the frame has the payload
    filtered = await only_two.until(is_frame("out", "Heartbeat.conf"))
    assert {event["charger"] for event in filtered} == {"CP-2"}
    assert [event["id"] for event in filtered] == [event["id"] for event in events if event["charger"] == "CP-2"]
    # Resume after the first CP-2 event: exactly the ones after it, then live ones.
    only_two.close()
    resumed = await EventStream.open(server, "?charger=CP-2", "Last-Event-ID: %d\r\n" % filtered[0]["id"])
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
    for number in range(400):  # 24 MB of frames: three times what the history keeps, and the sockets hold
        reply = await charger.call("DataTransfer", big)
        assert reply.payload["status"] in ("Accepted", "UnknownVendorId")
    await charger.call("Heartbeat", {})
    events = await stalled.until(lambda event: "missed" in event, timeout=20)
    assert events[-1]["missed"] > 0
    later = await stalled.until(is_frame("out", "Heartbeat.conf"))  # it is still live after its losses
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
    assert everyone == read_transcript(log)[-len(everyone):]
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
    head = http_sync(server, "HEAD", "/files/CP-1/image.bin")  # some chargers ask before they download
    assert head.status == 200 and head.headers["content-length"] == str(len(content)) and head.body == b""
    assert got.headers["content-type"] == "application/octet-stream"  # never rendered as a page
    boundary = "----diag7MA4YWxkTrZu0gW"
    multipart = ("--%s\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\nhello\r\n"
                 "--%s\r\nContent-Disposition: form-data; name=\"file\"; filename=\"..\\\\evil\\\\diag 1.zip\"\r\n"
                 "Content-Type: application/zip\r\n\r\n" % (boundary, boundary)).encode() + content + (
                     "\r\n--%s--\r\n" % boundary).encode()
    post = http_sync(server, "POST", "/files/CP-1/", data=multipart, headers={
        "Content-Type": "multipart/form-data; boundary=" + boundary})
    assert post.status == 201 and post.json["name"] == "CP-1/diag 1.zip"  # the sender's name, made safe
    assert (files / "CP-1" / "diag 1.zip").read_bytes() == content
    chunked = b"".join(b"%x\r\n%s\r\n" % (len(piece), piece) for piece in (b"abc", b"defg")) + b"0\r\n\r\n"
    sent = http_sync(server, "PUT", "/files/notes.txt", data=chunked, headers={"Transfer-Encoding": "chunked"})
    assert sent.status == 201 and (files / "notes.txt").read_bytes() == b"abcdefg"
    assert _listing(server) == {"CP-1/image.bin": len(content), "CP-1/diag 1.zip": len(content), "notes.txt": 7}
    assert http_sync(server, "GET", "/files/CP-1/missing.bin").status == 404
    server.wait_for(r"file server: received CP-1/image\.bin \(25600 bytes\) from 127\.0\.0\.1")


@pytest.mark.parametrize("path", ["/files/../escape.txt", "/files/%2e%2e/escape.txt", "/files/CP-1%2F..%2F..%2Fescape.txt",
                                  "/files/CP-1/..%5C..%5Cescape.txt", "/files//etc/escape.txt", "/files/.hidden",
                                  "/files/a%00b", "/files/CP-1/%2Fetc%2Fescape.txt"])
def test_file_names_outside_the_folder_are_refused(start_server, tmp_path, path):
    files = tmp_path / "files"
    server = start_server("--files-dir", str(files))
    reply = http_sync(server, "PUT", path, data=b"payload")
    assert reply.status in (400, 404), reply
    assert not list(tmp_path.rglob("escape.txt")) and not (tmp_path / "etc").exists()
    assert _listing(server) == {}


def test_uploads_over_the_cap_or_the_quota_are_refused_and_nothing_is_kept(start_server, tmp_path):
    files = tmp_path / "files"
    server = start_server("--files-dir", str(files), "--max-upload-size", "1K", "--files-quota", "3K")
    assert http_sync(server, "PUT", "/files/a.bin", data=b"x" * 1024).status == 201
    over = http_sync(server, "PUT", "/files/b.bin", data=b"x" * 1025)
    assert over.status == 413 and "1024" in over.json["error"]
    chunked = b"400\r\n" + b"x" * 1024 + b"\r\n1\r\nx\r\n0\r\n\r\n"  # 1,025 bytes, length not announced
    assert http_sync(server, "PUT", "/files/c.bin", data=chunked, headers={"Transfer-Encoding": "chunked"}).status == 413
    assert http_sync(server, "PUT", "/files/d.bin", data=b"x" * 1000).status == 201
    assert http_sync(server, "PUT", "/files/e.bin", data=b"x" * 1000).status == 201
    full = http_sync(server, "PUT", "/files/f.bin", data=b"x" * 1000)
    assert full.status == 507 and "quota" in full.json["error"]
    assert sorted(path.name for path in files.rglob("*")) == ["a.bin", "d.bin", "e.bin"]  # no part files either


def test_get_diagnostics_bare_ends_with_the_file_on_disk_and_firmware_is_served(start_server, tmp_path):
    files = tmp_path / "files"
    server = start_server("--files-dir", str(files))
    port = http_port(server)
    demo = subprocess.Popen([sys.executable, str(DEMO_CHARGER), server.url + "/CP-DEMO"], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        server.wait_for(r"CP-DEMO <- DataTransfer\.conf")
        server.type("GetDiagnostics")
        sent = server.wait_for(r"CP-DEMO -> GetDiagnostics (\{.*\})")
        assert json.loads(sent.group(1))["location"] == "http://127.0.0.1:%d/files/CP-DEMO/" % port
        server.wait_for(r"CP-DEMO \*\* file server: received CP-DEMO/demo-diagnostics\.log \(\d+ bytes\)")
        server.wait_for(r'CP-DEMO <- DiagnosticsStatusNotification \{"status": "Uploaded"\}')
        assert (files / "CP-DEMO" / "demo-diagnostics.log").read_text().startswith("demo charger diagnostics")
        (files / "CP-DEMO" / "firmware.bin").write_bytes(b"\x7fFIRMWARE" * 1000)
        server.type("UpdateFirmware")
        server.wait_for(r"CP-DEMO \*\* file server: sent CP-DEMO/firmware\.bin \(9000 bytes\)")
        server.wait_for(r'CP-DEMO <- FirmwareStatusNotification \{"status": "Downloaded"\}')
    finally:
        demo.terminate()
        demo.communicate(timeout=TIMEOUT)


@charger_test
async def test_an_upload_publishes_an_event_naming_the_file_and_sender(start_server, tmp_path):
    server = start_server("--files-dir", str(tmp_path))
    charger = await booted_charger(server, "CP-7")
    stream = await EventStream.open(server, "?charger=CP-7")
    assert (await http(server, "PUT", "/files/CP-7/log.txt", data=b"12345")).status == 201
    event = (await stream.until(lambda event: event["type"] == "file_received"))[-1]
    assert event["name"] == "CP-7/log.txt" and event["size"] == 5 and event["peer"].startswith("127.0.0.1:")
    stream.close()
    await charger.close()


@charger_test
async def test_the_token_guards_every_request_but_the_chargers_file_urls(start_server, tmp_path):
    server = start_server("--http-token", "s3cret", "--files-dir", str(tmp_path))
    port = http_port(server)
    server.wait_for(r"web page and HTTP API: http://127\.0\.0\.1:%d/\?token=s3cret" % port)
    for method, path in (("GET", "/"), ("GET", "/api/chargers"), ("GET", "/api/events"), ("GET", "/files/"),
                         ("POST", "/api/command")):
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
    assert cookie.startswith("ocpp_mock_token_%d=s3cret;" % port)
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
    page = await http(server, "GET", "/", headers={"Cookie": "other=1; " + cookie.split(";")[0]})
    assert page.status == 200 and b"<!doctype html>" in page.body
    # A charger cannot send a token: its file URLs carry the run's secret path segment instead.
    charger = await booted_charger(server)
    server.type("GetDiagnostics")
    call = await charger.expect_call("GetDiagnostics")
    location = call.payload["location"]
    match = re.fullmatch(r"http://127\.0\.0\.1:%d(/files/([\w-]{20,})/CP-1/)" % port, location)
    assert match, location
    stored = await http(server, "PUT", match.group(1) + "diag.txt", data=b"diagnostics")
    assert stored.status == 201 and (tmp_path / "CP-1" / "diag.txt").read_bytes() == b"diagnostics"
    assert (await http(server, "GET", match.group(1) + "diag.txt")).body == b"diagnostics"
    secret = match.group(2)
    assert (await http(server, "GET", "/api/chargers/../files/%s/x" % secret)).status in (401, 404)
    assert (await http(server, "GET", "/files/CP-1/diag.txt")).status == 401
    await charger.close()


def test_http_flags_that_would_expose_or_cannot_work_are_start_up_errors(tmp_path):
    exposed = subprocess.run([sys.executable, str(SERVER), "--http-host", "0.0.0.0"], stdin=subprocess.DEVNULL,
                             capture_output=True, text=True, timeout=TIMEOUT * 2)
    assert exposed.returncode == 2 and "give --http-token TOKEN" in exposed.stderr
    assert exposed.stderr.strip().splitlines()[-1].startswith("ocpp_mock_server.py: error: --http-host 0.0.0.0")
    for args in (["--http-token", ""], ["--max-upload-size", "lots"], ["--http-port", "70000"]):
        result = subprocess.run([sys.executable, str(SERVER), *args], stdin=subprocess.DEVNULL,
                                capture_output=True, text=True, timeout=TIMEOUT * 2)
        assert result.returncode == 2 and "Traceback" not in result.stderr, args
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        given = subprocess.run([sys.executable, str(SERVER), "--port", "0", "--http-port", str(port)],
                               stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=TIMEOUT * 2)
    assert given.returncode == 1 and "cannot listen for HTTP on 127.0.0.1:%d" % port in given.stdout


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
            server.wait_for(r"!! HTTP port %d is in use: no web page, API or file server this run" % http_taken)

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
        assert (await charger.expect_call("GetDiagnostics")).payload == {"location": "ftp://127.0.0.1/diagnostics/"}
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
        ({"Host": "evil.example:%d" % port}, "Host"),  # DNS rebinding
        ({"Origin": "null"}, "Origin"),
    ]
    for headers, why in attempts:
        reply = await http(server, "POST", "/api/command", {"line": "Reset type=Hard"}, headers=headers)
        assert reply.status == 403 and why in reply.json["error"], (headers, reply)
    assert (await http(server, "GET", "/api/chargers", headers={"Host": "evil.example"})).status == 403
    own = asyncio.ensure_future(http(server, "POST", "/api/command", {"line": "ClearCache"},
                                     headers={"Origin": "http://127.0.0.1:%d" % port}))
    call = await charger.expect_call("ClearCache")  # the first CALL since boot: nothing refused was sent
    await charger.answer(call, {"status": "Accepted"})
    assert (await own).status == 200
    assert (await http(server, "GET", "/api/chargers", headers={"Host": "localhost:%d" % port})).status == 200
    server.wait_for(r"!! HTTP 403 for POST /api/command from 127\.0\.0\.1:\d+: Origin \"http://evil\.example\"")
    await charger.close()


def test_the_page_is_self_contained_and_locked_down(start_server):
    server = start_server()
    page = http_sync(server, "GET", "/")
    assert page.status == 200 and page.headers["content-type"] == "text/html; charset=utf-8"
    text = page.body.decode("utf-8")
    assert not re.search(r"(src|href)=\"?(https?:)?//", text)  # no CDN, no remote anything
    assert "innerHTML" not in text and "insertAdjacentHTML" not in text and "document.write" not in text
    policy = page.headers["content-security-policy"]
    script = re.search(r"<script>(.*)</script>", text, re.S).group(1)
    digest = base64.b64encode(__import__("hashlib").sha256(script.encode("utf-8")).digest()).decode()
    assert "script-src 'sha256-%s'" % digest in policy and "frame-ancestors 'none'" in policy


def test_a_malformed_or_hostile_http_request_gets_a_4xx_and_the_server_goes_on(start_server):
    server = start_server()
    port = http_port(server)
    for raw in (b"NONSENSE\r\n\r\n", b"GET nothing HTTP/1.1\r\n\r\n", b"GET / HTTP/1.1\r\nbad header\r\n\r\n",
                b"GET /api/chargers HTTP/1.1\r\nHost: 127.0.0.1\r\nHost: evil\r\n\r\n",
                b"GET /%ff%fe HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
                b"GET / HTTP/1.1\r\n" + b"X: y\r\n" * 200 + b"\r\n",
                b"GET /" + b"a" * 70000 + b" HTTP/1.1\r\n\r\n"):
        with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as sock:
            sock.sendall(raw)
            answer = sock.makefile("rb").read()
        assert re.match(rb"HTTP/1\.1 4\d\d ", answer), (raw[:40], answer[:200])
        assert b"Traceback" not in answer
    assert http_sync(server, "GET", "/api/chargers").status == 200


def test_the_page_shows_a_session_started_from_its_button(start_server):
    from_browser = headless_browser()
    from selenium.webdriver.common.by import By
    server = start_server()
    hostile = '<img src=x onerror="document.title=1">'

    async def hostile_charger():  # its id, status and vendor are shown as text, never as HTML
        charger = await Charger.connect(server.url, urllib_quote(hostile))
        await charger.call("BootNotification", {"chargePointVendor": "<b>bold</b>", "chargePointModel": "M"})
        await charger.expect_call("DataTransfer")
        await charger.close()
    run(hostile_charger())
    demo = subprocess.Popen([sys.executable, str(DEMO_CHARGER), server.url + "/CP-DEMO", "--meter-interval", "0.2"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        server.wait_for(r"CP-DEMO <- DataTransfer\.conf")
        from_browser.get("http://127.0.0.1:%d/" % http_port(server))
        card = wait_in_browser(from_browser, lambda: from_browser.find_elements(
            By.CSS_SELECTOR, 'section.card[data-charger="CP-DEMO"]'), "the charger's card")[0]
        wait_in_browser(from_browser, lambda: not card.find_element(
            By.CSS_SELECTOR, 'button[data-action="startRemote"]').get_attribute("disabled"), "an enabled button")
        card.find_element(By.CSS_SELECTOR, 'button[data-action="startRemote"]').click()
        wait_in_browser(from_browser, lambda: any(row.text for row in from_browser.find_elements(
            By.CSS_SELECTOR, '#frames .row[data-type="frame"] .label') if row.text == "StartTransaction"),
            "the StartTransaction frame in the log")
        server.wait_for(r"CP-DEMO <- StartTransaction")
        canvas = wait_in_browser(from_browser, lambda: from_browser.find_elements(By.CSS_SELECTOR, "#charts canvas"),
                                 "a meter chart")[0]
        first = int(canvas.get_attribute("data-points"))
        wait_in_browser(from_browser, lambda: int(canvas.get_attribute("data-points")) >= first + 3,
                        "the chart growing")
        assert "Wh" in from_browser.find_element(By.CSS_SELECTOR, "#charts .legend").text
        wait_in_browser(from_browser, lambda: "transaction 1" in card.text, "the open transaction on the card")
        # The command box speaks the console's language.
        from_browser.find_element(By.ID, "line").send_keys("chargers")
        from_browser.find_element(By.CSS_SELECTOR, "#command button").click()
        wait_in_browser(from_browser, lambda: "CP-DEMO" in from_browser.find_element(By.ID, "reply").text,
                        "the command's answer")
        # Charger-controlled text stays text.
        titles = [element.text for element in from_browser.find_elements(By.CSS_SELECTOR, "section.card h3")]
        assert any(title.startswith(hostile) for title in titles), titles
        assert "<b>bold</b>" in from_browser.find_element(By.TAG_NAME, "body").text
        assert from_browser.find_elements(By.CSS_SELECTOR, "#chargers img, #chargers b") == []
        assert from_browser.title == "OCPP Mock Server"
        card.find_element(By.CSS_SELECTOR, 'button[data-action="stopRemote"]').click()
        server.wait_for(r"CP-DEMO <- StopTransaction")
    finally:
        from_browser.quit()
        demo.terminate()
        demo.communicate(timeout=TIMEOUT)


@charger_test
async def test_streams_keep_every_event_while_open_then_frames_and_the_transcript_only(start_server, monkeypatch):
    monkeypatch.setattr(mock, "EVENT_RESUME_SECONDS", 0.2)  # read when a stream closes, in this process
    server = start_server()
    charger = await booted_charger(server)
    stream = await EventStream.open(server)
    await charger.call("Heartbeat", {})
    seen = await stream.until(is_frame("out", "Heartbeat.conf"))
    assert "call_answered" in [event["type"] for event in seen]
    stream.close()
    deadline = time.monotonic() + TIMEOUT  # the server stops keeping other events 0.2 s after the close
    while server.call_in_loop(lambda: server.system.http._keep_every_event is not None or
                              server.system.http.history.readers > 0):
        assert time.monotonic() < deadline
        await asyncio.sleep(0.02)
    await charger.call("Heartbeat", {"extra": 1})  # a frame pair, a call_answered and a spec_problem
    replay = await EventStream.open(server, "?lastEventId=%d" % seen[-1]["id"])
    later = await replay.until(is_frame("out", "Heartbeat.conf"))
    assert [event["type"] for event in later] == ["frame", "frame"]  # kept: frames only, now
    transcript = (await http(server, "GET", "/api/transcript?charger=CP-1&limit=2")).json["records"]
    assert [record["dir"] for record in transcript] == ["in", "out"]
    await charger.call("Heartbeat", {})  # a stream is open again: every event is kept
    live = await replay.until(is_frame("out", "Heartbeat.conf"))
    assert "call_answered" in [event["type"] for event in live]
    replay.close()
    await charger.close()


@charger_test
async def test_an_accepted_authorization_key_change_is_the_only_key_from_the_next_connection(start_server):
    server = start_server("--basic-auth", "starting-key-0123", "--no-boot-data")
    new_key = "00112233445566778899aabbccddeeff"
    charger = await _connect_with_key(server, "CP-1", b"starting-key-0123")
    other = await _connect_with_key(server, "CP-2", b"starting-key-0123")
    await charger.call("BootNotification", CHARGER_REQUEST_SAMPLES["BootNotification"])
    server.type("@CP-1 ChangeConfiguration key=AuthorizationKey value=" + new_key)
    call = await charger.expect_call("ChangeConfiguration")
    await charger.answer(call, {"status": "Accepted"})
    server.wait_for(r"CP-1 \*\* AuthorizationKey rotated: from its next connection on, CP-1 must log in with the new "
                    r"key \(the hex text or the 16 bytes it spells\)")
    assert (await charger.call("Heartbeat", {}))[0] == 3  # this connection goes on
    await charger.close()
    assert await _connect_with_key(server, "CP-1", b"starting-key-0123") == 401
    server.wait_for(r"HTTP 401, wrong password: its AuthorizationKey was rotated")
    for form in (new_key.encode(), bytes.fromhex(new_key)):  # chargers differ: the text, or the bytes it spells
        again = await _connect_with_key(server, "CP-1", form)
        assert (await again.call("Heartbeat", {}))[0] == 3
        await again.close()
    assert await _connect_with_key(server, "CP-1", b"anything-else") == 401
    again = await _connect_with_key(server, "CP-1", new_key.encode())
    server.type("chargers")
    server.wait_for(r">>   AuthorizationKey: rotated at \S+Z; only the new key lets it in")
    await again.close()
    await other.close()
    assert isinstance(await _connect_with_key(server, "CP-2", b"starting-key-0123"), Charger)  # the others keep theirs
    # A rejected change changes nothing.
    rejecting = await _connect_with_key(server, "CP-3", b"starting-key-0123")
    server.type("@CP-3 ChangeConfiguration key=AuthorizationKey value=" + new_key)
    await rejecting.answer(await rejecting.expect_call("ChangeConfiguration"), {"status": "Rejected"})
    server.wait_for(r"CP-3 <- ChangeConfiguration\.conf")
    await rejecting.close()
    assert isinstance(await _connect_with_key(server, "CP-3", b"starting-key-0123"), Charger)


@charger_test
async def test_a_key_rotated_on_a_server_without_basic_auth_is_needed_from_then_on(start_server):
    server = start_server("--no-boot-data")
    charger = await _connect_with_key(server, "CP-1", None)
    server.type("ChangeConfiguration key=AuthorizationKey value=not-hex-but-long-enough")
    await charger.answer(await charger.expect_call("ChangeConfiguration"), {"status": "RebootRequired"})
    server.wait_for(r"must log in with the new key \(as typed \(not 32 to 40 hex digits")
    await charger.close()
    assert await _connect_with_key(server, "CP-1", None) == 401
    assert isinstance(await _connect_with_key(server, "CP-1", b"not-hex-but-long-enough"), Charger)
    assert isinstance(await _connect_with_key(server, "CP-2", None), Charger)


def test_a_short_starting_key_is_a_warning_not_a_refusal(start_server):
    server = start_server("--basic-auth", "short")
    server.wait_for(r"!! the --basic-auth key is 5 bytes; the security whitepaper's AuthorizationKey is 16 to 20 bytes")


@charger_test
async def test_profile_3_needs_a_client_certificate_whose_cn_is_the_charge_point_id(start_server, tmp_path):
    ca_path, _, ca, ca_key = _certificate_authority(tmp_path, "Charger CA")
    server_cert, server_key = _signed_by(ca, ca_key, tmp_path, "mock-server", server=True)
    server = start_server("--no-boot-data", "--certfile", str(server_cert), "--keyfile", str(server_key),
                          "--client-ca", str(ca_path))
    server.wait_for(r">> client certificates required, signed by .*Charger_CA\.pem, CN = charge point id")

    def client(common_name=None):
        context = ssl.create_default_context(cafile=str(ca_path))
        if common_name is not None:
            context.load_cert_chain(*_signed_by(ca, ca_key, tmp_path, common_name))
        return context

    websocket = await websockets.connect(server.url + "/CP-1", subprotocols=["ocpp1.6"], ssl=client("CP-1"))
    assert (await Charger(websocket).call("Heartbeat", {}))[0] == 3
    await websocket.close()
    with pytest.raises(websockets.InvalidHandshake) as wrong_name:
        await websockets.connect(server.url + "/CP-1", subprotocols=["ocpp1.6"], ssl=client("CP-2"))
    assert _refusal_status(wrong_name.value) == 403
    server.wait_for(r"HTTP 403, the client certificate's CN is \"CP-2\", not the charge point id \"CP-1\"")
    with pytest.raises((ssl.SSLError, ConnectionError, websockets.InvalidHandshake, EOFError, OSError)):
        no_certificate = await websockets.connect(server.url + "/CP-1", subprotocols=["ocpp1.6"], ssl=client())
        await no_certificate.recv()  # TLS 1.3 reports the missing certificate after the handshake
    server.wait_for(r"!! TLS handshake failed: PEER_DID_NOT_RETURN_A_CERTIFICATE")
