"""The file server: a folder and a working URL for every charge point id, a quota that holds under
parallel uploads, and file-system edge cases answered with a 4xx (issue 19, items 3, 4 and 14)."""

import asyncio
import urllib.parse
from pathlib import Path

import pytest

from conftest import (
    TIMEOUT,
    Charger,
    charger_test,
    http,
    http_port,
    http_sync,
)

HOSTILE_IDS = [
    "00:1A:2B:3C:4D:5E",
    "site/CP-7",
    ".CP-hidden",
    "CP\\9",
    "C" * 300,
    "..",
    "CON",
    "Ladesäule-1",
    "CP 1",
]


async def connected(server, charger_id: str) -> Charger:
    """A booted charger whose id is sent percent-encoded, as a charger with such an id must."""
    charger = await Charger.connect(server.url, urllib.parse.quote(charger_id, safe=""))
    await charger.boot()
    return charger


async def sent_default(server, charger: Charger, charger_id: str, action: str) -> dict:
    """``action`` sent with its defaults through the API (as typed bare): the charger's payload."""
    path = f"/api/chargers/{urllib.parse.quote(charger_id, safe='')}/{action}"
    reply = asyncio.ensure_future(http(server, "POST", path, {}))
    call = await charger.expect_call(action)
    await charger.answer(call, {"status": "Accepted"} if action == "GetLog" else {})
    assert (await reply).status == 200
    return call.payload


def path_of(location: str) -> str:
    return urllib.parse.urlsplit(location).path


@charger_test
async def test_every_charger_id_gets_a_folder_its_upload_reaches(start_server, tmp_path):
    server = start_server("--files-dir", str(tmp_path))
    folders = {}
    for charger_id in HOSTILE_IDS:
        charger = await connected(server, charger_id)
        location = (await sent_default(server, charger, charger_id, "GetDiagnostics"))["location"]
        content = b"log of " + location.encode()
        stored = await http(server, "PUT", path_of(location) + "diag.txt", data=content)
        assert stored.status == 201, (charger_id, location, stored)
        folder = stored.json["name"].split("/")[0]
        assert (tmp_path / folder / "diag.txt").read_bytes() == content
        assert "~" in folder and len(folder.encode()) <= 64 and not folder.startswith(".")
        record = await http(
            server, "GET", "/api/chargers/" + urllib.parse.quote(charger_id, safe="")
        )
        assert record.json["filesFolder"] == folder
        firmware = (await sent_default(server, charger, charger_id, "UpdateFirmware"))["location"]
        assert path_of(firmware) == path_of(location) + "firmware.bin"
        folders[charger_id] = folder
        await charger.close()
    assert len(set(folders.values())) == len(HOSTILE_IDS)
    server.wait_for(r"file server: received .*diag\.txt")
    assert "ERROR" not in server.output()


@charger_test
async def test_get_diagnostics_typed_bare_names_a_url_a_mac_address_id_can_upload_to(
    start_server, tmp_path
):
    server = start_server("--files-dir", str(tmp_path))
    charger = await connected(server, "00:1A:2B:3C:4D:5E")
    server.type("GetDiagnostics")
    call = await charger.expect_call("GetDiagnostics")
    await charger.answer(call, {"fileName": "diag.zip"})
    location = call.payload["location"]
    assert path_of(location).startswith("/files/00_1A_2B_3C_4D_5E~"), location
    assert (
        await http(
            server,
            "POST",
            path_of(location),
            data=b"zip",
            headers={"Content-Disposition": 'attachment; filename="diag.zip"'},
        )
    ).status == 201
    assert [path.name for path in tmp_path.rglob("diag.zip")] == ["diag.zip"]
    await charger.close()


@charger_test
async def test_a_safe_id_keeps_its_name_and_case_twins_never_share_a_folder(start_server, tmp_path):
    server = start_server("--files-dir", str(tmp_path))
    upper, lower = await connected(server, "CP-a"), await connected(server, "cp-A")
    first = (await sent_default(server, upper, "CP-a", "GetDiagnostics"))["location"]
    second = (await sent_default(server, lower, "cp-A", "GetDiagnostics"))["location"]
    assert path_of(first) == "/files/CP-a/"  # api.md's <files-dir>/<charge point id>/ holds for it
    assert path_of(second).startswith("/files/cp-A~") and path_of(second).lower() != "/files/cp-a/"
    for location, body in ((first, b"upper"), (second, b"lower")):
        assert (await http(server, "PUT", path_of(location) + "d.txt", data=body)).status == 201
    assert (tmp_path / "CP-a" / "d.txt").read_bytes() == b"upper"
    chargers = (await http(server, "GET", "/api/chargers")).json["chargers"]
    assert {record["id"]: record["filesFolder"] for record in chargers} == {
        "CP-a": "CP-a",
        "cp-A": path_of(second).split("/")[2],
    }
    mark = server.mark()
    server.type("chargers")
    server.wait_for(rf"   files: {tmp_path}/CP-a/$", since=mark)
    server.wait_for(rf"   files: {tmp_path}/cp-A~[0-9a-f]{{12}}/$", since=mark)
    await upper.close()
    await lower.close()


@charger_test
async def test_a_name_already_taken_in_the_files_folder_is_not_shared(start_server, tmp_path):
    (tmp_path / "cp-9").mkdir()  # a case-insensitive file system would make CP-9 this folder
    (tmp_path / "notes.txt").write_text("a file, not a folder")
    server = start_server("--files-dir", str(tmp_path))
    for charger_id in ("CP-9", "notes.txt"):
        charger = await connected(server, charger_id)
        location = (await sent_default(server, charger, charger_id, "GetDiagnostics"))["location"]
        assert path_of(location).startswith(f"/files/{charger_id}~"), location
        stored = await http(server, "PUT", path_of(location) + "d.txt", data=b"diag")
        assert stored.status == 201, stored
        await charger.close()


async def parallel_uploads(server, count: int, size: int):
    async def one(number):
        return await http(server, "PUT", f"/files/CP-1/diag-{number}.bin", data=b"d" * size)

    return await asyncio.gather(*(one(number) for number in range(count)))


@charger_test
async def test_parallel_uploads_never_pass_the_quota(start_server, tmp_path):
    quota, size = 300 * 1024, 90 * 1024
    server = start_server("--files-dir", str(tmp_path), "--files-quota", "300K")
    replies = await parallel_uploads(server, 8, size)
    statuses = sorted(reply.status for reply in replies)
    assert statuses == [201] * 3 + [507] * 5, replies
    assert all("quota" in reply.json["error"] for reply in replies if reply.status == 507)
    stored = sum(path.stat().st_size for path in tmp_path.rglob("*") if path.is_file())
    assert stored == 3 * size <= quota
    # The refused ones gave their room back: what still fits is accepted.
    room = quota - stored
    assert (await http(server, "PUT", "/files/CP-1/last.bin", data=b"x" * room)).status == 201
    assert (await http(server, "PUT", "/files/CP-1/over.bin", data=b"x")).status == 507


@charger_test
async def test_a_chunked_upload_gets_507_mid_stream(start_server, tmp_path):
    server = start_server("--files-dir", str(tmp_path), "--files-quota", "100K")
    assert (await http(server, "PUT", "/files/CP-1/a.bin", data=b"a" * 60 * 1024)).status == 201
    port = http_port(server)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    chunk = b"c" * 16 * 1024
    writer.write(
        b"PUT /files/CP-1/b.bin HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n" % port
    )
    writer.write((b"%x\r\n%s\r\n" % (len(chunk), chunk)) * 2 + b"%x\r\n" % len(chunk))
    # The body is not finished (its third chunk is announced, not sent): the answer comes anyway.
    answer = await asyncio.wait_for(reader.read(), TIMEOUT)
    writer.close()
    assert answer.startswith(b"HTTP/1.1 507 "), answer
    assert sorted(path.name for path in tmp_path.rglob("*")) == ["CP-1", "a.bin"]
    assert (await http(server, "PUT", "/files/CP-1/c.bin", data=b"x" * 40 * 1024)).status == 201


@charger_test
async def test_an_upload_cut_short_gives_its_room_back(start_server, tmp_path):
    server = start_server("--files-dir", str(tmp_path), "--files-quota", "100K")
    port = http_port(server)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        b"PUT /files/cut.bin HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nContent-Length: %d\r\n\r\n"
        % (port, 90 * 1024)
        + b"x" * 1024
    )
    await writer.drain()
    mark = server.mark()
    writer.close()
    await writer.wait_closed()
    server.wait_for(r"upload cut\.bin from .* refused: the body ended early", since=mark)
    assert (await http(server, "PUT", "/files/whole.bin", data=b"x" * 90 * 1024)).status == 201


EDGE_CASES = [
    ("PUT", "/files/" + urllib.parse.quote("é" * 200), 400),  # 400 bytes: over a name's 255
    ("GET", "/files/" + urllib.parse.quote("é" * 200), 400),
    ("PUT", "/files/CP-1", 409),  # a folder
    ("PUT", "/files/notes.txt/x.bin", 409),  # a file as a folder
    ("PUT", "/files/notes.txt/", 409),
    ("PUT", "/files/CP-1/" + urllib.parse.quote("é" * 200) + "/x.bin", 400),
]


@pytest.mark.parametrize("method, path, status", EDGE_CASES)
def test_file_system_edge_cases_are_a_4xx_and_no_error_line(
    start_server, tmp_path, method, path, status
):
    server = start_server("--files-dir", str(tmp_path))
    assert http_sync(server, "PUT", "/files/CP-1/diag.txt", data=b"diag").status == 201
    assert http_sync(server, "PUT", "/files/notes.txt", data=b"notes").status == 201
    before = sorted(str(path) for path in tmp_path.rglob("*"))
    reply = http_sync(server, method, path, data=b"payload" if method == "PUT" else None)
    assert reply.status == status and reply.json["error"], reply
    assert sorted(str(path) for path in tmp_path.rglob("*")) == before
    assert "ERROR" not in server.settled_output()


def test_a_sender_file_name_over_the_byte_limit_is_cut_to_fit(start_server, tmp_path):
    server = start_server("--files-dir", str(tmp_path))
    boundary = "b0undary"
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
        f'filename="{"é" * 200}.log"\r\n\r\nlog\r\n--{boundary}--\r\n'
    ).encode()
    reply = http_sync(
        server,
        "POST",
        "/files/CP-1/",
        data=body,
        headers={"Content-Type": "multipart/form-data; boundary=" + boundary},
    )
    assert reply.status == 201 and reply.json["name"] == "CP-1/" + "é" * 100, reply
    assert (tmp_path / "CP-1" / ("é" * 100)).read_bytes() == b"log"


@pytest.mark.parametrize(
    "path, status",
    [
        ("/files/", 200),
        ("/files/CP-1/missing.bin", 404),
        ("/files/CP-1/diag.txt", 200),
        ("/files/.x", 400),
        ("/api/chargers", 405),
    ],
)
def test_head_answers_carry_no_body(start_server, tmp_path, path, status):
    server = start_server("--files-dir", str(tmp_path))
    assert http_sync(server, "PUT", "/files/CP-1/diag.txt", data=b"diag").status == 201
    reply = http_sync(server, "HEAD", path)
    assert reply.status == status and reply.body == b"", reply
    assert int(reply.headers["content-length"]) > 0  # what a GET would have carried


@pytest.mark.parametrize(
    "args, headers, status",
    [
        (("--files-quota", "1K"), {}, 507),
        (("--max-upload-size", "1K"), {}, 413),
        ((), {"Content-Type": "multipart/form-data; boundary=b"}, 400),
    ],
)  # no file part in it
def test_a_refused_upload_leaves_no_folder(start_server, tmp_path, args, headers, status):
    server = start_server("--files-dir", str(tmp_path), *args)
    reply = http_sync(server, "PUT", "/files/CP-new/deep/", data=b"x" * 2048, headers=headers)
    assert reply.status == status, reply
    assert list(tmp_path.iterdir()) == []


def test_the_exit_line_says_files_are_kept_only_when_some_are(start_server):
    server = start_server()
    folder = Path(server.wait_for(r"files: (\S+)").group(1))
    assert http_sync(server, "PUT", "/files/CP-1/x.bin", data=b"x").status == 201
    (folder / "CP-1" / "x.bin").unlink()  # only an empty folder is left
    assert server.stop() == 0
    assert "kept in" not in server.output() and not folder.exists()
    kept = start_server()
    folder = Path(kept.wait_for(r"files: (\S+)").group(1))
    assert http_sync(kept, "PUT", "/files/CP-1/x.bin", data=b"x").status == 201
    assert kept.stop() == 0
    assert f"1 uploaded file is kept in {folder}" in kept.output()
    assert (folder / "CP-1" / "x.bin").read_bytes() == b"x"
    (folder / "CP-1" / "x.bin").unlink()
    (folder / "CP-1").rmdir()
    folder.rmdir()
