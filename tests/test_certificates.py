"""Certificate signing and the security extension (OCPP 1.6 security whitepaper).

CertificateHashData against the cryptography package, the certificate commands against the demo
charger's store, SignCertificate with and without a CA, the CA flags, and an ``ocpp`` package
charge point taking every security command.
"""

import asyncio
import functools
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import websockets

import ocpp_mock_server as mock
from conftest import (
    DEMO_CHARGER,
    TIMEOUT,
    _certificate_authority,
    _csr,
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
    serial = certificate.serial_number.to_bytes(
        (certificate.serial_number.bit_length() + 7) // 8, "big"
    )
    assert mock.certificate_hash_data(mock.DEMO_CERTIFICATE) == {
        "hashAlgorithm": "SHA256",
        "issuerNameHash": hashlib.sha256(certificate.issuer.public_bytes()).hexdigest(),
        "issuerKeyHash": hashlib.sha256(key).hexdigest(),
        "serialNumber": serial.hex(),
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
    demo = subprocess.Popen(
        [sys.executable, str(DEMO_CHARGER), server.url + "/CP-1"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
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
        # GetLog bare: the log lands in the files folder, under the charger's name.
        server.type("GetLog")
        server.wait_for(r'CP-1 <- LogStatusNotification \{"status": "Uploaded", "requestId": 1\}')
        assert (
            tmp_path / "CP-1" / "demo-security.log"
        ).read_text() == "demo charger security log\n"
        server.type("ExtendedTriggerMessage requestedMessage=SignChargePointCertificate")
        server.wait_for(r'CP-1 <- SignCertificate \{"csr": "-----BEGIN CERTIFICATE REQUEST-----')
        server.wait_for(r'CP-1 -> SignCertificate\.conf \{"status":"Accepted"\}')
    finally:
        demo.terminate()
        demo.wait(TIMEOUT)


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


@pytest.mark.slow(3)
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
