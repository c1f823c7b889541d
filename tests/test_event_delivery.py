"""A lean engine: frames gathered and delivered once per turn of the loop keep every line, in the
order things happened, and a frame receiver that fails on one frame still gets the others."""

import json
import re

from conftest import Charger, InProcessServer, charger_test, read_transcript


def _charger_lines(text: str, charger_id: str) -> list:
    """The kind of each of a charger's lines ("<-", "->", "!!", "**") with what follows it."""
    pattern = re.compile(r"^\S+ " + re.escape(charger_id) + r" (<-|->|!!|\*\*) (.*)$")
    return [match.groups() for match in map(pattern.match, text.splitlines()) if match]


@charger_test
async def test_frames_sent_at_once_keep_their_lines_in_order_with_the_warning_between(
        in_process, tmp_path):
    log = tmp_path / "transcript.jsonl"
    server = in_process("--no-boot-data", "--log", str(log))
    plain = in_process("--no-boot-data")  # frames delivered together (no --log subscriber)
    for target in (server, plain):
        charger = await Charger.connect(target.url, "CP-ORDER")
        # One burst: the server reads them in one turn of its loop.
        for number in range(4):
            payload = {"vendorId": "v", "data": f"n{number}"}
            if number == 2:
                payload["extra"] = 1  # a spec warning, printed between this frame's two lines
            await charger.send_frame([2, f"o{number}", "DataTransfer", payload])
        replies = await charger.replies_until("o3")
        assert [reply[1] for reply in replies] == ["o0", "o1", "o2", "o3"]
        await charger.close()
        target.wait_for(r"CP-ORDER \*\* disconnected")
        lines = [(kind, text) for kind, text in _charger_lines(target.settled_output(),
                                                              "CP-ORDER") if kind != "**"]
        kinds = [kind if kind != "<-" else "<- " + re.search(r'"(n\d)"', text).group(1)
                 for kind, text in lines]
        assert kinds == ["<- n0", "->", "<- n1", "->", "<- n2", "!!", "->", "<- n3", "->"], lines
        assert "spec: DataTransfer.extra" in lines[5][1]
    frames = [record for record in read_transcript(log) if "frame" in record]
    assert [record["dir"] for record in frames] == ["in", "out"] * 4


@charger_test
async def test_a_frame_receiver_that_fails_on_one_frame_gets_the_others_and_the_terminal_all():
    server = InProcessServer("--no-boot-data")
    got = []

    def subscriber(event):  # never called while it has a receiver
        got.append(("event", event.type))

    def receiver(frames):
        for frame in frames:
            got.append(frame[5])  # its label
            if frame[5] == "Heartbeat" and got.count("Heartbeat") == 2:
                raise RuntimeError("receiver bug")

    try:
        server.call_in_loop(lambda: server.system.bus.subscribe(subscriber, "frame",
                                                                receiver=receiver))
        charger = await Charger.connect(server.url, "CP-RECV")
        for number in range(3):  # in one burst: delivered together
            await charger.send_frame([2, f"r{number}", "Heartbeat", {}])
        assert [reply[1] for reply in await charger.replies_until("r2")] == ["r0", "r1", "r2"]
        await charger.close()
        server.wait_for(r"CP-RECV \*\* disconnected")
        text = server.settled_output()
    finally:
        server.stop()
    assert got == ["Heartbeat", "Heartbeat.conf"] * 3
    assert text.count("CP-RECV <- Heartbeat {}") == 3
    assert text.count("CP-RECV -> Heartbeat.conf") == 3
    assert text.count("RuntimeError: receiver bug (reported once)") == 1


@charger_test
async def test_the_history_keeps_every_frame_in_order_and_counts_what_it_dropped(in_process):
    server = in_process("--no-boot-data")
    history = server.system.http.history
    server.call_in_loop(setattr, history, "limit", 5)
    charger = await Charger.connect(server.url, "CP-HIST")
    for number in range(4):
        await charger.send_frame([2, f"h{number}", "Heartbeat", {}])
    await charger.replies_until("h3")
    await charger.close()
    server.wait_for(r"CP-HIST \*\* disconnected")
    kept = server.call_in_loop(history.kept)
    frames = [event for event in kept if event.type == "frame"]
    assert [event.fields["direction"] for event in frames][-4:] == ["in", "out", "in", "out"]
    seqs = [event.seq for event in kept]
    assert seqs == sorted(seqs) and len(history.events) == 5
    assert 0 < history.dropped < frames[0].seq
    assert [json.loads(event.fields["text"])[1] for event in frames][-2:] == ["h3", "h3"]
