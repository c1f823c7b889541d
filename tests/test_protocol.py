"""Protocol: OCPP-J framing, message ids and bad input.

Every malformed, off-shape or hostile frame a charger can send gets the answer OCPP-J calls for
(a CALLERROR, or nothing) and one log line, and the connection and every other charger go on:
the bad-input table, a seeded fuzz, lone surrogates, NaN and Infinity, nesting too deep, long
message ids, and how the operator sees a CALL's payload.
"""

import asyncio
import collections
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

import ocpp_mock_server as mock
from conftest import (
    LONG_ID,
    SERVER,
    SPEC_ERROR_CODES,
    TIMEOUT,
    Charger,
    _mutate,
    _text_reply,
    assert_valid,
    booted_charger,
    charger_test,
    run,
)


@charger_test
async def test_strict_mode_rejects_an_over_long_message_id(start_server):
    server = start_server("--strict", "--no-boot-data")

    charger = await Charger.connect(server.url)
    await charger.send_frame([2, LONG_ID, "Heartbeat", {}])
    assert (await charger.receive())[:3] == [4, LONG_ID, "FormationViolation"]
    await charger.close()


@charger_test
async def test_a_malformed_frame_on_one_connection_does_not_disturb_another(start_server):
    server = start_server("--no-boot-data")

    broken = await Charger.connect(server.url, "CP-BAD")
    good = await Charger.connect(server.url, "CP-GOOD")
    for frame in ["{", b"\xff\xfe", "[2]", '[2, "a", "Nope", {}]', "null", '[4, "q"]']:
        await broken.send_frame(frame)
        reply = await good.call("Heartbeat", {})
        assert reply[0] == 3
    await broken.close()
    await good.close()


# Each case: what the charger sends, the reply OCPP-J calls for (None: no
# reply), and the log line.  After each case the same connection and a
# second charger are still served.
BAD_INPUT = [
    # name, frame as sent, expected reply prefix, log line
    (
        "binary frame",
        b'[2,"b1","Heartbeat",{}]',
        [3, "b1"],
        r"sent a binary frame; OCPP-J uses text frames",
    ),
    ("binary, not UTF-8", b"\xff\xfe\x00", None, r"binary frame of 3 bytes ignored: not UTF-8"),
    ("invalid JSON", "[2, 'x', Heartbeat]", None, r"invalid JSON"),
    ("JSON nested too deeply", "[" * 30000, None, r"JSON nested too deeply to parse"),
    ("not an array", '{"messageTypeId": 2}', None, r"a frame must be a JSON array, got object"),
    ("a bare string", '"hello"', None, r"a frame must be a JSON array, got string"),
    ("empty array", "[]", None, r"empty array: no message type id"),
    (
        "unknown message type id",
        [7, "t1", "Heartbeat", {}],
        None,
        r"unknown message type id 7 \(OCPP-J 4\.1\.3\)",
    ),
    ("type id as a string", ["2", "t2", "Heartbeat", {}], None, r"unknown message type id \"2\""),
    ("type id as a float", [2.5, "t3", "Heartbeat", {}], None, r"unknown message type id 2\.5"),
    (
        "CALL without action and payload",
        [2, "c1"],
        [4, "c1", "ProtocolError"],
        r"CALL needs 4 elements",
    ),
    (
        "CALL without payload",
        [2, "c2", "Heartbeat"],
        [4, "c2", "ProtocolError"],
        r"CALL needs 4 elements",
    ),
    (
        "CALL with a fifth element",
        [2, "c3", "Heartbeat", {}, 1],
        [4, "c3", "FormationViolation"],
        r"CALL has 5 elements",
    ),
    (
        "action not a string",
        [2, "c4", 17, {}],
        [4, "c4", "FormationViolation"],
        r"action must be a non-empty",
    ),
    (
        "empty action",
        [2, "c5", "", {}],
        [4, "c5", "FormationViolation"],
        r"action must be a non-empty",
    ),
    (
        "payload an array",
        [2, "c6", "Heartbeat", []],
        [4, "c6", "FormationViolation"],
        r"payload of Heartbeat must be a JSON object, got array",
    ),
    (
        "payload a string",
        [2, "c7", "Heartbeat", "{}"],
        [4, "c7", "FormationViolation"],
        r"got string",
    ),
    ("payload null means {}", [2, "c8", "Heartbeat", None], [3, "c8"], r"CP-T -> Heartbeat\.conf"),
    (
        "id a number",
        [2, 4711, "Heartbeat", {}],
        [4, "4711", "FormationViolation"],
        r"message id must be a string, got number; answered FormationViolation",
    ),
    (
        "id an object",
        [2, {"id": 1}, "Heartbeat", {}],
        None,
        r"message id must be a string, got object; frame ignored",
    ),
    (
        "id over 36 characters",
        [2, LONG_ID, "Heartbeat", {}],
        [3, LONG_ID],
        r"spec: message id is 37 characters, OCPP-J allows 36",
    ),
    (
        "CALLRESULT for an id never sent",
        [3, "never", {}],
        None,
        r"reply to message id \"never\", which the server",
    ),
    (
        "CALLERROR for an id never sent",
        [4, "never2", "GenericError", "", {}],
        None,
        r"reply to message id \"never2\"",
    ),
    (
        "CALLERROR with details not an object",
        [4, "never3", "GenericError", "", "text"],
        None,
        r"reply to message id \"never3\"",
    ),
    ("CALLERROR too short", [4, "e1"], None, r"CALLERROR needs 5 elements"),
    (
        "unknown action",
        [2, "a1", "BrewCoffee", {}],
        [4, "a1", "NotImplemented"],
        r"unknown action BrewCoffee",
    ),
    (
        "misspelt action",
        [2, "a2", "Heartbeet", {}],
        [4, "a2", "NotImplemented"],
        r"did you mean Heartbeat\?",
    ),
    (
        "central-system action",
        [2, "a3", "RemoteStartTransaction", {"idTag": "1"}],
        [4, "a3", "NotSupported"],
        r"RemoteStartTransaction is sent by the central system",
    ),
    (
        "wrong field type (lenient)",
        [2, "l1", "Authorize", {"idTag": 42}],
        [3, "l1"],
        r"spec: Authorize\.idTag must be a string, got number 42 \(TypeConstraintViolation",
    ),
    (
        "missing required field (lenient)",
        [2, "l2", "Authorize", {}],
        [3, "l2"],
        r"spec: Authorize\.idTag is required but missing \(OccurenceConstraintViolation",
    ),
    (
        "extra field (lenient)",
        [2, "l3", "Heartbeat", {"now": 1}],
        [3, "l3"],
        r"spec: Heartbeat\.now is not a field of this message \(no fields allowed\) "
        r"\(FormationViolation",
    ),
    (
        "over-long string (lenient)",
        [2, "l4", "Authorize", {"idTag": "T" * 21}],
        [3, "l4"],
        r"spec: Authorize\.idTag is 21 characters long, the limit is 20 "
        r"\(PropertyConstraintViolation",
    ),
    (
        "unknown enum value (lenient)",
        [2, "l5", "DiagnosticsStatusNotification", {"status": "Done"}],
        [3, "l5"],
        r"spec: DiagnosticsStatusNotification\.status \"Done\" is not allowed \(one of Idle, "
        r"Uploaded, "
        r"UploadFailed, Uploading\) \(PropertyConstraintViolation",
    ),
    (
        "bad date-time (lenient)",
        [2, "l6", "SecurityEventNotification", {"type": "x", "timestamp": "today"}],
        [3, "l6"],
        r"spec: SecurityEventNotification\.timestamp must be an ISO-8601 date-time",
    ),
]


@pytest.mark.parametrize(
    "name, frame, expected, logged", BAD_INPUT, ids=[case[0] for case in BAD_INPUT]
)
@charger_test
async def test_bad_input_gets_the_ocpp_answer_and_a_log_line(
    table_server, name, frame, expected, logged
):
    server = table_server
    mark = server.mark()

    charger = await Charger.connect(server.url, "CP-T")
    witness = await Charger.connect(server.url, "CP-WITNESS")
    await charger.send_frame(frame)
    if expected is None:
        await charger.no_frame_within(0.2)
    else:
        reply = await charger.receive()
        assert reply[: len(expected)] == expected, reply
        if reply[0] == 4:
            assert len(reply) == 5 and reply[2] in mock.ERROR_CODES
            assert isinstance(reply[3], str) and isinstance(reply[4], dict)
    assert (await charger.call("Heartbeat", {}))[0] == 3  # the connection lives on
    assert (await witness.call("Heartbeat", {}))[0] == 3  # and so does everyone else
    await charger.close()
    await witness.close()

    server.wait_for(logged, since=mark)


@charger_test
async def test_a_callerror_with_details_not_an_object_is_reported(start_server):
    server = start_server()

    charger = await booted_charger(server)
    server.type("Reset")
    call = await charger.expect_call("Reset")
    await charger.send_frame([4, call.message_id, "InternalError", "oops", "not an object"])
    server.wait_for(r"CP-1 <- Reset CALLERROR InternalError oops \"not an object\"")
    server.wait_for(r"CP-1 !! spec: CALLERROR details must be an object, got string")
    assert (await charger.call("Heartbeat", {}))[0] == 3
    await charger.close()


@charger_test
async def test_a_duplicate_id_sent_before_the_first_is_answered_gets_one_reply_each(start_server):
    """The server answers CALLs in order, so a reused id is still matched unambiguously."""
    server = start_server("--no-boot-data")

    charger = await Charger.connect(server.url)
    await charger.send_frame([2, "dup", "Heartbeat", {}])
    await charger.send_frame([2, "dup", "Authorize", {"idTag": "A"}])
    first, second = await charger.receive(), await charger.receive()
    assert first[1] == second[1] == "dup"
    assert "currentTime" in first[2] and second[2] == {"idTagInfo": {"status": "Accepted"}}
    await charger.no_frame_within(0.2)
    await charger.close()

    server.wait_for(r"CP-1 !! spec: message id \"dup\" reused")


def test_fuzz_every_call_shaped_frame_gets_exactly_one_reply(start_server):
    seed = int(os.environ.get("FUZZ_SEED", "1625"))
    count = int(os.environ.get("FUZZ_FRAMES", "3000"))
    rng = __import__("random").Random(seed)
    server = start_server("--no-boot-data", "--quiet", "--call-timeout", "0.5")

    async def witness_heartbeats(stop):
        witness = await Charger.connect(server.url, "CP-WITNESS")
        answered = 0
        while not stop.is_set():
            assert (await witness.call("Heartbeat", {}))[0] == 3
            answered += 1
            await asyncio.sleep(0.01)
        await witness.close()
        return answered

    async def scenario():
        fuzzer = await Charger.connect(server.url, "CP-FUZZ")
        stop = asyncio.Event()
        witness = asyncio.ensure_future(witness_heartbeats(stop))
        expected = collections.Counter()
        deadline = time.monotonic() + 30
        for number in range(count):
            text, message_id = _mutate(rng, number)
            if message_id is not None:
                expected[message_id] += 1
            await fuzzer.send_frame(text)
            if time.monotonic() > deadline:
                break
        await fuzzer.send_frame([2, "fz-end", "Heartbeat", {}])
        replies = collections.Counter()
        while True:
            frame = await fuzzer.receive(timeout=10)
            if frame[0] in (3, 4):
                if frame[1] == "fz-end":
                    break
                replies[frame[1]] += 1
        stop.set()
        await fuzzer.close()
        return expected, replies, await witness

    expected, replies, witness_answered = run(scenario())
    assert sum(expected.values()) > 1000
    assert replies == expected, f"seed {seed}: {((replies - expected) + (expected - replies))}"
    # Served beside the fuzzer (how many Heartbeats fit depends on the machine's speed;
    # fairness itself is test_a_busy_charger_yields_to_the_others_by_time).
    assert witness_answered >= 1
    output = server.settled_output()
    assert " ERROR " not in output and "internal error" not in output, f"seed {seed}:\n{output}"


@pytest.mark.parametrize(
    "text, shown",
    [
        ('[2,"a","Heartbeat",{}]', "{}"),
        # Json.dumps' default: shown as the charger wrote it.
        (
            '[2, "a", "Heartbeat", {"x": 1}]',
            '{"x": 1}',
        ),
        ('[2, "a", "Heartbeat", {"x": [1, {"y": "]"}]} ]', '{"x": [1, {"y": "]"}]}'),
        ('[2,"id, \\"{x",  "Heartbeat",{"k":1}]', '{"k":1}'),  # an unusual layout: serialized again
        ('[2,"a","Heartbeat",null]', "null"),
    ],
)
def test_the_operator_sees_a_calls_payload_as_sent(text, shown):
    assert mock.call_payload_text(text, mock.parse_frame(text)) == shown


# Item 1: text that cannot be encoded.
@charger_test
async def test_lone_surrogates_get_their_answer_and_cost_no_connection_line_or_transcript(
    in_process, tmp_path
):
    log = tmp_path / "session.jsonl"
    server = in_process("--no-boot-data", "--log", str(log))

    charger = await Charger.connect(server.url, "CP-S")
    other = await Charger.connect(server.url, "CP-O")
    reply = await _text_reply(charger, '[2,"\\ud800","Heartbeat",{}]', "\ud800")
    assert reply[0] == 3 and reply[1] == "\ud800"
    reply = await _text_reply(charger, '[2,"s2","Heart\\udfffbeat",{}]', "s2")
    assert reply[:3] == [4, "s2", "NotImplemented"]
    reply = await _text_reply(charger, '[2,"s3","Authorize",{"idTag":"\\ud800x"}]', "s3")
    assert reply[:2] == [3, "s3"]
    assert_valid("AuthorizeResponse", reply[2])
    reply = await _text_reply(
        charger, '[2,"s4","DataTransfer",{"vendorId":"\\udbff","data":"\\udc00"}]', "s4"
    )
    assert reply[:2] == [3, "s4"]
    assert (await other.call("Heartbeat", {}))[0] == 3  # the other charger, in the same loop turns
    server.type('@CP-S DataTransfer {"vendorId":"\\ud800"}')
    call = await charger.expect_call("DataTransfer")
    assert call.payload == {"vendorId": "\ud800"}
    await charger.answer(call, {"status": "Accepted"})
    assert (await charger.call("Heartbeat", {}))[0] == 3  # the connection stayed
    await charger.close()
    await other.close()

    server.wait_for(r"CP-S <- DataTransfer\.conf")
    text = server.settled_output()
    assert r"CP-S -> Heartbeat.conf" in text and r"CP-O -> Heartbeat.conf" in text
    assert r"\ud800" in text and r"Heart\udfffbeat" in text  # shown escaped, not dropped
    server.stop()
    records = [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines()]
    frames = [record for record in records if record.get("charger") == "CP-S" and "dir" in record]
    assert len([r for r in frames if r["dir"] == "in"]) == 6  # 5 CALLs and one reply
    assert len([r for r in frames if r["dir"] == "out"]) == 6  # 5 replies and one CALL
    assert any(
        json.loads(record["frame"])[1] == "\ud800" for record in frames if record["dir"] == "out"
    )


# Item 4: bounded memory per connection.
@charger_test
async def test_long_unique_message_ids_are_remembered_as_digests(in_process):
    server = in_process("--no-boot-data", "--quiet")

    charger = await Charger.connect(server.url, "CP-IDS")
    for number in range(50):
        message_id = f"{number:05d}" + "x" * 60000
        # A DataTransfer frame is larger than its answer (an answer is never larger than its frame).
        await charger.send_frame([2, message_id, "DataTransfer", {"vendorId": "v"}])
        assert (await charger.reply_to(message_id))[0] == 3
    session = server.system.sessions["CP-IDS"]
    assert sum(len(kept) for kept in session.call_ids.recent) < 50 * 100
    await charger.close()


# Item 9: strict JSON.
@pytest.mark.parametrize("number", ["NaN", "Infinity", "-Infinity", "1e999"])
@charger_test
async def test_nan_and_infinity_are_a_formation_violation_and_never_written(
    in_process, tmp_path, number
):
    log = tmp_path / "strict.jsonl"
    server = in_process("--no-boot-data", "--log", str(log))

    charger = await Charger.connect(server.url, "CP-NAN")
    reply = await _text_reply(
        charger, f'[2,"n1","DataTransfer",{{"vendorId":"v","data":{number}}}]', "n1"
    )
    assert reply[:3] == [4, "n1", "FormationViolation"]
    server.type(f'DataTransfer {{"vendorId":"v","data":{number}}}')
    server.wait_for(
        r">> DataTransfer: the JSON payload does not parse: .*not JSON|too large for a double"
    )
    server.type(f"DataTransfer data={number}")  # a string field: sent as the text it is
    call = await charger.expect_call("DataTransfer")
    assert call.payload["data"] == number
    await charger.answer(call, {"status": "Accepted"})
    await charger.close()

    server.stop()

    def refuse(name):
        raise AssertionError(f"{name} written to the transcript")

    for line in log.read_text().splitlines():
        json.loads(line, parse_constant=refuse)


@charger_test
async def test_nesting_too_deep_to_serialise_again_still_gets_a_reply(in_process):
    """Every depth up to where parsing fails: parsed means answered, even where showing it again
    fails."""
    server = in_process("--no-boot-data", "--quiet")

    charger = await Charger.connect(server.url, "CP-DEEP")
    answered = 0
    for depth in range(500, 1200):
        message_id = f"deep{depth}"
        since = server.mark()
        await charger.send_frame(
            '[2,"{}","DataTransfer",{{"vendorId":"v","data":{}{}}}]'.format(
                message_id, "[" * depth, "]" * depth
            )
        )
        await charger.send_frame([2, f"after{depth}", "Heartbeat", {}])  # replies come in order
        replies = await charger.replies_until(f"after{depth}")
        if len(replies) == 2:
            assert replies[0][0] == 3 or replies[0][2] in SPEC_ERROR_CODES, replies[0]
            answered += 1
        else:  # nested too deeply to parse: no id to answer, and one log line (see BAD_INPUT)
            server.wait_for(r"CP-DEEP !! JSON nested too deeply to parse; frame ignored", since)
            break
    assert answered >= 100
    await charger.close()


# -------------------- hostile frames
# Protocol-level bad input: invisible characters never reach the terminal raw, no answer is larger
# than what it answers, every parsed frame keeps its line, non-string message ids follow one rule,
# and a websockets too old to serve is one line (issue "Trust, round 3", items 11, 12, 13 and 17).


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


@pytest.mark.slow(2)
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


@pytest.mark.slow(1.5)
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


# ------------------------------------------------------------- OCPP-J 2.0.1's RPC rules


@charger_test
async def test_a_201_station_gets_the_201_rpc_errors(start_server):
    server = start_server("--no-boot-data")
    station = await Charger.connect(server.url, "CS-1", subprotocols=("ocpp2.0.1",))
    await station.send_frame("not json")
    not_json = await station.receive()
    assert not_json[:3] == [4, "-1", "RpcFrameworkError"] and not_json[4] == {}, not_json
    await station.send_frame([5, "m7", "Heartbeat", {}])
    unknown_type = await station.receive()
    assert unknown_type[:3] == [4, "m7", "MessageTypeNotSupported"], unknown_type
    await station.send_frame([9])
    no_id = await station.receive()
    assert no_id[:3] == [4, "-1", "MessageTypeNotSupported"], no_id
    await station.send_frame([])
    unreadable = await station.receive()
    assert unreadable[:3] == [4, "-1", "RpcFrameworkError"], unreadable
    await station.send_frame([2, 5, "Heartbeat", {}])
    number_id = await station.receive()
    assert number_id[:3] == [4, "5", "FormatViolation"], number_id
    assert len(number_id[3]) <= 255
    await station.close()

    legacy = await Charger.connect(server.url, "CP-1", subprotocols=("ocpp1.6",))
    await legacy.send_frame([5, "m7", "Heartbeat", {}])
    await legacy.send_frame([2, 5, "Heartbeat", {}])
    assert (await legacy.receive())[:3] == [4, "5", "FormationViolation"]  # 1.6 ignores type 5
    await legacy.close()


@charger_test
async def test_a_201_station_answering_with_a_16_spelling_gets_a_warning_not_a_broken_session(
        start_server):
    server = start_server("--no-boot-data")
    station = await Charger.connect(server.url, "CS-1", subprotocols=("ocpp2.0.1",))
    server.wait_for(r"CS-1 \*\* connected from 127\.0\.0\.1:\d+ \(OCPP 2\.0\.1\)")
    server.type("raw [2,\"r1\",\"ClearCache\",{}]")
    call = await station.expect_call("ClearCache")
    await station.send_frame([4, call[1], "FormationViolation", "old spelling", {}])
    server.wait_for(r"CS-1 !! spec: CALLERROR code FormationViolation is the old spelling; "
                    r"OCPP 2\.0\.1 calls it FormatViolation")
    server.type("raw [2,\"r2\",\"ClearCache\",{}]")
    call = await station.expect_call("ClearCache")
    await station.send_frame([3, call[1], {"status": "Accepted"}])
    server.wait_for(r"CS-1 <- ClearCache\.conf")
    await station.close()


@charger_test
async def test_a_201_stations_lenient_spec_warnings_spell_the_codes_the_201_way(start_server):
    server = start_server("--no-boot-data")
    station = await Charger.connect(server.url, "CS-1", subprotocols=("ocpp2.0.1",))
    reply = await station.call("Heartbeat", {"extra": 1})
    assert reply[0] == 3 and "currentTime" in reply[2]  # lenient: answered
    server.wait_for(r"CS-1 !! spec: Heartbeat\.extra is not a field of this message .*"
                    r"\(FormatViolation; answered anyway")
    await station.close()
