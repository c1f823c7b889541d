"""Certificate signing and the security extension (OCPP 1.6 security whitepaper).

CertificateHashData against the cryptography package, the certificate commands against the demo
charger's store, SignCertificate with and without a CA, the CA flags, and an ``ocpp`` package
charge point taking every security command.
"""

import asyncio
import base64
import functools
import re
import shutil
import ssl
import subprocess
from pathlib import Path

import pytest
import websockets
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

import ocpp_mock_server as mock
from conftest import (
    TIMEOUT,
    Charger,
    InProcessDemo,
    _certificate_authority,
    _csr,
    _signed_by,
    assert_valid,
    booted_charger,
    charger_test,
    server_command,
)


def test_certificate_hash_data_agrees_with_the_cryptography_package():
    import hashlib

    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    certificate = x509.load_pem_x509_certificate(mock.DEMO_CERTIFICATE.encode())
    key = certificate.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    assert mock.certificate_hash_data(mock.DEMO_CERTIFICATE) == {
        "hashAlgorithm": "SHA256",
        "issuerNameHash": hashlib.sha256(certificate.issuer.public_bytes()).hexdigest(),
        "issuerKeyHash": hashlib.sha256(key).hexdigest(),
        "serialNumber": format(certificate.serial_number, "x"),  # no leading zeroes (2.0.1)
    }
    assert_valid(
        "DeleteCertificate",
        {"certificateHashData": mock.certificate_hash_data(mock.DEMO_CERTIFICATE)},
    )
    with pytest.raises(ValueError):
        mock.certificate_hash_data(
            "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----"
        )


def test_the_certificate_commands_agree_with_the_demo_chargers_store(start_server, tmp_path):
    server = start_server("--files-dir", str(tmp_path))
    demo = InProcessDemo(server.url + "/CP-1")
    try:
        server.wait_for(r"CP-1 <- DataTransfer\.conf")
        for typed, answer in (
            ("GetInstalledCertificateIds", r'\{"status":"NotFound"\}'),
            ("InstallCertificate", r'\{"status":"Accepted"\}'),
            ("GetInstalledCertificateIds", r'\{"status":"Accepted","certificateHashData":\[\{'),
            ("DeleteCertificate", r'\{"status":"Accepted"\}'),  # the one it listed
            ("GetInstalledCertificateIds", r'\{"status":"NotFound"\}'),
        ):
            mark = server.mark()
            server.type(typed)
            server.wait_for(rf"CP-1 <- {typed}\.conf {answer}", since=mark)
        # GetLog bare (DiagnosticsLog): its diagnostics land in the files folder, under the
        # charger's name; logType=SecurityLog: its security log.
        server.type("GetLog")
        server.wait_for(r'CP-1 <- LogStatusNotification \{"status": "Uploaded", "requestId": 1\}')
        assert (tmp_path / "CP-1" / "demo-diagnostics.log").read_text().startswith(
            "demo charger diagnostics\n"
        )
        server.type("GetLog logType=SecurityLog")
        server.wait_for(r'CP-1 <- LogStatusNotification \{"status": "Uploaded", "requestId": 2\}')
        assert (
            tmp_path / "CP-1" / "demo-security.log"
        ).read_text() == "demo charger security log\n"
        server.type("ExtendedTriggerMessage requestedMessage=SignChargePointCertificate")
        server.wait_for(r'CP-1 <- SignCertificate \{"csr": "-----BEGIN CERTIFICATE REQUEST-----')
        server.wait_for(r'CP-1 -> SignCertificate\.conf \{"status":"Accepted"\}')
    finally:
        demo.stop()


@charger_test
@pytest.mark.skipif(shutil.which("openssl") is None, reason="no openssl command on PATH")
async def test_sign_certificate_is_signed_with_the_ca_and_sent_back(start_server, tmp_path):
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    ca_path, key_path, ca, _ = _certificate_authority(tmp_path)
    server = start_server(
        "--ca-cert", str(ca_path), "--ca-key", str(key_path), "--files-dir", str(tmp_path / "files")
    )
    charger = await booted_charger(server)
    assert (await charger.call("SignCertificate", {"csr": _csr("CP-1")})).payload == {
        "status": "Accepted"
    }
    signed = await charger.expect_call("CertificateSigned")
    assert_valid("CertificateSigned", signed.payload)
    chain = x509.load_pem_x509_certificates(signed.payload["certificateChain"].encode())
    assert chain[0].subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "CP-1"
    assert chain[0].issuer == ca.subject and chain[1] == ca
    ca.public_key().verify(
        chain[0].signature,
        chain[0].tbs_certificate_bytes,
        ec.ECDSA(chain[0].signature_hash_algorithm),
    )
    await charger.answer(signed, {"status": "Accepted"})
    server.wait_for(r"CP-1 <- CertificateSigned\.conf")
    server.type("CertificateSigned")  # typed bare: the chain signed for this charger last
    assert (await charger.expect_call("CertificateSigned")).payload == signed.payload
    not_a_csr = await charger.call("SignCertificate", {"csr": "hello"})
    assert not_a_csr.payload == {"status": "Rejected"}
    await charger.close()


@charger_test
async def test_without_a_ca_the_csr_is_saved_with_the_line_that_sends_the_chain(
    start_server, tmp_path
):
    server = start_server("--files-dir", str(tmp_path))
    charger = await booted_charger(server)
    csr = _csr("CP-1")
    await charger.call("SignCertificate", {"csr": csr})
    saved = server.wait_for(
        r"CP-1 \*\* SignCertificate: the CSR is saved in (\S+); sign it .*, put the chain in "
        r"(\S+) and type: @CP-1 CertificateSigned certificateChain=@(\S+)$"
    )
    assert Path(saved.group(1)).read_text() == csr and saved.group(2) == saved.group(3)
    Path(saved.group(2)).write_text(mock.DEMO_CERTIFICATE)  # the operator's signed chain
    server.type("@CP-1 CertificateSigned certificateChain=@" + saved.group(2))
    assert (await charger.expect_call("CertificateSigned")).payload == {
        "certificateChain": mock.DEMO_CERTIFICATE
    }
    await charger.close()


@pytest.mark.slow(1)
def test_ca_flags_are_checked_at_start_up(tmp_path):
    for args, message in (
        (["--ca-cert", "ca.pem"], "--ca-cert and --ca-key go together"),
        (
            ["--ca-cert", str(tmp_path / "no.pem"), "--ca-key", str(tmp_path / "no.key")],
            "no such file",
        ),
    ):
        result = subprocess.run(
            server_command(*args),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=TIMEOUT * 2,
        )
        assert result.returncode == 2 and message in result.stderr


@charger_test
async def test_an_ocpp_package_charge_point_takes_every_security_command(start_server):
    """The mobilityhouse ocpp library as the charger: it validates each CALL it gets against the
    official schemas (an invalid one would be answered with a CALLERROR), and its replies are
    linted here."""
    from ocpp.routing import on
    from ocpp.v16 import ChargePoint, call, call_result
    from ocpp.v16.enums import Action

    class SecureChargePoint(ChargePoint):
        @on(Action.certificate_signed)
        def on_certificate_signed(self, certificate_chain, **_):
            return call_result.CertificateSigned(status="Accepted")

        @on(Action.delete_certificate)
        def on_delete_certificate(self, certificate_hash_data, **_):
            return call_result.DeleteCertificate(status="NotFound")

        @on(Action.extended_trigger_message)
        def on_extended_trigger_message(self, requested_message, **_):
            return call_result.ExtendedTriggerMessage(status="Rejected")

        @on(Action.get_installed_certificate_ids)
        def on_get_installed_certificate_ids(self, certificate_type, **_):
            return call_result.GetInstalledCertificateIds(status="NotFound")

        @on(Action.get_log)
        def on_get_log(self, log, log_type, request_id, **_):
            return call_result.GetLog(status="Rejected")

        @on(Action.install_certificate)
        def on_install_certificate(self, certificate_type, certificate, **_):
            return call_result.InstallCertificate(status="Accepted")

        @on(Action.signed_update_firmware)
        def on_signed_update_firmware(self, request_id, firmware, **_):
            return call_result.SignedUpdateFirmware(status="Accepted")

    server = start_server("--no-boot-data")
    websocket = await websockets.connect(server.url + "/CP-OCPP", subprotocols=["ocpp1.6"])
    charge_point = SecureChargePoint("CP-OCPP", websocket)
    listening = asyncio.ensure_future(charge_point.start())
    try:
        await charge_point.call(
            call.BootNotification(charge_point_vendor="Lib", charge_point_model="ocpp")
        )
        for action in (
            "CertificateSigned",
            "DeleteCertificate",
            "ExtendedTriggerMessage",
            "GetInstalledCertificateIds",
            "GetLog",
            "InstallCertificate",
            "SignedUpdateFirmware",
        ):
            mark = server.mark()
            server.type(action)
            # The charge point answers meanwhile.
            answer = await asyncio.get_running_loop().run_in_executor(
                None,
                functools.partial(
                    server.wait_for, rf"CP-OCPP <- {action}(\.conf| CALLERROR)", since=mark
                ),
            )
            assert answer.group(1) == ".conf", server.output(mark)
        assert "spec:" not in server.settled_output()
    finally:
        listening.cancel()
        await websocket.close()


# -------------------- signing for the sender only
# SignCertificate signs for the sender only (issue "Trust, round 3", items 1, 2 and the CSR half
# of 4): the CSR's CN must be the charge point id of the connection that sent it, and under
# profile 3 the id its client certificate proved; with --ca-cert openssl verifies the CSR's
# signature before the reply; CSR files cannot collide, so each chain goes back to its CSR's
# sender; saved CSRs are bounded.


needs_openssl = pytest.mark.skipif(
    shutil.which("openssl") is None, reason="no openssl command on PATH"
)
ACCEPTED, REJECTED = {"status": "Accepted"}, {"status": "Rejected"}


def _files(folder):
    """The CSRs and certificates saved in the files folder."""
    return sorted(path.name for path in folder.iterdir() if path.suffix in (".csr", ".pem"))


def _common_name(chain: str) -> str:
    certificate = x509.load_pem_x509_certificates(chain.encode())[0]
    return certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value


def _csr_with_names(*common_names: str) -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name(
        [x509.NameAttribute(NameOID.COMMON_NAME, name) for name in common_names]
        + [x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Test")]
    )
    request = (
        x509.CertificateSigningRequestBuilder().subject_name(subject).sign(key, hashes.SHA256())
    )
    return request.public_bytes(serialization.Encoding.PEM).decode()


def _with_broken_signature(pem: str) -> str:
    """The same CSR with the last byte of its signature changed: it still parses, its CN is the
    same, and its signature no longer verifies."""
    der = bytearray(x509.load_pem_x509_csr(pem.encode()).public_bytes(serialization.Encoding.DER))
    der[-1] ^= 0x01
    body = base64.b64encode(bytes(der)).decode()
    lines = "\n".join(body[at : at + 64] for at in range(0, len(body), 64))
    return f"-----BEGIN CERTIFICATE REQUEST-----\n{lines}\n-----END CERTIFICATE REQUEST-----\n"


async def _booted(server, charger_id: str, **connect) -> Charger:
    websocket = await websockets.connect(
        server.url + "/" + charger_id, subprotocols=["ocpp1.6"], **connect
    )
    charger = Charger(websocket)
    reply = await charger.call(
        "BootNotification", {"chargePointVendor": "T", "chargePointModel": "M"}
    )
    assert reply.payload["status"] == "Accepted"
    return charger


@charger_test
@needs_openssl
async def test_a_charger_certified_as_cp_evil_gets_no_certificate_for_cp_1(start_server, tmp_path):
    """Profile 3 with --client-ca and --ca-cert on the same CA, as the guide shows."""
    ca_path, ca_key_path, ca, ca_key = _certificate_authority(tmp_path, "Charger CA")
    server_cert, server_key = _signed_by(ca, ca_key, tmp_path, "mock-server", server=True)
    files = tmp_path / "files"
    server = start_server(
        "--no-boot-data",
        "--certfile",
        str(server_cert),
        "--keyfile",
        str(server_key),
        "--client-ca",
        str(ca_path),
        "--ca-cert",
        str(ca_path),
        "--ca-key",
        str(ca_key_path),
        "--files-dir",
        str(files),
    )
    context = ssl.create_default_context(cafile=str(ca_path))
    context.load_cert_chain(*_signed_by(ca, ca_key, tmp_path, "CP-EVIL"))
    evil = await _booted(server, "CP-EVIL", ssl=context)
    assert (await evil.call("SignCertificate", {"csr": _csr("CP-1")})).payload == REJECTED
    server.wait_for(
        r'CP-EVIL !! SignCertificate: the CSR\'s CN is "CP-1", not "CP-EVIL", the '
        r"charge point id of this connection; answered Rejected, nothing signed$"
    )
    assert _files(files) == []
    # Its own id is signed: the refusal above was the CN, not the set-up.
    assert (await evil.call("SignCertificate", {"csr": _csr("CP-EVIL")})).payload == ACCEPTED
    signed = await evil.expect_call("CertificateSigned")
    assert _common_name(signed.payload["certificateChain"]) == "CP-EVIL"
    assert [name for name in _files(files) if name.endswith(".csr")] == [
        name for name in _files(files) if name.startswith("CP-EVIL-") and name.endswith(".csr")
    ]
    await evil.close()


@charger_test
@needs_openssl
async def test_a_csr_whose_signature_is_broken_is_rejected_before_the_reply(start_server, tmp_path):
    ca_path, key_path, _, _ = _certificate_authority(tmp_path)
    files = tmp_path / "files"
    server = start_server(
        "--no-boot-data",
        "--ca-cert",
        str(ca_path),
        "--ca-key",
        str(key_path),
        "--files-dir",
        str(files),
    )
    charger = await _booted(server, "CP-1")
    broken = _with_broken_signature(_csr("CP-1"))
    assert (await charger.call("SignCertificate", {"csr": broken})).payload == REJECTED
    server.wait_for(
        r"CP-1 !! SignCertificate: openssl req -verify finds its signature bad: .*; "
        r"answered Rejected, nothing signed$"
    )
    assert _files(files) == []
    await charger.no_frame_within(0.2)  # no CertificateSigned
    await charger.close()


@charger_test
@needs_openssl
async def test_chargers_signing_in_the_same_second_each_get_their_own_chain(start_server, tmp_path):
    """CP_1 and CP:1 clean to the same file name; the CSR files must not collide."""
    ca_path, key_path, _, _ = _certificate_authority(tmp_path)
    files = tmp_path / "files"
    server = start_server(
        "--no-boot-data",
        "--ca-cert",
        str(ca_path),
        "--ca-key",
        str(key_path),
        "--files-dir",
        str(files),
    )
    chargers = {name: await _booted(server, name) for name in ("CP_1", "CP:1")}
    replies = await asyncio.gather(
        *(
            charger.call("SignCertificate", {"csr": _csr(name)})
            for name, charger in chargers.items()
        )
    )
    assert [reply.payload for reply in replies] == [ACCEPTED] * 2
    for name, charger in chargers.items():
        signed = await charger.expect_call("CertificateSigned")
        assert _common_name(signed.payload["certificateChain"]) == name
        await charger.answer(signed, {"status": "Accepted"})
    assert len([name for name in _files(files) if name.endswith(".csr")]) == 2
    server.type("@CP:1 CertificateSigned")  # typed bare: the chain signed for that charger
    assert (
        _common_name(
            (await chargers["CP:1"].expect_call("CertificateSigned")).payload["certificateChain"]
        )
        == "CP:1"
    )
    for charger in chargers.values():
        await charger.close()


@charger_test
async def test_without_a_ca_only_a_csr_for_the_charger_is_saved(start_server, tmp_path):
    server = start_server("--no-boot-data", "--files-dir", str(tmp_path))
    charger = await _booted(server, "CP-1")
    good = _csr("CP-1")
    refused = [
        (_csr("CP-2"), r'the CSR\'s CN is "CP-2", not "CP-1", the charge point id of this '),
        (_csr_with_names(), r"the CSR's CN is missing, not \"CP-1\""),
        (_csr_with_names("CP-1", "CP-2"), r'the CSR\'s CN is "CP-1", "CP-2", not "CP-1"'),
        (good + _csr("CP-2"), r"the csr is not a PEM certificate request \(2 PEM certificate "),
        (good.replace("\n-----END", "AAAA\n-----END"), r"the csr is not a PEM certificate request"),
        (good + " " * 5500, r"the csr is not text of at most 5500 characters"),
    ]
    for csr, line in refused:
        mark = server.mark()
        assert (await charger.call("SignCertificate", {"csr": csr})).payload == REJECTED
        server.wait_for(
            rf"CP-1 !! SignCertificate: {line}.*; answered Rejected, nothing signed$", since=mark
        )
    assert _files(tmp_path) == []
    assert (await charger.call("SignCertificate", {"csr": good})).payload == ACCEPTED
    saved = server.wait_for(r"CP-1 \*\* SignCertificate: the CSR is saved in (\S+);")
    assert open(saved.group(1)).read() == good
    await charger.close()


@charger_test
async def test_saved_csrs_are_bounded(start_server, tmp_path, monkeypatch):
    monkeypatch.setattr(mock, "MAX_SAVED_CSRS", 3)
    server = start_server("--no-boot-data", "--files-dir", str(tmp_path))
    charger = await _booted(server, "CP-1")
    csr = _csr("CP-1")
    for _ in range(3):
        assert (await charger.call("SignCertificate", {"csr": csr})).payload == ACCEPTED
    assert (await charger.call("SignCertificate", {"csr": csr})).payload == REJECTED
    server.wait_for(
        r"CP-1 !! SignCertificate: this run has saved 3 CSRs, its bound; restart the "
        r"server for more; answered Rejected, nothing signed$"
    )
    names = _files(tmp_path)
    assert len(names) == 3
    assert all(re.fullmatch(r"CP-1-\d{8}-\d{6}-\d+\.csr", name) for name in names)
    await charger.close()
