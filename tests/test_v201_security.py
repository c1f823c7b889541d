"""Security, certificates, firmware and logs for OCPP 2.0.1 stations (issue 22, items 2 to 4).

The 1.6 machinery (AccessPolicy, CertificateSigning, the file server) serves 2.0.1 stations through
the version tables: basic auth, TLS and client certificates; SetVariables of
SecurityCtrlr.BasicAuthPassword and SecurityCtrlr.SecurityProfile taking effect; --tls-port for a
1 -> 2 upgrade on one server; SignCertificate by certificateType; hash data from the certificate
and its issuer; the V2G requests' default; UpdateFirmware signed with --ca-cert; the firmware and
log statuses followed per requestId.  Every frame the server sends is checked by the official 2.0.1
schema.
"""

import asyncio
import base64
import hashlib
import json
import re
import shlex
import shutil
import ssl
import subprocess
import sys
from pathlib import Path

import pytest
import websockets
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

import ocpp_mock_server as mock
from conftest import (
    DEMO_CHARGER,
    TIMEOUT,
    Charger,
    InProcessDemo,
    _basic,
    _certificate_authority,
    _connect_kwargs,
    _csr,
    _refusal_status,
    _signed_by,
    assert_valid,
    charger_test,
    http,
    http_port,
)

needs_openssl = pytest.mark.skipif(
    shutil.which("openssl") is None, reason="no openssl command on PATH"
)
NOW = "2026-12-03T10:00:00Z"
BOOT = {"chargingStation": {"model": "Sec-1", "vendorName": "Test"}, "reason": "PowerUp"}


async def _station(url: str, station_id: str = "CS-1", password=None, context=None):
    """A 2.0.1 station's websocket (subprotocol ocpp2.0.1) as a Charger, with HTTP Basic
    ``password`` and TLS ``context`` if given; the HTTP status if the upgrade is refused."""
    kwargs = _connect_kwargs([("Authorization", _basic(station_id, password))]) if password else {}
    if context is not None:
        kwargs["ssl"] = context
    try:
        websocket = await websockets.connect(
            f"{url}/{station_id}", subprotocols=["ocpp2.0.1"], **kwargs
        )
    except websockets.InvalidHandshake as exc:
        return _refusal_status(exc)
    return Charger(websocket)


async def _booted(url: str, station_id: str = "CS-1", **connect) -> Charger:
    station = await _station(url, station_id, **connect)
    assert isinstance(station, Charger), station
    reply = await _call(station, "BootNotification", BOOT)
    assert reply.payload["status"] == "Accepted", reply
    return station


async def _call(station: Charger, action: str, payload: dict):
    """The station's CALL, and the server's reply, valid by the 2.0.1 schema (a CALLERROR
    fails)."""
    assert_valid(action + "Request", payload, "2.0.1")
    reply = await station.call(action, payload)
    assert reply[0] == 3, reply
    assert_valid(action + "Response", reply.payload, "2.0.1")
    return reply


async def _answered(station: Charger, action: str, reply: dict):
    """The server's next CALL of ``action``, valid by the 2.0.1 schema, answered ``reply``."""
    call = await station.expect_call(action)
    assert_valid(action + "Request", call.payload, "2.0.1")
    await station.answer(call, reply)
    return call


def _set_variable(component: str, variable: str, value: str) -> str:
    return "SetVariables " + json.dumps(
        {"setVariableData": [{"component": {"name": component}, "variable": {"name": variable},
                              "attributeValue": value}]}, separators=(",", ":"))


async def _accept_set_variables(station: Charger):
    call = await station.expect_call("SetVariables")
    assert_valid("SetVariablesRequest", call.payload, "2.0.1")
    await station.answer(call, {"setVariableResult": [
        {"attributeStatus": "Accepted", "component": item["component"],
         "variable": item["variable"]} for item in call.payload["setVariableData"]]})
    return call


def _tls_client(ca_path, certificate=None):
    context = ssl.create_default_context(cafile=str(ca_path))
    if certificate is not None:
        context.load_cert_chain(*certificate)
    return context


# ---------------------------------------------------------------- Item 2: security profiles 1-3


@charger_test
async def test_basic_auth_and_a_password_set_by_set_variables_for_a_2_0_1_station(start_server):
    """Profile 1 as for 1.6; an accepted SecurityCtrlr.BasicAuthPassword is the only password that
    lets the station in from its next connection on (the old one gets 401)."""
    server = start_server("--no-boot-data", "--basic-auth", "old-password-0123")
    assert await _station(server.url, password=b"wrong-password-01") == 401
    assert await _station(server.url) == 401
    station = await _booted(server.url, password=b"old-password-0123")
    server.type(_set_variable("SecurityCtrlr", "BasicAuthPassword", "new-password-4567"))
    await _accept_set_variables(station)
    server.wait_for(r"CS-1 \*\* BasicAuthPassword set: from its next connection on, CS-1 must "
                    r"log in with the new password; the old one gets 401")
    await station.close()
    assert await _station(server.url, password=b"old-password-0123") == 401
    server.wait_for(r"HTTP 401, wrong password: its AuthorizationKey was rotated \(2\.0\.1: its "
                    r"BasicAuthPassword set\)")
    again = await _booted(server.url, password=b"new-password-4567")
    await again.close()


@charger_test
async def test_a_rejected_password_changes_nothing(start_server):
    server = start_server("--no-boot-data", "--basic-auth", "old-password-0123")
    station = await _booted(server.url, password=b"old-password-0123")
    server.type(_set_variable("SecurityCtrlr", "BasicAuthPassword", "new-password-4567"))
    call = await station.expect_call("SetVariables")
    await station.answer(call, {"setVariableResult": [{
        "attributeStatus": "Rejected", **{key: call.payload["setVariableData"][0][key]
                                          for key in ("component", "variable")}}]})
    server.wait_for(r"CS-1 <- SetVariables\.conf")
    await station.close()
    again = await _booted(server.url, password=b"old-password-0123")
    await again.close()
    assert "BasicAuthPassword set" not in server.output()


@charger_test
async def test_tls_and_client_certificates_for_a_2_0_1_station(start_server, tmp_path):
    """Profiles 2 and 3 as for 1.6: wss://, and a client certificate whose CN is the station's
    id (another CN: 403)."""
    ca_path, _, ca, ca_key = _certificate_authority(tmp_path, "Station CA")
    server_cert, server_key = _signed_by(ca, ca_key, tmp_path, "mock-server", server=True)
    server = start_server("--no-boot-data", "--certfile", str(server_cert), "--keyfile",
                          str(server_key), "--client-ca", str(ca_path))
    assert server.url.startswith("wss://")
    own = _tls_client(ca_path, _signed_by(ca, ca_key, tmp_path, "CS-1"))
    station = await _booted(server.url, context=own)
    await station.close()
    other = _tls_client(ca_path, _signed_by(ca, ca_key, tmp_path, "CS-2"))
    assert await _station(server.url, context=other) == 403
    server.wait_for(r"HTTP 403, the client certificate's CN is \"CS-2\", not the charge point "
                    r"id \"CS-1\"")


def _tls_server(start_server, tmp_path, *extra):
    """A server with ws:// on its port and wss:// on --tls-port (a free one)."""
    ca_path, ca_key_path, ca, ca_key = _certificate_authority(tmp_path, "Station CA")
    server_cert, server_key = _signed_by(ca, ca_key, tmp_path, "mock-server", server=True)
    server = start_server("--no-boot-data", "--certfile", str(server_cert), "--keyfile",
                          str(server_key), "--tls-port", "0", *extra)
    return server, ca_path, ca, ca_key


@charger_test
async def test_a_station_raised_to_profile_2_is_refused_on_ws_and_served_on_the_tls_port(
    start_server, tmp_path
):
    server, ca_path, _, _ = _tls_server(start_server, tmp_path, "--basic-auth", "key-0123456789ab")
    tls_url = server.system.tls_url
    assert server.url.startswith("ws://") and tls_url.startswith("wss://") and tls_url != server.url
    server.wait_for(r">> TLS too \(security profiles 2 and 3\): wss://127\.0\.0\.1:\d+/<charge "
                    r"point id>")
    key = b"key-0123456789ab"
    station = await _booted(server.url, password=key)
    server.type("SetNetworkProfile")  # typed bare: the way up, this server's wss:// listener
    network = await _answered(station, "SetNetworkProfile", {"status": "Accepted"})
    assert network.payload["connectionData"]["ocppCsmsUrl"] == tls_url + "/"
    assert network.payload["connectionData"]["securityProfile"] == 2
    server.type(_set_variable("SecurityCtrlr", "SecurityProfile", "2"))
    await _accept_set_variables(station)
    server.wait_for(r"CS-1 \*\* SecurityProfile raised from 1 to 2: from its next connection on, "
                    r"CS-1 must connect with wss://, HTTP Basic; lower profiles get 403 "
                    r"\(wss://127\.0\.0\.1:\d+\)")
    await station.close()
    assert await _station(server.url, password=key) == 403
    server.wait_for(r"HTTP 403, security profile 1 \(ws://, HTTP Basic\) is below 2, which this "
                    r"station accepted \(SecurityCtrlr\.SecurityProfile\)")
    other = await _station(server.url, "CS-OTHER", password=key)  # only that station is raised
    assert isinstance(other, Charger), other
    await other.close()
    server.wait_for(r"CS-OTHER \*\* disconnected")
    upgraded = await _booted(tls_url, password=key, context=_tls_client(ca_path))
    server.type(_set_variable("SecurityCtrlr", "SecurityProfile", "1"))
    await _accept_set_variables(upgraded)
    server.wait_for(r"CS-1 !! SecurityProfile 1 accepted: not higher than the profile it had, so "
                    r"nothing changed \(a security profile is never lowered")
    await upgraded.close()
    assert await _station(server.url, password=key) == 403


@charger_test
async def test_a_station_raised_to_profile_3_needs_its_client_certificate(start_server, tmp_path):
    """With --client-ca on the TLS port only: ws:// is asked for no certificate until the station
    is raised to 3; then only wss:// with its certificate lets it in."""
    ca_dir = tmp_path / "ca"
    ca_dir.mkdir()
    ca_path, _, ca, ca_key = _certificate_authority(ca_dir, "Client CA")
    server, server_ca, _, _ = _tls_server(start_server, tmp_path, "--client-ca", str(ca_path))
    server.wait_for(r">> client certificates required on wss://, signed by")
    station = await _booted(server.url)  # profile 1 (no --basic-auth: no password asked)
    server.type(_set_variable("SecurityCtrlr", "SecurityProfile", "3"))
    await _accept_set_variables(station)
    server.wait_for(r"CS-1 \*\* SecurityProfile raised from 1 to 3: .* must connect with wss:// "
                    r"with a client certificate; lower profiles get 403")
    await station.close()
    assert await _station(server.url) == 403
    context = ssl.create_default_context(cafile=str(server_ca))
    context.load_cert_chain(*_signed_by(ca, ca_key, tmp_path, "CS-1"))
    upgraded = await _booted(server.system.tls_url, context=context)
    await upgraded.close()


def test_tls_port_needs_certfile(capsys):
    with pytest.raises(SystemExit) as exited:
        mock.parse_settings(["--tls-port", "0"])
    assert exited.value.code == 2
    assert "--tls-port needs --certfile" in capsys.readouterr().err


@charger_test
async def test_a_security_event_notification_is_shown_in_words(start_server):
    server = start_server("--no-boot-data")
    station = await _booted(server.url)
    payload = {"type": "InvalidCsmsCertificate", "timestamp": NOW, "techInfo": "expired"}
    assert (await _call(station, "SecurityEventNotification", payload)).payload == {}
    server.wait_for(r'CS-1 <- SecurityEventNotification security event InvalidCsmsCertificate at '
                    r'2026-12-03T10:00:00Z: techInfo "expired"$')
    await station.close()


# ------------------------------------------------------------------------ Item 3: certificates


def _common_name(pem: str) -> str:
    certificate = x509.load_pem_x509_certificates(pem.encode())[0]
    return certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value


def _csr_named(*common_names: str) -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name) for name in common_names]
                        + [x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Test")])
    request = x509.CertificateSigningRequestBuilder().subject_name(subject).sign(
        key, hashes.SHA256())
    return request.public_bytes(serialization.Encoding.PEM).decode()


def _signing_server(start_server, tmp_path):
    ca_path, ca_key_path, ca, ca_key = _certificate_authority(tmp_path)
    files = tmp_path / "files"
    server = start_server("--no-boot-data", "--ca-cert", str(ca_path), "--ca-key",
                          str(ca_key_path), "--files-dir", str(files))
    return server, ca, files


@charger_test
@needs_openssl
async def test_a_charging_station_certificate_is_signed_as_in_1_6(start_server, tmp_path):
    server, ca, _ = _signing_server(start_server, tmp_path)
    station = await _booted(server.url)
    reply = await _call(station, "SignCertificate", {
        "csr": _csr("CS-1"), "certificateType": "ChargingStationCertificate"})
    assert reply.payload == {"status": "Accepted"}
    signed = await _answered(station, "CertificateSigned", {"status": "Accepted"})
    assert signed.payload["certificateType"] == "ChargingStationCertificate"
    chain = x509.load_pem_x509_certificates(signed.payload["certificateChain"].encode())
    assert _common_name(signed.payload["certificateChain"]) == "CS-1"
    assert chain[0].issuer == ca.subject
    # Accepted: its hash data, computed from it and its issuer (the chain's next), is remembered.
    server.wait_for(r"CS-1 \*\* certificate taken: serialNumber [0-9a-f]+, issuerNameHash")
    server.type("DeleteCertificate")
    deleted = await _answered(station, "DeleteCertificate", {"status": "Accepted"})
    key = ca.public_key().public_bytes(serialization.Encoding.X962,
                                       serialization.PublicFormat.UncompressedPoint)
    assert deleted.payload["certificateHashData"] == {
        "hashAlgorithm": "SHA256",
        "issuerNameHash": hashlib.sha256(chain[0].issuer.public_bytes()).hexdigest(),
        "issuerKeyHash": hashlib.sha256(key).hexdigest(),
        "serialNumber": format(chain[0].serial_number, "x")}
    # A CSR for another id, the default type: Rejected, as in 1.6.
    other = await _call(station, "SignCertificate", {"csr": _csr("CS-2")})
    assert other.payload == {"status": "Rejected"}
    server.wait_for(r'CS-1 !! SignCertificate: the CSR\'s CN is "CS-2", not "CS-1", the charge '
                    r"point id of this connection; answered Rejected, nothing signed$")
    await station.close()


@charger_test
@needs_openssl
async def test_a_v2g_csr_names_the_secc_and_is_signed_by_its_own_rule(start_server, tmp_path):
    server, _, files = _signing_server(start_server, tmp_path)
    station = await _booted(server.url)
    reply = await _call(station, "SignCertificate", {"csr": _csr("DE*ABC*E1234*1"),
                                                   "certificateType": "V2GCertificate"})
    assert reply.payload == {"status": "Accepted"}
    server.wait_for(r'CS-1 !! SignCertificate V2GCertificate: its CN "DE\*ABC\*E1234\*1" names the '
                    r"SECC, not the station; this server knows no EVSEIDs and cannot check it")
    signed = await _answered(station, "CertificateSigned", {"status": "Accepted"})
    assert signed.payload["certificateType"] == "V2GCertificate"
    assert _common_name(signed.payload["certificateChain"]) == "DE*ABC*E1234*1"
    two = await _call(station, "SignCertificate", {"csr": _csr_named("A", "B"),
                                                 "certificateType": "V2GCertificate"})
    assert two.payload == {"status": "Rejected"}
    server.wait_for(r'CS-1 !! SignCertificate: the V2GCertificate CSR\'s CN is "A", "B": it must '
                    r"have exactly one, naming the SECC; answered Rejected, nothing signed$")
    await station.close()


@charger_test
async def test_without_a_ca_the_line_to_type_names_the_certificate_type(start_server, tmp_path):
    server = start_server("--no-boot-data", "--files-dir", str(tmp_path))
    station = await _booted(server.url)
    reply = await _call(station, "SignCertificate", {"csr": _csr("DE*ABC*E1"),
                                                   "certificateType": "V2GCertificate"})
    assert reply.payload == {"status": "Accepted"}
    line = server.wait_for(r"CS-1 \*\* SignCertificate: the CSR is saved in .* type: @CS-1 "
                           r"CertificateSigned certificateChain=@\S+ "
                           r"certificateType=V2GCertificate$")
    typed = re.search(r"type: (.*)$", line.string).group(1)
    chain_path = re.search(r"certificateChain=@(\S+)", typed).group(1)
    with open(chain_path, "w", encoding="utf-8") as chain:
        chain.write(mock.DEMO_CERTIFICATE)
    server.type(typed)
    sent = await _answered(station, "CertificateSigned", {"status": "Accepted"})
    assert sent.payload == {"certificateChain": mock.DEMO_CERTIFICATE,
                            "certificateType": "V2GCertificate"}
    await station.close()


def test_hash_data_is_computed_from_the_certificate_and_its_issuer(tmp_path):
    ca_path, _, ca, ca_key = _certificate_authority(tmp_path)
    leaf_path, _ = _signed_by(ca, ca_key, tmp_path, "CS-1")
    leaf_pem, ca_pem = leaf_path.read_text(), ca_path.read_text()
    leaf = x509.load_pem_x509_certificate(leaf_pem.encode())
    key = ca.public_key().public_bytes(serialization.Encoding.X962,
                                       serialization.PublicFormat.UncompressedPoint)
    expected = {"hashAlgorithm": "SHA256",
                "issuerNameHash": hashlib.sha256(leaf.issuer.public_bytes()).hexdigest(),
                "issuerKeyHash": hashlib.sha256(key).hexdigest(),
                "serialNumber": format(leaf.serial_number, "x")}
    assert mock.certificate_hash_data(leaf_pem, ca_pem) == expected
    assert mock.certificate_hash_data(leaf_pem + ca_pem) == expected  # a chain, leaf first
    assert_valid("DeleteCertificateRequest", {"certificateHashData": expected}, "2.0.1")
    with pytest.raises(ValueError, match="not self-signed"):
        mock.certificate_hash_data(leaf_pem)
    with pytest.raises(ValueError, match="not the one that signed it"):
        mock.certificate_hash_data(leaf_pem, mock.DEMO_CERTIFICATE)


@charger_test
async def test_install_then_delete_and_get_installed_ids_on_a_2_0_1_station(start_server):
    server = start_server("--no-boot-data")
    station = await _booted(server.url)
    server.type("InstallCertificate")
    installed = await _answered(station, "InstallCertificate", {"status": "Accepted"})
    assert installed.payload == {"certificateType": "CSMSRootCertificate",
                                 "certificate": mock.DEMO_CERTIFICATE}
    server.wait_for(r"CS-1 \*\* certificate taken: serialNumber 943ca0e055d8973dbac89f6fc4b398"
                    r"0dcd17163, issuerNameHash [0-9a-f]{16}\.\.\.; DeleteCertificate typed bare "
                    r"deletes it")
    server.type("DeleteCertificate")
    deleted = await _answered(station, "DeleteCertificate", {"status": "Accepted"})
    assert deleted.payload == {
        "certificateHashData": mock.certificate_hash_data(mock.DEMO_CERTIFICATE)}
    server.type("GetInstalledCertificateIds")
    await _answered(station, "GetInstalledCertificateIds", {"status": "NotFound"})
    server.wait_for(r"CS-1 <- GetInstalledCertificateIds\.conf")
    await station.close()


@charger_test
async def test_the_v2g_requests_are_answered_failed_and_a_fault_sets_another_answer(start_server):
    server = start_server("--no-boot-data")
    station = await _booted(server.url)
    ev = await _call(station, "Get15118EVCertificate", {
        "iso15118SchemaVersion": "urn:iso:15118:2:2013:MsgDef", "action": "Install",
        "exiRequest": "AAAA"})
    assert ev.payload == {"status": "Failed", "exiResponse": "", "statusInfo": {
        "reasonCode": "NoV2GPKI",
        "additionalInfo": "this mock CSMS has no ISO 15118 (V2G) PKI to ask"}}
    server.wait_for(r"CS-1 !! an ISO 15118 certificate request is answered Failed: this mock CSMS "
                    r"has no ISO 15118 \(V2G\) PKI to ask")
    ocsp = {"hashAlgorithm": "SHA256", "issuerNameHash": "ab" * 32, "issuerKeyHash": "cd" * 32,
            "serialNumber": "1f", "responderURL": "http://ocsp.example"}
    status = await _call(station, "GetCertificateStatus", {"ocspRequestData": ocsp})
    assert status.payload["status"] == "Failed"
    server.type(guide_block("fault GetCertificateStatus")[0])  # the guide's line, as written
    server.wait_for(r"fault .*GetCertificateStatus")
    configured = await _call(station, "GetCertificateStatus", {"ocspRequestData": ocsp})
    assert configured.payload == {"status": "Accepted", "ocspResult": "TU9DSw=="}
    await station.close()


# ---------------------------------------------------------------- Item 4: firmware and logs


def _verifies(ca, signature: str, data: bytes) -> bool:
    try:
        ca.public_key().verify(base64.b64decode(signature), data, ec.ECDSA(hashes.SHA256()))
    except Exception:  # InvalidSignature
        return False
    return True


@charger_test
@needs_openssl
async def test_update_firmware_is_signed_for_real_with_the_ca(start_server, tmp_path):
    server, ca, files = _signing_server(start_server, tmp_path)
    (files / "CS-1").mkdir(parents=True)
    (files / "CS-1" / "firmware.bin").write_bytes(b"\x7fFIRMWARE v2" * 100)
    station = await _booted(server.url)
    server.type("UpdateFirmware")
    call = await _answered(station, "UpdateFirmware", {"status": "Accepted"})
    firmware = call.payload["firmware"]
    assert isinstance(call.payload["requestId"], int)
    assert firmware["location"].endswith("/files/CS-1/firmware.bin")
    assert x509.load_pem_x509_certificate(firmware["signingCertificate"].encode()) == ca
    assert _verifies(ca, firmware["signature"], b"\x7fFIRMWARE v2" * 100)
    assert not _verifies(ca, firmware["signature"], b"other firmware")
    server.wait_for(r"CS-1 <- UpdateFirmware\.conf")
    assert "placeholders" not in server.output()
    await station.close()


@charger_test
async def test_without_a_ca_update_firmware_says_its_signature_is_a_placeholder(start_server):
    server = start_server("--no-boot-data")
    station = await _booted(server.url)
    server.type("UpdateFirmware")
    call = await _answered(station, "UpdateFirmware", {"status": "Accepted"})
    assert call.payload["firmware"]["signature"] == mock.PLACEHOLDER_FIRMWARE_SIGNATURE
    assert call.payload["firmware"]["signingCertificate"] == mock.DEMO_CERTIFICATE
    server.wait_for(r"CS-1 \*\* UpdateFirmware: its signature and signingCertificate are "
                    r"placeholders \(no --ca-cert/--ca-key")
    await station.close()


@charger_test
async def test_firmware_and_log_statuses_are_followed_per_request_id(start_server, tmp_path):
    server = start_server("--no-boot-data", "--files-dir", str(tmp_path))
    station = await _booted(server.url)
    server.type("GetLog logType=SecurityLog")
    get_log = await _answered(station, "GetLog", {"status": "Accepted", "filename": "sec.log"})
    assert get_log.payload["logType"] == "SecurityLog"
    location = get_log.payload["log"]["remoteLocation"]
    assert "/files/CS-1/" in location
    for status in ("Downloading", "Downloaded"):
        await _call(station, "FirmwareStatusNotification", {"status": status, "requestId": 7})
    await _call(station, "FirmwareStatusNotification", {"status": "Installing", "requestId": 8})
    server.wait_for(r"CS-1 \*\* UpdateFirmware request 7: Downloading, Downloaded$")
    server.wait_for(r"CS-1 \*\* UpdateFirmware request 8: Installing$")
    request_id = get_log.payload["requestId"]
    await _call(station, "LogStatusNotification", {"status": "Uploading", "requestId": request_id})
    await _upload(server, location + "sec.log", b"security log\n")
    await _call(station, "LogStatusNotification", {"status": "Uploaded", "requestId": request_id})
    server.wait_for(rf"CS-1 \*\* GetLog request {request_id}: Uploading, Uploaded$")
    server.wait_for(rf"CS-1 \*\* GetLog request {request_id}: the log uploaded: CS-1/sec\.log "
                    r"\(13 bytes\), stored as ")
    server.type("chargers")  # the listing shows them too
    server.wait_for(r">>\s+UpdateFirmware request 7: Downloading, Downloaded$")
    server.wait_for(rf">>\s+GetLog request {request_id}: Uploading, Uploaded$")
    await station.close()


@charger_test
async def test_what_is_followed_per_station_is_bounded(start_server):
    server = start_server("--no-boot-data", "--quiet")
    station = await _booted(server.url)
    for request_id in range(mock.MAX_REQUESTS_FOLLOWED + 5):
        await _call(station, "LogStatusNotification", {"status": "Uploading",
                                                     "requestId": request_id})
    for _ in range(mock.MAX_STATUSES_FOLLOWED + 3):
        await _call(station, "FirmwareStatusNotification", {"status": "Downloading",
                                                          "requestId": 99})
    followed = server.call_in_loop(lambda: dict(server.system.states["CS-1"].requests_followed))
    assert len(followed) == mock.MAX_REQUESTS_FOLLOWED
    assert ("GetLog", "0") not in followed and ("GetLog", "24") in followed  # the oldest forgotten
    assert followed[("UpdateFirmware", "99")] == ["Downloading"] * mock.MAX_STATUSES_FOLLOWED
    await station.close()


async def _upload(server, url: str, body: bytes) -> None:
    """POST ``body`` to the file server, as a station uploads its log."""
    path = url.split(f":{http_port(server)}", 1)[1]
    reply = await http(server, "POST", path, data=body, port=http_port(server))
    assert reply.status in (200, 201), reply


# ------------------------------------------------------------ The demo charger (--ocpp 2.0.1)


def _demo_charger(*args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-W", "error::DeprecationWarning", str(DEMO_CHARGER), *args],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, stdin=subprocess.DEVNULL)


def _stopped(demo: subprocess.Popen) -> str:
    if demo.poll() is None:
        demo.terminate()
    output, _ = demo.communicate(timeout=TIMEOUT)
    assert "Traceback" not in output, output
    return output


def _stopped_here(demo: InProcessDemo) -> str:
    """An in-process demo charger (for the tests whose subject is the server's side; the TLS
    walk-throughs run it as a process, as the guide does) stopped: its output."""
    demo.stop()
    assert "Traceback" not in demo.stdout, demo.stdout
    return demo.stdout


def _is_tls(server, station_id: str) -> bool:
    return server.call_in_loop(
        lambda: server.system.sessions[station_id].websocket.transport.get_extra_info(
            "ssl_object") is not None)


def _set_line(variable: str, value: str) -> str:
    return "@CS-D " + _set_variable("SecurityCtrlr", variable, value)


GUIDE = Path(mock.__file__).parent / "docs" / "guide.md"


def guide_block(first: str) -> list:
    """The lines of the guide's code block whose first line starts with ``first``."""
    for match in re.finditer(r"^```\w*\n(.*?)^```", GUIDE.read_text(encoding="utf-8"),
                             re.M | re.S):
        if match.group(1).startswith(first):
            return match.group(1).splitlines()
    raise AssertionError(f"no block of the guide starts with {first!r}")


def _as_here(line: str, tmp_path, **names) -> list:
    """A command line of the guide, its files in ``tmp_path`` and its ports or URL replaced."""
    words = shlex.split(line)
    return [names.get(word, str(tmp_path / word) if word.endswith((".pem", ".key")) else word)
            for word in words]


@pytest.mark.slow(2)
def test_the_guides_profile_upgrade_of_the_demo_charger_runs_as_written(start_server, tmp_path):
    """The guide's 2.0.1 security walk-through, its lines as written (ports and file places made
    free): ws:// with basic auth, then SetNetworkProfile and SecurityProfile 2, and it comes back
    over wss:// (--tls-port); then BasicAuthPassword, and it comes back with the new one.  Over
    TLS, the guide's UpdateFirmware and GetLog lines: firmware downloaded and the log uploaded,
    followed per requestId."""
    ca_path, _, ca, ca_key = _certificate_authority(tmp_path, "ca")
    _signed_by(ca, ca_key, tmp_path, "server", server=True)
    server_line, demo_line = guide_block("python ocpp_mock_server.py --basic-auth")
    files = tmp_path / "files"
    server = start_server(*_as_here(server_line, tmp_path, **{"60443": "0"})[2:],
                          "--files-dir", str(files), "--no-boot-data")
    url = server.url + "/CS-1"
    demo = _demo_charger(*_as_here(demo_line, tmp_path, **{
        "ws://127.0.0.1:60003/CS-1": url})[2:])
    try:
        server.wait_for(r"CS-1 <- StatusNotification")
        assert not _is_tls(server, "CS-1")
        network, profile, password = guide_block("SetNetworkProfile")
        server.type(network)
        server.wait_for(r"CS-1 <- SetNetworkProfile\.conf \{\"status\":\"Accepted\"\}")
        mark = server.mark()
        server.type(profile)
        server.wait_for(r"CS-1 <- SecurityEventNotification security event "
                        r"ReconfigurationOfSecurityParameters at \S+: techInfo \"SecurityProfile "
                        r"2\"", since=mark)
        server.wait_for(r"CS-1 <- StatusNotification", since=server.mark())
        assert _is_tls(server, "CS-1")
        mark = server.mark()
        server.type(password)
        server.wait_for(r"CS-1 \*\* BasicAuthPassword set", since=mark)
        server.wait_for(r"techInfo \"BasicAuthPassword\"", since=mark)
        server.wait_for(r"CS-1 <- StatusNotification", since=server.mark())
        (files / "CS-1").mkdir(parents=True, exist_ok=True)
        (files / "CS-1" / "firmware.bin").write_bytes(b"demo firmware")
        for line in guide_block("UpdateFirmware"):
            server.type(line)
        server.wait_for(r"CS-1 \*\* UpdateFirmware request \d+: Downloading, Downloaded$")
        server.wait_for(r"CS-1 \*\* GetLog request \d+: Uploading, Uploaded$")
        server.wait_for(r"CS-1 \*\* GetLog request \d+: the log uploaded: CS-1/demo-security\.log")
    finally:
        output = _stopped(demo)
    assert f"connected to {server.system.tls_url}/CS-1 (ocpp2.0.1 dialect)" in output, output
    assert "refused" not in output, output


@pytest.mark.slow(1)
def test_the_demo_charger_takes_part_in_profile_3(start_server, tmp_path):
    """--client-ca on the TLS port: the demo charger starts on ws:// and, once raised to 3, comes
    back with its client certificate; a lower profile is then refused (403)."""
    ca_dir = tmp_path / "ca"
    ca_dir.mkdir()
    ca_path, _, ca, ca_key = _certificate_authority(ca_dir, "Client CA")
    server, server_ca, _, _ = _tls_server(start_server, tmp_path, "--client-ca", str(ca_path))
    client_cert, client_key = _signed_by(ca, ca_key, tmp_path, "CS-D")
    demo = _demo_charger(server.url + "/CS-D", "--ocpp", "2.0.1", "--ca-file", str(server_ca),
                         "--client-cert", str(client_cert), "--client-key", str(client_key))
    try:
        server.wait_for(r"CS-D <- StatusNotification")
        server.type("@CS-D SetNetworkProfile")
        server.wait_for(r"CS-D <- SetNetworkProfile\.conf")
        mark = server.mark()
        server.type(_set_line("SecurityProfile", "3"))
        server.wait_for(r"CS-D \*\* SecurityProfile raised from 1 to 3", since=mark)
        server.wait_for(r"CS-D <- StatusNotification", since=server.mark())
        assert _is_tls(server, "CS-D")
        peer = server.call_in_loop(
            lambda: server.system.sessions["CS-D"].websocket.transport.get_extra_info("peercert"))
        assert ((("commonName", "CS-D"),),) == tuple(peer["subject"])
    finally:
        output = _stopped(demo)
    assert "connected to wss://127.0.0.1" in output, output
    assert asyncio.run(_station(server.url, "CS-D")) == 403
    server.wait_for(r"HTTP 403, security profile 1 \(ws://, HTTP Basic\) is below 3")


# ------------------------------------------- a charge point on mobilityhouse `ocpp`'s v201


@charger_test
@needs_openssl
async def test_an_ocpp_package_v201_charge_point_takes_the_security_flows(start_server, tmp_path):
    """The package's v201 ChargePoint (its own schema checks on every frame) signs a CSR, takes
    the signed chain, the certificate commands, UpdateFirmware and GetLog typed bare, a new
    password, and reports its firmware and log statuses and a security event."""
    from ocpp.routing import on
    from ocpp.v201 import ChargePoint, call, call_result, datatypes, enums
    from ocpp.v201.enums import Action

    taken = {}

    class SecureStation(ChargePoint):
        @on(Action.certificate_signed)
        def on_certificate_signed(self, certificate_chain, **kwargs):
            taken["chain"] = (certificate_chain, kwargs.get("certificate_type"))
            return call_result.CertificateSigned(status="Accepted")

        @on(Action.install_certificate)
        def on_install_certificate(self, certificate_type, certificate, **_):
            return call_result.InstallCertificate(status="Accepted")

        @on(Action.delete_certificate)
        def on_delete_certificate(self, certificate_hash_data, **_):
            taken["deleted"] = certificate_hash_data
            return call_result.DeleteCertificate(status="Accepted")

        @on(Action.get_installed_certificate_ids)
        def on_get_installed_certificate_ids(self, **_):
            return call_result.GetInstalledCertificateIds(status="NotFound")

        @on(Action.update_firmware)
        def on_update_firmware(self, request_id, firmware, **_):
            taken["firmware"] = (request_id, firmware)
            return call_result.UpdateFirmware(status="Accepted")

        @on(Action.get_log)
        def on_get_log(self, log, log_type, request_id, **_):
            taken["log"] = (request_id, log_type)
            return call_result.GetLog(status="Accepted", filename="station.log")

        @on(Action.set_variables)
        def on_set_variables(self, set_variable_data, **_):
            return call_result.SetVariables(set_variable_result=[
                {"attribute_status": "Accepted", "component": item["component"],
                 "variable": item["variable"]} for item in set_variable_data])

    server, _, _ = _signing_server(start_server, tmp_path)
    websocket = await websockets.connect(server.url + "/MH-SEC", subprotocols=["ocpp2.0.1"])
    station = SecureStation("MH-SEC", websocket)
    listening = asyncio.ensure_future(station.start())
    loop = asyncio.get_running_loop()

    async def typed(line: str, answered: str):
        mark = server.mark()
        server.type(line)
        return await loop.run_in_executor(
            None, lambda: server.wait_for(rf"MH-SEC <- {answered}(\.conf| CALLERROR)", since=mark))

    try:
        await station.call(call.BootNotification(
            charging_station=datatypes.ChargingStationType(vendor_name="MH", model="Sec"),
            reason=enums.BootReasonEnumType.power_up))
        signed = await station.call(call.SignCertificate(
            csr=_csr("MH-SEC"), certificate_type="ChargingStationCertificate"))
        assert signed.status == "Accepted"
        await loop.run_in_executor(None, lambda: server.wait_for(r"MH-SEC <- CertificateSigned"))
        assert _common_name(taken["chain"][0]) == "MH-SEC"
        assert taken["chain"][1] == "ChargingStationCertificate"
        for line in ("InstallCertificate", "DeleteCertificate", "GetInstalledCertificateIds",
                     "UpdateFirmware", "GetLog logType=SecurityLog",
                     "@MH-SEC " + _set_variable("SecurityCtrlr", "BasicAuthPassword", "pw-0123")):
            answer = await typed(line, line.split()[0] if line[0] != "@" else "SetVariables")
            assert answer.group(1) == ".conf", server.output()
        demo_root = mock.certificate_hash_data(mock.DEMO_CERTIFICATE)  # installed just before
        assert taken["deleted"] == {"hash_algorithm": "SHA256",
                                    "issuer_name_hash": demo_root["issuerNameHash"],
                                    "issuer_key_hash": demo_root["issuerKeyHash"],
                                    "serial_number": demo_root["serialNumber"]}
        request_id, firmware = taken["firmware"]
        assert firmware["signing_certificate"].startswith("-----BEGIN CERTIFICATE-----")
        await station.call(call.FirmwareStatusNotification(status="Downloading",
                                                           request_id=request_id))
        await station.call(call.LogStatusNotification(status="Uploading",
                                                      request_id=taken["log"][0]))
        await station.call(call.SecurityEventNotification(
            type="FirmwareUpdated", timestamp=NOW, tech_info="by the test"))
        server.wait_for(rf"MH-SEC \*\* UpdateFirmware request {request_id}: Downloading$")
        server.wait_for(rf"MH-SEC \*\* GetLog request {taken['log'][0]}: Uploading$")
        server.wait_for(r'MH-SEC <- SecurityEventNotification security event FirmwareUpdated at '
                        r'2026-12-03T10:00:00Z: techInfo "by the test"')
        server.wait_for(r"MH-SEC \*\* BasicAuthPassword set")
        assert "spec:" not in server.settled_output()
    finally:
        listening.cancel()
        await websocket.close()


# ------------------------------------ the demo charger's own CSR, hash data and logs (issue 22)


@pytest.mark.slow(0.5)
@needs_openssl
def test_the_demo_charger_gets_a_certificate_for_its_own_id_in_both_versions(start_server,
                                                                             tmp_path):
    """A demo charger on CS-1 (2.0.1) and one on CP-7 (1.6) each send a CSR for their own id,
    made by openssl when asked: the server signs both, and each takes its chain."""
    server, ca, _ = _signing_server(start_server, tmp_path)
    demos = [InProcessDemo(server.url + "/CS-1", "--ocpp", "2.0.1"),
             InProcessDemo(server.url + "/CP-7", "--no-wait-boot-data")]
    try:
        server.wait_for(r"CS-1 <- StatusNotification")
        server.wait_for(r"CP-7 <- StatusNotification")
        server.type("@CS-1 TriggerMessage requestedMessage=SignChargingStationCertificate")
        server.type("@CP-7 ExtendedTriggerMessage requestedMessage=SignChargePointCertificate")
        for station in ("CS-1", "CP-7"):
            server.wait_for(rf"{station} \*\* SignCertificate: signed the CSR in \S+ with "
                            r"--ca-cert; sending CertificateSigned")
            server.wait_for(rf'{station} <- CertificateSigned\.conf \{{"status":"Accepted"\}}')
            chain = server.system.last_signed_chain[station]
            assert _common_name(chain) == station
            assert x509.load_pem_x509_certificates(chain.encode())[0].issuer == ca.subject
    finally:
        outputs = [_stopped_here(demo) for demo in demos]
    assert "!! SignCertificate" not in server.output(), server.output()
    assert all("cannot make a certificate signing request" not in out for out in outputs)


def test_the_demo_chargers_certificate_hash_data_is_the_servers(start_server):
    """InstallCertificate then DeleteCertificate typed bare (the server computes the hash data of
    its demo root): Accepted by the demo charger in both versions; what it lists is what the
    server computes."""
    server = start_server("--no-boot-data")
    expected = mock.certificate_hash_data(mock.DEMO_CERTIFICATE)
    demos = [InProcessDemo(server.url + "/CS-1", "--ocpp", "2.0.1"),
             InProcessDemo(server.url + "/CP-7", "--no-wait-boot-data")]
    try:
        server.wait_for(r"CS-1 <- StatusNotification")
        server.wait_for(r"CP-7 <- StatusNotification")
        for station in ("CS-1", "CP-7"):
            for typed, answer in (("InstallCertificate", "Accepted"),
                                  ("DeleteCertificate", "Accepted"),
                                  ("DeleteCertificate", "NotFound"),
                                  ("InstallCertificate", "Accepted")):
                mark = server.mark()
                server.type(f"@{station} {typed}")
                server.wait_for(rf'{station} <- {typed}\.conf \{{"status":"{answer}"\}}',
                                since=mark)
            mark = server.mark()
            server.type(f"@{station} GetInstalledCertificateIds")
            line = server.wait_for(rf"{station} <- GetInstalledCertificateIds\.conf (\{{.*)",
                                   since=mark)
            listed = json.loads(line.group(1))
            hashes = listed.get("certificateHashData") or [
                entry["certificateHashData"] for entry in listed["certificateHashDataChain"]]
            assert hashes == [expected], listed
    finally:
        for demo in demos:
            _stopped_here(demo)


def test_the_demo_charger_uploads_the_log_get_log_asks_for(start_server, tmp_path):
    """GetLog DiagnosticsLog (typed bare) uploads its diagnostics, SecurityLog its security log."""
    files = tmp_path / "files"
    server = start_server("--no-boot-data", "--files-dir", str(files))
    demo = InProcessDemo(server.url + "/CS-1", "--ocpp", "2.0.1")
    try:
        server.wait_for(r"CS-1 <- StatusNotification")
        for typed, name in (("GetLog", "demo-diagnostics.log"),
                            ("GetLog logType=SecurityLog", "demo-security.log")):
            mark = server.mark()
            server.type(typed)
            server.wait_for(rf'CS-1 <- GetLog\.conf \{{"status":"Accepted","filename":"{name}"',
                            since=mark)
            server.wait_for(rf"CS-1 \*\* GetLog request \d+: the log uploaded: CS-1/{name}",
                            since=mark)
    finally:
        _stopped_here(demo)
    assert (files / "CS-1" / "demo-diagnostics.log").read_text().startswith(
        "demo charger diagnostics\n")
    assert (files / "CS-1" / "demo-security.log").read_text() == "demo charger security log\n"
