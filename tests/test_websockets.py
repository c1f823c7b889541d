"""websockets compatibility and handshakes: subprotocols, close codes, size limits, and half-open
or deaf peers, on every websockets release from 10.3 on.
"""

import signal
import socket
import subprocess
import time

import pytest
import websockets

import ocpp_mock_server as mock
from conftest import (
    CHARGER_REQUEST_SAMPLES,
    TIMEOUT,
    Charger,
    ServerProcess,
    _raw_close_code,
    _raw_handshake,
    _raw_send,
    _refusal_status,
    charger_test,
    http,
    run,
)


@charger_test
async def test_a_charger_without_subprotocol_is_served_with_a_warning(start_server):
    server = start_server("--no-boot-data")

    charger = await Charger.connect(server.url, subprotocols=())
    assert charger.ws.subprotocol is None
    assert (await charger.call("Heartbeat", {}))[0] == 3
    await charger.close()
    server.wait_for(r"CP-1 !! spec: no subprotocol negotiated \(charger offered: none\); "
                    r"serving it as OCPP 1\.6 \(--ocpp\)")


@charger_test
async def test_the_chargers_first_choice_of_the_servers_subprotocols_is_taken(start_server):
    """On every websockets release: below 13 the library ranks both lists by itself."""
    server = start_server("--no-boot-data")
    for number, offered in enumerate([("ocpp2.0.1", "ocpp1.6"), ("ocpp1.6", "ocpp2.0.1"),
                                      ("ocpp2.0", "ocpp1.6", "ocpp2.0.1"), ("ocpp2.0.1",)]):
        charger = await Charger.connect(server.url, f"CP-{number}", subprotocols=offered)
        chosen = next(name for name in offered if name in ("ocpp1.6", "ocpp2.0.1"))
        assert charger.ws.subprotocol == chosen, offered
        await charger.close()
        server.wait_for(rf"CP-{number} \*\* connected")
    records = await http(server, "GET", "/api/chargers")
    versions = {record["id"]: record["version"] for record in records.json["chargers"]}
    assert versions == {"CP-0": "2.0.1", "CP-1": "1.6", "CP-2": "1.6", "CP-3": "2.0.1"}


@charger_test
async def test_a_201_identity_too_long_or_with_a_colon_is_a_warning_and_refused_if_strict(
        start_server):
    lenient = start_server("--no-boot-data")
    long_id = "CP-" + "x" * 46  # 49 characters: OCPP 2.0.1 allows 48
    for charger_id in (long_id, "CP:1"):
        charger = await Charger.connect(lenient.url, charger_id, subprotocols=("ocpp2.0.1",))
        await charger.close()
    lenient.wait_for(r"!! spec: the charging station identity is 49 characters long; OCPP "
                     r"2\.0\.1 allows 48; serving it anyway")
    lenient.wait_for(r"!! spec: the charging station identity holds ':'")
    as_16 = await Charger.connect(lenient.url, long_id + "y", subprotocols=("ocpp1.6",))
    await as_16.close()  # 1.6 sets no such limit
    strict = start_server("--strict", "--no-boot-data")
    with pytest.raises(websockets.InvalidHandshake) as refused:
        await Charger.connect(strict.url, "CP:1", subprotocols=("ocpp2.0.1",))
    assert _refusal_status(refused.value) == 400
    strict.wait_for(r"HTTP 400, the charging station identity holds ':'.*\(--strict\)")


@charger_test
async def test_a_charger_offering_only_other_subprotocols_is_refused_in_every_mode(start_server):
    server = start_server("--no-boot-data")
    with pytest.raises(websockets.InvalidHandshake) as refused:
        await Charger.connect(server.url, "CP-20", subprotocols=("ocpp2.0", "ocpp1.5"))
    assert _refusal_status(refused.value) == 400
    server.wait_for(
        r"!! refused a connection( from 127\.0\.0\.1:\d+)? to \"/CP-20\": HTTP 400, the charger "
        r"offered "
        r"the subprotocols ocpp2\.0, ocpp1\.5, not ocpp1\.6 or ocpp2\.0\.1"
    )
    served = await Charger.connect(server.url, "CP-16", subprotocols=("ocpp2.0", "ocpp1.6"))
    assert served.ws.subprotocol == "ocpp1.6"
    await served.close()


@charger_test
async def test_a_text_frame_that_is_not_utf8_closes_with_1007_and_others_are_served(start_server):
    server = start_server("--no-boot-data")
    port = int(server.url.rsplit(":", 1)[1])
    sock = _raw_handshake(port)
    _raw_send(sock, 0x1, b'[2,"u","Heartbeat",{"x":"\xff\xfe"}]')
    assert _raw_close_code(sock) == 1007  # RFC 6455 8.1: MUST fail the connection
    sock.close()
    server.wait_for(
        r"CP-RAW \*\* disconnected \(closed by the server with 1007.*not valid UTF-8; RFC 6455 "
        r"section 8\.1"
    )

    charger = await Charger.connect(server.url, "CP-2")
    assert (await charger.call("Heartbeat", {}))[0] == 3
    await charger.close()


@pytest.mark.parametrize(
    "limit_args, size", [((), 70 * 1024), (("--max-message-size", "1024"), 1200)]
)
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

    server.wait_for(
        r"CP-BIG \*\* disconnected \(closed by the server with 1009.*a frame over "
        r"--max-message-size"
    )


@pytest.mark.slow(4)
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


@pytest.mark.slow(3)
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
async def test_strict_refuses_a_charger_without_the_ocpp16_subprotocol(start_server):
    server = start_server("--strict", "--no-boot-data")

    with pytest.raises(websockets.InvalidHandshake) as refused:
        await Charger.connect(server.url, subprotocols=())
    assert _refusal_status(refused.value) == 400
    with pytest.raises(websockets.InvalidHandshake):
        await Charger.connect(server.url, subprotocols=("ocpp2.0",))
    charger = await Charger.connect(server.url)  # offers ocpp1.6
    await charger.call("BootNotification", CHARGER_REQUEST_SAMPLES["BootNotification"])
    await charger.close()

    server.wait_for(
        r"!! refused a connection.*HTTP 400, the charger must offer a subprotocol "
        r"\(ocpp1\.6, ocpp2\.0\.1\) \(--strict\); it offered none"
    )


# Item 15: a websockets older than the oldest the server supports.
def test_a_websockets_older_than_10_3_is_one_line_and_exit_2(monkeypatch, capsys):
    monkeypatch.setattr(mock.websockets, "__version__", "10.2")
    assert mock.main(["--port", "0"]) == 2
    error = capsys.readouterr().err
    assert "websockets 10.2 is installed; this server needs websockets 10.3 or newer" in error
    monkeypatch.setattr(mock.websockets, "__version__", "16.0rc1")
    assert mock.websockets_too_old() is None


def test_a_request_websockets_refuses_itself_gets_one_line_and_ours_are_not_doubled(start_server):
    server = start_server("--charger-ids", "CP-1")
    port = int(server.url.rsplit(":", 1)[1])
    for request in (
        b"GET /CP-1 HTTP/1.1\r\nHost: x\r\n\r\n",  # no Upgrade: websockets answers 426
        b"GET /CP-9 HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    ):
        with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as sock:
            sock.sendall(request)
            assert sock.recv(4096).startswith((b"HTTP/1.1 426", b"HTTP/1.1 404"))
    server.wait_for(r"!! websockets: connection (rejected|failed) \(426 Upgrade Required\)")
    server.wait_for(r"CP-9 !! refused a connection .*HTTP 404, unknown charge point id")
    # The refusal is logged once, by the server.
    assert "404 Not Found" not in server.settled_output()


def test_a_charger_that_never_reads_its_replies_holds_no_more_than_the_write_limit(in_process):
    """Replies go out without the library's send while its write buffer takes them
    (send_at_once); a charger that floods CALLs and never reads stops being read once the buffer
    is over the library's limit, so what waits for it stays bounded."""
    server = in_process("--no-boot-data", "--quiet")
    sock = _raw_handshake(server.port, "/CP-FLOOD")  # never reads
    sock.settimeout(0.5)
    flood = 3000  # 24 MB of replies: more than the kernel's buffers on loopback hold
    try:
        sent = 0
        while sent < flood:
            # a long id, answered (lenient: the extra field makes the frame longer than its reply)
            frame = f'[2,"{"x" * 8000}{sent}","Heartbeat",{{"pad":"{"y" * 100}"}}]'
            try:
                _raw_send(sock, 0x1, frame.encode())
            except socket.timeout:  # the server stopped reading
                break
            sent += 1
        session = server.system.sessions["CP-FLOOD"]
        assert sent < flood
        waiting = server.call_in_loop(session.websocket.transport.get_write_buffer_size)
        assert waiting <= 2 * 65536 + 8100  # the limit (64 KiB on 10.3) and one reply past it
        assert session.state.tally.messages_in < sent
    finally:
        sock.close()
