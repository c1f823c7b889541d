"""Server: listening, access control and shutdown.

Security profiles 1 to 3 (Basic auth, TLS, client certificates), the allow list, AuthorizationKey
rotation, the charger id from the URL path, the port in use, a non-loopback warning, and quit and
SIGTERM closing chargers with 1001.
"""

import io
import re
import signal
import socket
import ssl
import subprocess

import pytest
import websockets

import ocpp_mock_server as mock
from conftest import (
    CHARGER_REQUEST_SAMPLES,
    TIMEOUT,
    Charger,
    ServerProcess,
    _basic,
    _certificate_authority,
    _connect_kwargs,
    _connect_with_key,
    _refusal_status,
    _self_signed_certificate,
    _signed_by,
    charger_test,
    read_transcript,
    server_command,
)


@charger_test
async def test_charger_id_is_the_percent_decoded_last_path_segment(start_server):
    server = start_server("--no-boot-data")

    charger = await Charger.connect(server.url, "ocpp/central/Station%20%231")
    await charger.call("Heartbeat", {})
    await charger.close()

    server.wait_for(r"Station #1 \*\* connected from")


@pytest.mark.slow(2)
def test_port_in_use_is_one_clear_line():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            server_command("--port", str(port)),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=TIMEOUT * 2,
        )
    assert result.returncode == 1
    assert "Traceback" not in result.stdout + result.stderr
    hint = re.search(
        rf"port {port} on 127\.0\.0\.1 is already in use .* --port (\d+) \(the HTTP port takes "
        r"the one after it\)",
        result.stdout,
    )
    assert hint, result.stdout
    suggested = int(hint.group(1))
    assert suggested != port
    for free in (
        suggested,
        suggested + 1,
    ):  # the hint's port, and its neighbour for the HTTP port, are free
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", free))


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
    server = ServerProcess(stdin=subprocess.DEVNULL, real=True).wait_ready()  # no launcher
    server.proc.send_signal(signal.SIGTERM)
    assert server.proc.wait(TIMEOUT) == 0
    server.stop()
    assert "Traceback" not in server.output()


def test_a_non_loopback_host_prints_a_warning():
    server = ServerProcess("--host", "0.0.0.0", stdin=subprocess.DEVNULL).wait_ready()
    try:
        server.wait_for(
            r"!! listening on 0\.0\.0\.0, not loopback: any machine that reaches this port can act "
            r"as a charger"
        )
    finally:
        assert server.stop() == 0
    quiet = ServerProcess("--host", "127.0.0.1", stdin=subprocess.DEVNULL).wait_ready()
    assert quiet.stop() == 0
    assert "not loopback" not in quiet.output()


@pytest.mark.slow(2)
@charger_test
async def test_sigterm_closes_chargers_with_going_away_and_keeps_the_transcript(tmp_path):
    log = tmp_path / "transcript.jsonl"
    server = ServerProcess(
        "--no-boot-data", "--log", str(log), stdin=subprocess.DEVNULL
    ).wait_ready()

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
    session = [record for record in records if record.get("event") != "summary"]
    assert session[-1]["event"] == "disconnect" and session[-1]["code"] == 1001
    assert records[-1]["event"] == "summary" and records[-1]["scope"] == "exit"  # its verdict


@pytest.mark.parametrize(
    "args, user, password, status",
    [
        (("--basic-auth", "s3cret"), "CP-1", b"s3cret", None),
        (("--basic-auth", "s3cret"), "CP-1", b"wrong", 401),
        (("--basic-auth", "s3cret"), "CP-2", b"s3cret", 401),  # username must be the id in the URL
        (("--basic-auth", "s3cret"), None, None, 401),
        (("--basic-auth-hex", "00ff10203040"), "CP-1", bytes.fromhex("00ff10203040"), None),
        (("--basic-auth-hex", "00ff10203040"), "CP-1", b"00ff10203040", 401),
    ],
)
@charger_test
async def test_basic_auth_security_profile_1(start_server, args, user, password, status):
    server = start_server("--no-boot-data", *args)
    headers = [("Authorization", _basic(user, password))] if user is not None else []

    if status is None:
        websocket = await websockets.connect(
            server.url + "/CP-1", subprotocols=["ocpp1.6"], **_connect_kwargs(headers)
        )
        assert (await Charger(websocket).call("Heartbeat", {}))[0] == 3
        await websocket.close()
    else:
        with pytest.raises(websockets.InvalidHandshake) as refused:
            await websockets.connect(
                server.url + "/CP-1", subprotocols=["ocpp1.6"], **_connect_kwargs(headers)
            )
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
    server = start_server(
        "--no-boot-data",
        "--certfile",
        str(certfile),
        "--keyfile",
        str(keyfile),
        "--basic-auth",
        "pw",
    )
    assert server.url.startswith("wss://127.0.0.1:")
    # Verifies the server's certificate.
    client_context = ssl.create_default_context(cafile=str(certfile))

    websocket = await websockets.connect(
        server.url + "/CP-1",
        subprotocols=["ocpp1.6"],
        ssl=client_context,
        **_connect_kwargs([("Authorization", _basic("CP-1", b"pw"))]),
    )
    assert websocket.subprotocol == "ocpp1.6"
    assert (await Charger(websocket).call("Heartbeat", {}))[0] == 3
    await websocket.close()

    assert (
        mock.make_ssl_context(
            str(certfile), str(keyfile), mock.Output(io.StringIO())
        ).minimum_version
        == ssl.TLSVersion.TLSv1_2
    )


@pytest.mark.parametrize(
    "args, message",
    [
        (["--basic-auth", "a", "--basic-auth-hex", "00"], "not both"),
        (["--basic-auth-hex", "xyz"], "needs hex digits"),
        (["--keyfile", "k.pem"], "--keyfile needs --certfile"),
    ],
)
def test_security_flag_mistakes_are_one_line(args, message):
    result = subprocess.run(
        server_command(*args),
        capture_output=True,
        text=True,
        timeout=10,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr


def test_a_missing_certificate_is_one_line(tmp_path):
    result = subprocess.run(
        server_command("--port", "0", "--certfile", str(tmp_path / "none.pem")),
        capture_output=True,
        text=True,
        timeout=10,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 2 and "cannot load the TLS certificate" in result.stdout
    assert "Traceback" not in result.stdout + result.stderr


def test_two_authorization_headers_get_400_and_one_log_line(in_process):
    server = in_process("--basic-auth", "pw")
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT)
    try:
        sock.sendall(
            (
                "GET /CP-1 HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: "
                "Upgrade\r\n"
                "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
                "Authorization: {}\r\nAuthorization: {}\r\n\r\n".format(
                    _basic("CP-1", b"pw"), _basic("CP-1", b"other")
                )
            ).encode()
        )
        response = sock.recv(4096)
    finally:
        sock.close()
    assert response.startswith(b"HTTP/1.1 400"), response
    server.wait_for(
        r"CP-1 !! refused a connection .*HTTP 400, 2 Authorization headers; a request may carry one"
    )


@charger_test
async def test_a_plain_client_on_the_tls_port_is_logged(start_server, tmp_path):
    certfile, keyfile = _self_signed_certificate(tmp_path)
    server = start_server("--no-boot-data", "--certfile", str(certfile), "--keyfile", str(keyfile))

    # Any failure to connect is the point; which exception it is depends on the websockets release.
    with pytest.raises(Exception):  # noqa: B017
        await websockets.connect(server.url.replace("wss://", "ws://") + "/CP-1", open_timeout=3)

    server.wait_for(r"!! TLS handshake failed: .+ \(a plain ws:// client on this wss:// port\?\)")


async def _logs_in(server, charger_id: str, key) -> bool:
    """Whether a charger logs in with ``key``; the connection is closed again at once, so that the
    server's shutdown does not wait out the close timeout for it."""
    charger = await _connect_with_key(server, charger_id, key)
    if not isinstance(charger, Charger):
        return False
    await charger.close()
    return True


@charger_test
async def test_an_accepted_authorization_key_change_is_the_only_key_from_the_next_connection(
    start_server,
):
    server = start_server("--basic-auth", "starting-key-0123", "--no-boot-data")
    new_key = "00112233445566778899aabbccddeeff"
    charger = await _connect_with_key(server, "CP-1", b"starting-key-0123")
    other = await _connect_with_key(server, "CP-2", b"starting-key-0123")
    await charger.call("BootNotification", CHARGER_REQUEST_SAMPLES["BootNotification"])
    server.type("@CP-1 ChangeConfiguration key=AuthorizationKey value=" + new_key)
    call = await charger.expect_call("ChangeConfiguration")
    await charger.answer(call, {"status": "Accepted"})
    server.wait_for(
        r"CP-1 \*\* AuthorizationKey rotated: from its next connection on, CP-1 must log in with "
        r"the new "
        r"key \(the hex text or the 16 bytes it spells\)"
    )
    assert (await charger.call("Heartbeat", {}))[0] == 3  # this connection goes on
    await charger.close()
    assert await _connect_with_key(server, "CP-1", b"starting-key-0123") == 401
    server.wait_for(r"HTTP 401, wrong password: its AuthorizationKey was rotated")
    for form in (
        new_key.encode(),
        bytes.fromhex(new_key),
    ):  # chargers differ: the text, or the bytes it spells
        again = await _connect_with_key(server, "CP-1", form)
        assert (await again.call("Heartbeat", {}))[0] == 3
        await again.close()
    assert await _connect_with_key(server, "CP-1", b"anything-else") == 401
    again = await _connect_with_key(server, "CP-1", new_key.encode())
    server.type("chargers")
    server.wait_for(r">>   AuthorizationKey: rotated at \S+Z; only the new key lets it in")
    await again.close()
    await other.close()
    assert await _logs_in(server, "CP-2", b"starting-key-0123")  # the others keep theirs
    # A rejected change changes nothing.
    rejecting = await _connect_with_key(server, "CP-3", b"starting-key-0123")
    server.type("@CP-3 ChangeConfiguration key=AuthorizationKey value=" + new_key)
    await rejecting.answer(
        await rejecting.expect_call("ChangeConfiguration"), {"status": "Rejected"}
    )
    server.wait_for(r"CP-3 <- ChangeConfiguration\.conf")
    await rejecting.close()
    assert await _logs_in(server, "CP-3", b"starting-key-0123")


@charger_test
async def test_a_key_rotated_on_a_server_without_basic_auth_is_needed_from_then_on(start_server):
    server = start_server("--no-boot-data")
    charger = await _connect_with_key(server, "CP-1", None)
    server.type("ChangeConfiguration key=AuthorizationKey value=not-hex-but-long-enough")
    await charger.answer(
        await charger.expect_call("ChangeConfiguration"), {"status": "RebootRequired"}
    )
    server.wait_for(r"must log in with the new key \(as typed \(not 32 to 40 hex digits")
    await charger.close()
    assert await _connect_with_key(server, "CP-1", None) == 401
    assert await _logs_in(server, "CP-1", b"not-hex-but-long-enough")
    assert await _logs_in(server, "CP-2", None)


def test_a_short_starting_key_is_a_warning_not_a_refusal(start_server):
    server = start_server("--basic-auth", "short")
    server.wait_for(
        r"!! the --basic-auth key is 5 bytes; the security whitepaper's AuthorizationKey is 16 to "
        r"20 bytes"
    )


@charger_test
async def test_profile_3_needs_a_client_certificate_whose_cn_is_the_charge_point_id(
    start_server, tmp_path
):
    ca_path, _, ca, ca_key = _certificate_authority(tmp_path, "Charger CA")
    server_cert, server_key = _signed_by(ca, ca_key, tmp_path, "mock-server", server=True)
    server = start_server(
        "--no-boot-data",
        "--certfile",
        str(server_cert),
        "--keyfile",
        str(server_key),
        "--client-ca",
        str(ca_path),
    )
    server.wait_for(
        r">> client certificates required, signed by .*Charger_CA\.pem, CN = charge point id"
    )

    def client(common_name=None):
        context = ssl.create_default_context(cafile=str(ca_path))
        if common_name is not None:
            context.load_cert_chain(*_signed_by(ca, ca_key, tmp_path, common_name))
        return context

    websocket = await websockets.connect(
        server.url + "/CP-1", subprotocols=["ocpp1.6"], ssl=client("CP-1")
    )
    assert (await Charger(websocket).call("Heartbeat", {}))[0] == 3
    await websocket.close()
    with pytest.raises(websockets.InvalidHandshake) as wrong_name:
        await websockets.connect(server.url + "/CP-1", subprotocols=["ocpp1.6"], ssl=client("CP-2"))
    assert _refusal_status(wrong_name.value) == 403
    server.wait_for(
        r"HTTP 403, the client certificate's CN is \"CP-2\", not the charge point id \"CP-1\""
    )
    with pytest.raises(
        (ssl.SSLError, ConnectionError, websockets.InvalidHandshake, EOFError, OSError)
    ):
        no_certificate = await websockets.connect(
            server.url + "/CP-1", subprotocols=["ocpp1.6"], ssl=client()
        )
        await no_certificate.recv()  # TLS 1.3 reports the missing certificate after the handshake
    server.wait_for(r"!! TLS handshake failed: PEER_DID_NOT_RETURN_A_CERTIFICATE")
