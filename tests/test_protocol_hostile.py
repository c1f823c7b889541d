"""Protocol-level bad input: invisible characters never reach the terminal raw, no answer is larger
than what it answers, every parsed frame keeps its line, non-string message ids follow one rule, and
a websockets too old to serve is one line (issue "Trust, round 3", items 11, 12, 13 and 17)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import SERVER, TIMEOUT, Charger, charger_test

ROOT = Path(SERVER).resolve().parent

# One character of each class the server escapes, and the escape it shows.
INVISIBLE = [
    pytest.param("\u061c", "\\u061c", id="bidi-control-arabic-letter-mark"),
    pytest.param("\u202e", "\\u202e", id="bidi-control-override"),
    pytest.param("\u2066", "\\u2066", id="bidi-control-isolate"),
    pytest.param("\u200e", "\\u200e", id="bidi-control-mark"),
    pytest.param("\u00ad", "\\u00ad", id="format-soft-hyphen"),
    pytest.param("\u2060", "\\u2060", id="format-word-joiner"),
    pytest.param("\ufeff", "\\ufeff", id="format-byte-order-mark"),
    pytest.param("\u0890", "\\u0890", id="format-newer-than-python-3.9"),
    pytest.param("\U000e0001", "\\U000e0001", id="format-astral-language-tag"),
    pytest.param("\u2028", "\\u2028", id="line-separator"),
    pytest.param("\u2029", "\\u2029", id="paragraph-separator"),
]
# What stays as it is: ordinary spaces and the emoji joiner.
KEPT = ["\u00a0", "\u200d", "\U0001f469\u200d\U0001f4bb", "\u3000"]


@pytest.mark.parametrize("character, escape", INVISIBLE)
@charger_test
async def test_every_invisible_character_is_escaped(start_server, character, escape):  # noqa: F811
    server = start_server("--no-boot-data")
    charger = await Charger.connect(server.url, "CP-1")
    payload = {"vendorId": "v" + character + "v"}
    await charger.send_frame(json.dumps([2, "1", "DataTransfer", payload], ensure_ascii=False))
    await charger.close()
    server.wait_for("disconnected")
    output = server.settled_output()
    assert character not in output
    assert "v" + escape + "v" in output


@charger_test
async def test_ordinary_spaces_and_the_emoji_joiner_are_kept(start_server):  # noqa: F811
    server = start_server("--no-boot-data")
    charger = await Charger.connect(server.url, "CP-1")
    for number, text in enumerate(KEPT):
        payload = {"vendorId": "<" + text + ">"}
        await charger.send_frame(
            json.dumps([2, str(number), "DataTransfer", payload], ensure_ascii=False)
        )
        assert (await charger.receive())[:2] == [3, str(number)]
    await charger.close()
    server.wait_for("disconnected")
    output = server.settled_output()
    for text in KEPT:
        assert "<" + text + ">" in output


@pytest.mark.parametrize("python", ["3.9", "3.11", "3.13"])
def test_the_invisible_table_holds_what_each_pythons_unicode_data_says(python):
    """The table is generated from one Unicode version; every Python here finds its own Cf, Zl and
    Zp characters and the Bidi_Control set in it (and the newest finds it exactly)."""
    candidates = sorted(Path("/root/.pyenv/versions").glob(python + ".*/bin/python" + python))
    executable = (
        str(candidates[-1])
        if candidates
        else (sys.executable if sys.version.startswith(python + ".") else None)
    )
    if executable is None:
        pytest.skip(f"no Python {python} on this machine")
    script = ROOT / "scripts" / "invisible_characters.py"
    result = subprocess.run(
        [executable, str(script), "--check"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


def _frame_sizes(frame: str) -> int:
    return len(frame.encode("utf-8"))


HUGE = "x" * 65000
ACCENTS = "\u00e9" * 30000
AMPLIFIERS = [
    pytest.param(f'[2,"1",{json.dumps(HUGE)},{{}}]', id="unknown-action-echoed-in-description"),
    pytest.param(f'[2,{json.dumps(HUGE)},"Heartbeat",{{}}]', id="message-id-echoed-in-the-result"),
    pytest.param(f'[2,{json.dumps(HUGE)},"Nope",{{}}]', id="message-id-echoed-in-the-error"),
    pytest.param(f'[2,"1","Heartbeat",{{{json.dumps(HUGE)}:1}}]', id="unknown-field"),
    pytest.param(f'[2,{("9" * 4000)},"Heartbeat",{{}}]', id="long-numeric-id"),
    pytest.param(
        f'[2,"1","Authorize",{{"idTag":{json.dumps(ACCENTS, ensure_ascii=False)}}}]', id="non-ascii"
    ),
    pytest.param(
        f'[2,{json.dumps(ACCENTS, ensure_ascii=False)},"Heartbeat",{{}}]', id="non-ascii-message-id"
    ),
]


@pytest.mark.parametrize("strict", [False, True], ids=["lenient", "strict"])
@pytest.mark.parametrize("frame", AMPLIFIERS)
@charger_test
async def test_no_answer_is_larger_than_the_frame_it_answers(start_server, frame, strict):  # noqa: F811
    server = start_server("--no-boot-data", *(["--strict"] if strict else []))
    charger = await Charger.connect(server.url, "CP-1")
    await charger.send_frame(frame)
    await charger.send_frame('[2,"witness","Heartbeat",{}]')  # answers to the frame come first
    answers = []
    while True:
        answer = await charger.receive()
        if answer[1] == "witness":
            break
        answers.append(answer)
    await charger.close()
    for answer in answers:
        size = _frame_sizes(json.dumps(answer, separators=(",", ":"), ensure_ascii=False))
        assert size <= max(1024, _frame_sizes(frame)), (size, answer[:1], str(answer)[:200])
        if answer[0] == 4:
            assert len(answer[3]) <= 255
            assert HUGE[:300] not in json.dumps(answer[4])
    if not answers:
        server.wait_for(r"not sent: its \d+ bytes would answer a frame of \d+ bytes")


@charger_test
async def test_error_descriptions_are_at_most_255_characters(start_server):  # noqa: F811
    server = start_server("--no-boot-data", "--strict")
    charger = await Charger.connect(server.url, "CP-1")
    await charger.send_frame(f'[2,"1","Authorize",{{"{("k" * 900)}":"t"}}]')
    answer = await charger.receive()
    await charger.close()
    assert answer[0] == 4 and answer[1] == "1"
    assert 0 < len(answer[3]) <= 255 and answer[4] == {}


@pytest.mark.parametrize(
    "message_id, shown",
    [("1", "1"), ("1.5", "1.5"), ("-7", "-7"), ("1e3", "1000.0"), ("9" * 300, "9" * 300)],
)
@charger_test
async def test_a_number_as_message_id_gets_formation_violation(start_server, message_id, shown):  # noqa: F811
    server = start_server("--no-boot-data")
    charger = await Charger.connect(server.url, "CP-1")
    await charger.send_frame(f'[2,{message_id},"Heartbeat",{{}}]')
    answer = await charger.receive()
    await charger.close()
    assert answer[:3] == [4, shown, "FormationViolation"]


@pytest.mark.parametrize(
    "prefix",
    ['[2,"d%d","DataTransfer",', '[2 , "d%d" ,"DataTransfer",', '[2,"\\u0064%d","DataTransfer",'],
)
@charger_test
async def test_every_parsed_frame_keeps_its_line_however_deep(start_server, prefix):  # noqa: F811
    """Up to the deepest frame the parser takes (it depends on the stack), each answered frame has
    its line; deeper ones are bad frames, with theirs."""
    server = start_server("--no-boot-data")
    charger = await Charger.connect(server.url, "CP-1")
    answered = []
    for depth in range(940, 1000, 4):
        nested = "[" * depth + "]" * depth
        await charger.send_frame(prefix % depth + '{"vendorId":"v","data":' + nested + "}]")
        await charger.send_frame('[2,"witness","Heartbeat",{}]')
        while True:
            answer = await charger.receive()
            if answer[1] == "witness":
                break
            assert answer == [3, f"d{depth}", {"status": "Accepted"}]
            answered.append(depth)
    await charger.close()
    server.wait_for("disconnected")
    output = server.settled_output()
    assert "failed" not in output and "RecursionError" not in output
    assert max(answered) >= 960, answered
    assert output.count("<- DataTransfer") == len(answered)
    assert output.count("-> DataTransfer.conf") == len(answered)
    assert output.count("<- (bad frame)") == 15 - len(answered)


def test_a_websockets_too_old_to_serve_is_one_line(tmp_path):
    """websockets 8.1 (Debian 11's) has no websockets.legacy: the version is checked first."""
    package = tmp_path / "websockets"
    package.mkdir()
    (package / "__init__.py").write_text('__version__ = "8.1"\n')  # what 8.1 has of the API we need
    result = subprocess.run(
        [sys.executable, str(SERVER), "--port", "0"],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=TIMEOUT * 6,
        env={"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        "ocpp_mock_server: websockets 8.1 is installed; this server needs websockets 10.3 or "
        "newer: pip install -U websockets"
    ]
