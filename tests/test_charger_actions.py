"""Charger-initiated actions: the handler dictionary and the authorization rules.

Every handler's reply is valid by the official schema in both dialects, BootNotification and the
FlexiCharge BootData handshake follow the flags, transactions get increasing ids, a real FlexiCharge
charger's frames are all answered, authorization rules and tags files decide idTagInfo, and no
value in any field gets an InternalError.
"""

import asyncio
import itertools
import json
import os
import subprocess

import pytest

import ocpp_mock_server as mock
from conftest import (
    CHARGER_REQUEST_SAMPLES,
    NOW,
    SPEC_ERROR_CODES,
    Charger,
    InProcessServer,
    LoopThread,
    _paths,
    _replaced,
    assert_valid,
    charger_test,
    flexicharge_frames,
    read_transcript,
    schema_problems,
    server_command,
)


@charger_test
async def test_every_handler_reply_is_valid_by_the_official_schema(start_server):
    server = start_server("--no-boot-data")

    charger = await Charger.connect(server.url)
    for action, payload in CHARGER_REQUEST_SAMPLES.items():
        reply = await charger.call(action, payload)
        assert reply[0] == 3 and len(reply) == 3, reply
        assert_valid(action + "Response", reply[2])
    await charger.close()


@charger_test
async def test_every_handler_reply_is_valid_in_the_flexicharge_dialect(start_server):
    server = start_server("--dialect", "flexicharge", "--no-boot-data")

    charger = await Charger.connect(server.url)
    for action, payload in CHARGER_REQUEST_SAMPLES.items():
        reply = await charger.call(action, payload)
        assert reply[0] == 3 and reply[2] == action and len(reply) == 4, reply
        assert_valid(action + "Response", reply[3])
    await charger.close()


@charger_test
async def test_boot_notification_conf_reflects_the_flags(start_server):
    server = start_server("--boot-status", "Pending", "--heartbeat-interval", "17")

    charger = await Charger.connect(server.url)
    reply = await charger.call("BootNotification", CHARGER_REQUEST_SAMPLES["BootNotification"])
    assert reply.payload["status"] == "Pending" and reply.payload["interval"] == 17
    assert reply.payload["currentTime"].endswith("Z")
    assert_valid("BootNotificationResponse", reply[2])
    await charger.no_frame_within(0.5)  # no BootData before the charger is Accepted
    await charger.close()


@charger_test
async def test_transaction_ids_increase_and_stop_answers_id_tag_info(start_server):
    server = start_server("--no-boot-data")

    charger = await Charger.connect(server.url)
    start = CHARGER_REQUEST_SAMPLES["StartTransaction"]
    first = (await charger.call("StartTransaction", start)).payload["transactionId"]
    stop = await charger.call(
        "StopTransaction", dict(CHARGER_REQUEST_SAMPLES["StopTransaction"], transactionId=first)
    )
    assert stop[2] == {"idTagInfo": {"status": "Accepted"}}
    second = (await charger.call("StartTransaction", start)).payload["transactionId"]
    assert isinstance(first, int) and second > first
    without_tag = await charger.call(
        "StopTransaction", {"transactionId": second, "meterStop": 1, "timestamp": NOW}
    )
    assert without_tag[2] == {}
    await charger.close()


@charger_test
async def test_boot_data_handshake(start_server):
    server = start_server("--flexicharge-id", "4242", "--charging-price", "3.10")

    charger = await Charger.connect(server.url)
    await charger.call("BootNotification", CHARGER_REQUEST_SAMPLES["BootNotification"])
    call = await charger.expect_call("DataTransfer")
    assert_valid("DataTransfer", call.payload)
    assert len(call.message_id) <= 36
    assert call.payload["vendorId"] == "com.flexicharge" and call.payload["messageId"] == "BootData"
    data = json.loads(call.payload["data"])
    assert data == {"chargerId": 4242, "connectorID": 4242, "chargingPrice": "3.10"}
    await charger.answer(call, {"status": "Accepted"})
    server.wait_for(r"CP-1 <- DataTransfer\.conf")
    await charger.close()


@charger_test
async def test_no_boot_data_flag(start_server):
    server = start_server("--no-boot-data")

    charger = await Charger.connect(server.url)
    await charger.call("BootNotification", CHARGER_REQUEST_SAMPLES["BootNotification"])
    await charger.no_frame_within(0.5)
    await charger.close()


@charger_test
async def test_a_flexicharge_charger_is_served_as_it_is(start_server):
    """Replay the real charger's frames: every CALL it sends gets its answer."""
    server = start_server()
    entries = flexicharge_frames()

    charger = await Charger.connect(server.url, charger_id="")
    for entry in entries:
        frame = entry["frame"]
        if entry["dir"] != "charger->server" or frame[0] != 2:
            continue
        if frame[2] == "StopTransaction":
            server.type("stopRemote")
            call = await charger.expect_call("RemoteStopTransaction")
            assert call.payload == {"transactionID": 1}
            await charger.answer(call, {"status": "Accepted"}, flexicharge=True)
        reply = await charger.call(frame[2], frame[3], message_id=frame[1])
        if frame[2] == "BootNotification":
            call = await charger.expect_call("DataTransfer")
            await charger.answer(call, {"status": "Accepted"}, flexicharge=True)
            continue
        assert reply[:3] == [3, frame[1], frame[2]], reply
        assert_valid(frame[2] + "Response", reply[3])
        if frame[2] == "StartTransaction":
            assert reply[3]["transactionId"] == 1
    await charger.close()

    # The path-less FlexiCharge URL gets an id derived from the peer address.
    server.wait_for(
        r"127\.0\.0\.1 \*\* connected from 127\.0\.0\.1:\d+ \(OCPP 1\.6\) "
        r"with no id in the URL path"
    )
    # Its own MeterValues form, rendered as measurand value unit.
    server.wait_for(
        r"<- MeterValues connector 1, transaction 1: SoC 42 %, Power\.Active,Import 7400 W, "
        r"Energy\.Active\.Import 1234 Wh"
    )
    # Off-spec parts are answered and reported once each.
    output = server.settled_output()
    assert output.count("spec: StatusNotification.connectorId must be an integer") == 1
    assert "spec: StartTransaction.id_tag is not a field" in output
    assert "spec: MeterValues.values is not a field" in output
    assert 'message id "0jdsEnnyo2kpCP8FLfHlNpbvQXosR5ZNlh8v" reused' in output


@charger_test
async def test_standard_meter_values_are_rendered(start_server):
    server = start_server("--no-boot-data")

    charger = await Charger.connect(server.url)
    payload = {
        "connectorId": 2,
        "meterValue": [
            {
                "timestamp": NOW,
                "sampledValue": [
                    {"value": "7.4", "measurand": "Power.Active.Import", "unit": "kW"},
                    {"value": "230.1", "measurand": "Voltage", "unit": "V", "phase": "L1-N"},
                    {"value": "99"},
                ],
            }
        ],
    }
    await charger.call("MeterValues", payload)
    await charger.close()

    server.wait_for(
        r"<- MeterValues connector 2: Power\.Active\.Import 7\.4 kW, Voltage 230\.1 V L1-N, "
        r"Energy\.Active\.Import\.Register 99 Wh$"
    )
    assert "spec:" not in server.settled_output()


@pytest.mark.parametrize(
    "args, tag, expected, rule",
    [
        ((), "ANY", {"status": "Accepted"}, None),
        (("--tag", "B1=Blocked"), "B1", {"status": "Blocked"}, r"--tag B1=Blocked"),
        (("--tag", "B1=Blocked"), "OTHER", {"status": "Accepted"}, r"--unknown-tags Accepted"),
        (("--unknown-tags", "Invalid"), "OTHER", {"status": "Invalid"}, r"--unknown-tags Invalid"),
        (
            ("--tag", "E1=Expired", "--unknown-tags", "Blocked"),
            "E1",
            {"status": "Expired"},
            r"--tag E1=Expired",
        ),
    ],
)
@charger_test
async def test_authorization_rules(start_server, args, tag, expected, rule):
    server = start_server("--no-boot-data", *args)

    charger = await Charger.connect(server.url)
    authorize = await charger.call("Authorize", {"idTag": tag})
    assert authorize[2] == {"idTagInfo": expected}
    assert_valid("AuthorizeResponse", authorize[2])
    start = await charger.call(
        "StartTransaction", dict(CHARGER_REQUEST_SAMPLES["StartTransaction"], idTag=tag)
    )
    assert start[2]["idTagInfo"] == expected
    assert_valid("StartTransactionResponse", start[2])
    stop = await charger.call(
        "StopTransaction",
        dict(
            CHARGER_REQUEST_SAMPLES["StopTransaction"],
            idTag=tag,
            transactionId=start[2]["transactionId"],
        ),
    )
    assert stop[2] == {"idTagInfo": expected}
    await charger.close()

    if rule:
        server.wait_for(
            r"CP-1 \*\* Authorize idTag \"{}\": {} \({}\)".format(tag, expected["status"], rule)
        )


@charger_test
async def test_a_tags_file_and_the_chargers_listing_and_transcript_name_the_rule(
    start_server, tmp_path
):
    tags = tmp_path / "tags.json"
    tags.write_text(
        json.dumps(
            {
                "VIP": {
                    "status": "Accepted",
                    "expiryDate": "2030-01-01T00:00:00Z",
                    "parentIdTag": "FLEET",
                },
                "OLD": "Expired",
            }
        )
    )
    log = tmp_path / "transcript.jsonl"
    server = start_server(
        "--no-boot-data", "--tags", str(tags), "--unknown-tags", "Invalid", "--log", str(log)
    )

    charger = await Charger.connect(server.url)
    vip = await charger.call("Authorize", {"idTag": "VIP"})
    assert vip[2]["idTagInfo"] == {
        "status": "Accepted",
        "expiryDate": "2030-01-01T00:00:00Z",
        "parentIdTag": "FLEET",
    }
    assert_valid("AuthorizeResponse", vip[2])
    assert (await charger.call("Authorize", {"idTag": "OLD"})).payload["idTagInfo"] == {
        "status": "Expired"
    }
    assert (await charger.call("Authorize", {"idTag": "NEW"})).payload["idTagInfo"] == {
        "status": "Invalid"
    }
    mark = server.mark()
    server.type("chargers")
    server.wait_for(r">>   Authorize idTag \"OLD\": Expired \(--tags tags\.json\)", since=mark)
    server.wait_for(r">>   Authorize idTag \"NEW\": Invalid \(--unknown-tags Invalid\)", since=mark)
    await charger.close()

    server.stop()
    decisions = [
        record for record in read_transcript(log) if record.get("event") == "authorization"
    ]
    assert [(record["idTag"], record["status"], record["rule"]) for record in decisions] == [
        ("VIP", "Accepted", "--tags tags.json"),
        ("OLD", "Expired", "--tags tags.json"),
        ("NEW", "Invalid", "--unknown-tags Invalid"),
    ]


@charger_test
async def test_concurrent_tx(start_server):
    server = start_server("--no-boot-data", "--concurrent-tx")

    one = await Charger.connect(server.url, "CP-1")
    two = await Charger.connect(server.url, "CP-2")
    start = dict(CHARGER_REQUEST_SAMPLES["StartTransaction"], idTag="SHARED")
    first = await one.call("StartTransaction", start)
    assert first.payload["idTagInfo"] == {"status": "Accepted"}
    second = await two.call("StartTransaction", start)
    assert second.payload["idTagInfo"] == {"status": "ConcurrentTx"}
    assert_valid("StartTransactionResponse", second[2])
    assert (await two.call("Authorize", {"idTag": "SHARED"})).payload["idTagInfo"] == {
        "status": "ConcurrentTx"
    }
    assert (await two.call("Authorize", {"idTag": "SOLO"})).payload["idTagInfo"] == {
        "status": "Accepted"
    }
    await one.close()
    await two.close()

    server.wait_for(
        r"CP-2 \*\* StartTransaction idTag \"SHARED\": ConcurrentTx \(--concurrent-tx: "
        r"transaction 1 "
        r"on CP-1 connector 1\)"
    )


@pytest.mark.parametrize(
    "args, message",
    [
        (["--tag", "X=Maybe"], "--tag X=Maybe: expected TAG=STATUS"),
        (["--tags", "/nonexistent/tags.json"], "--tags /nonexistent/tags.json: No such file"),
    ],
)
def test_authorization_flag_mistakes_are_one_line(args, message):
    result = subprocess.run(
        server_command(*args),
        capture_output=True,
        text=True,
        timeout=10,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr


def test_a_bad_tags_file_is_one_line(tmp_path):
    tags = tmp_path / "tags.json"
    tags.write_text('{"T": {"status": "Sure"}}')
    result = subprocess.run(
        server_command("--tags", str(tags)),
        capture_output=True,
        text=True,
        timeout=10,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 2 and 'tag "T": status "Sure" is not allowed' in result.stderr


# Item 7: never InternalError for a charger's value.
@pytest.mark.parametrize("strict", [False, True])
@pytest.mark.parametrize("value", ["+-1", "²", "--3", "1" * 5000, "١", " 7 ", "0x10"])
@charger_test
async def test_string_connector_and_transaction_ids_never_get_internal_error(
    in_process, strict, value
):
    server = in_process("--no-boot-data", *(("--strict",) if strict else ()))

    charger = await Charger.connect(server.url, "CP-INT")
    if strict:
        await charger.boot(answer_boot_data=False)
    for action, field in (
        ("StatusNotification", "connectorId"),
        ("StartTransaction", "connectorId"),
        ("StopTransaction", "transactionId"),
        ("MeterValues", "connectorId"),
    ):
        payload = dict(CHARGER_REQUEST_SAMPLES[action], **{field: value})
        reply = await charger.call(action, payload)
        if strict:
            assert reply.error_code == "TypeConstraintViolation", reply
        else:
            assert reply[0] == 3, reply
            assert_valid(action + "Response", reply[2])
    await charger.close()

    if not strict:
        server.wait_for(r"spec: StatusNotification\.connectorId must be an integer, got string")


@pytest.mark.slow(2.5)
def test_any_json_value_in_any_field_gets_a_conf_or_a_spec_callerror_never_internal_error():
    """Item 7's class, closed: any JSON value in any field of the 14 actions, lenient and strict.
    The suite draws PROPERTY_EXAMPLES cases (default 100: hypothesis's drawing is most of the
    test's cost); ``bash scripts/attack_fields.sh`` runs it at full size (2,000)."""
    hypothesis = pytest.importorskip("hypothesis")
    strategies = hypothesis.strategies
    leaves = (
        strategies.none()
        | strategies.booleans()
        | strategies.integers(-(10**40), 10**40)
        | strategies.floats(allow_nan=False, allow_infinity=False)
        | strategies.text(max_size=30)
        | strategies.sampled_from(
            [
                "+-1",
                "²",
                "--3",
                "1" * 5000,
                "\ud800",
                "Energy.Active.Import.Registe",
                "",
                " 1 ",
                "1e999",
            ]
        )
    )
    json_values = strategies.recursive(
        leaves,
        lambda children: (
            strategies.lists(children, max_size=4)
            | strategies.dictionaries(strategies.text(max_size=12), children, max_size=4)
        ),
        max_leaves=12,
    )
    samples = {action: CHARGER_REQUEST_SAMPLES[action] for action in mock.CHARGER_ACTION_HANDLERS}
    cases = strategies.sampled_from(sorted(samples)).flatmap(
        lambda action: strategies.tuples(
            strategies.just(action),
            strategies.sampled_from(list(_paths(samples[action])) + [("unknownField",)]),
            json_values,
        )
    )

    servers = [
        InProcessServer("--no-boot-data", "--quiet"),
        InProcessServer("--no-boot-data", "--quiet", "--strict"),
    ]
    loop = LoopThread()
    chargers = [loop.run(Charger.connect(server.url, "CP-PROP")) for server in servers]
    loop.run(chargers[1].boot(answer_boot_data=False))
    counter = itertools.count()

    async def calls_at_once(action, payload, message_ids):  # both servers at once: half the waits
        return await asyncio.gather(
            *(
                charger.call(action, payload, message_id)
                for charger, message_id in zip(chargers, message_ids)
            )
        )

    @hypothesis.settings(
        derandomize=True,
        deadline=None,
        max_examples=int(os.environ.get("PROPERTY_EXAMPLES", "100")),
        database=None,
        suppress_health_check=[hypothesis.HealthCheck.too_slow],
    )
    @hypothesis.given(cases)
    def check(case):
        action, path, value = case
        payload = _replaced(samples[action], path, value)
        if not isinstance(payload, dict):
            payload = {"payload": payload}
        message_ids = [f"p{next(counter)}" for _ in chargers]
        replies = loop.run(calls_at_once(action, payload, message_ids))
        for message_id, reply in zip(message_ids, replies):
            assert reply[1] == message_id
            if reply[0] == 3:
                assert not schema_problems(action + "Response", reply[2]), (action, payload, reply)
            else:
                assert reply[0] == 4 and reply[2] in SPEC_ERROR_CODES, (action, payload, reply)

    try:
        check()
        for charger in chargers:  # both connections are still served
            assert loop.run(charger.call("Heartbeat", {}))[0] == 3
            loop.run(charger.close())
    finally:
        loop.close()
        for server in servers:
            assert server.stop() == 0
            assert "Traceback" not in server.output() and " ERROR " not in server.output(), (
                server.output()
            )
