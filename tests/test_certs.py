"""SignCertificate signs for the sender only (issue "Trust, round 3", items 1, 2 and the CSR half
of 4): the CSR's CN must be the charge point id of the connection that sent it, and under profile 3
the id its client certificate proved; with --ca-cert openssl verifies the CSR's signature before the
reply; CSR files cannot collide, so each chain goes back to its CSR's sender; saved CSRs are
bounded.
"""

import asyncio
import base64
import re
import shutil
import ssl

import pytest
import websockets
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

import ocpp_mock_server as mock
from conftest import (
    Charger,
    _certificate_authority,
    _csr,
    _signed_by,
    charger_test,
)

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
