#!/usr/bin/env python3
"""Benchmark the mock server against the websockets floor, in one run on this machine.

    python bench/bench.py            # the full run, under 3 minutes
    python bench/bench.py --quick    # a smoke run of a few seconds (CI)

Scenario 1 (throughput): N chargers (default 200) connect and boot (answering
the BootData CALL), then each sends M rounds (default 30) of Heartbeat,
StatusNotification and MeterValues, each awaited.  The same load runs against
the floor (bench/floor_server.py: a bare websockets server that answers every
CALL with a fixed CALLRESULT), against the mock server with its default
per-frame output going to a file, and with --quiet.  The headline is the
mock's server CPU time per message divided by the floor's: absolute times vary
between machines, ratios measured in one run much less.

Scenario 2 (concurrency): 1,000 chargers connected at once, each sending one
Heartbeat a second for 20 s: every one answered?  p99 latency, server RSS.

Scenario 3 (fairness under hostile frames): one charger sends 48 frames of
each hostile set below, as fast as the socket takes them, while another
charger sends a Heartbeat every 50 ms: that Heartbeat's p99, the server's RSS
growth, and how long SIGTERM takes while the hostile charger floods.  The
sets: a 64 KiB MeterValues with 1,100 sampledValues whose measurand is a
near-miss ("Energy.Active.Import.Registe"), 1,000 new unknown field names a
frame, 60 KB unique message ids, nesting 900 deep, lone surrogates.

Scenario 4 (event-stream readers): a steady load, with and without 20
readers of GET /api/events attached, each reading every event as fast as it
can, in a process of their own; interleaved runs, a fresh server each.  The
load: 200 chargers, each sending the messages of scenario 1's round one after
another, one a second (200 messages, about 800 events a second: a large
classroom), for 10 s; then ten times that rate, reported beside it.  Steady,
not scenario 1's flat-out load: there every extra microsecond is queueing,
and p99 would measure the queue, not the readers.  The chargers' p99 with
the readers over their p99 without, the server's CPU per message, and how
many events reached the readers (one that falls behind skips ahead and is
told how many it missed).

Scenario 5 (10,000 chargers): each a Heartbeat every 10 s at a random phase,
the load in a process of its own; every message answered? p99, server RSS,
beside the floor's under the same load.

Scenario 6 (throughput, OCPP 2.0.1): scenario 1 with 2.0.1 stations (Heartbeat,
StatusNotification and a TransactionEvent Updated with two meter values), the
floor offering ocpp2.0.1.

Start-up: process start to the port accepting connections, median of 5.

Server CPU time and peak RSS are read from /proc/PID (Linux).  On a shared
virtual machine CPU time swings from run to run, so where valgrind is
installed the bench also counts the instructions each server executes per
message under callgrind (zeroed after warm-up, dumped after the load): a
count that repeats run after run, whatever the neighbours do.
"""

import argparse
import asyncio
import json
import os
import random
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

import websockets

HERE = Path(__file__).resolve().parent
MOCK = HERE.parent / "ocpp_mock_server.py"
FLOOR = HERE / "floor_server.py"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
NOW = "2026-11-25T12:00:00.000Z"
ROUND = [
    ("Heartbeat", {}),
    ("StatusNotification",
     {"connectorId": 1, "errorCode": "NoError", "status": "Charging", "timestamp": NOW}),
    ("MeterValues",
     {"connectorId": 1, "transactionId": 1, "meterValue": [{"timestamp": NOW, "sampledValue": [
        {"value": "1234", "measurand": "Energy.Active.Import.Register", "unit": "Wh"},
        {"value": "7400", "measurand": "Power.Active.Import", "unit": "W"}]}]}),
]
BOOT = {"chargePointVendor": "Bench", "chargePointModel": "Load-1"}


class Profile:
    """What a simulated charger speaks: its subprotocol, its boot and its round of messages."""

    def __init__(self, name: str, subprotocol: str, boot: dict, round_: list) -> None:
        self.name, self.subprotocol, self.boot, self.round = name, subprotocol, boot, round_


OCPP16 = Profile("OCPP 1.6", "ocpp1.6", BOOT, ROUND)
OCPP201 = Profile("OCPP 2.0.1", "ocpp2.0.1", {
    "reason": "PowerUp", "chargingStation": {"vendorName": "Bench", "model": "Load-1"}}, [
    ("Heartbeat", {}),
    ("StatusNotification",
     {"timestamp": NOW, "connectorStatus": "Occupied", "evseId": 1, "connectorId": 1}),
    ("TransactionEvent",
     {"eventType": "Updated", "timestamp": NOW, "triggerReason": "MeterValuePeriodic", "seqNo": 1,
      "transactionInfo": {"transactionId": "T-1"}, "evse": {"id": 1, "connectorId": 1},
      "meterValue": [{"timestamp": NOW, "sampledValue": [
          {"value": 1234, "measurand": "Energy.Active.Import.Register",
           "unitOfMeasure": {"unit": "Wh"}},
          {"value": 7400, "measurand": "Power.Active.Import", "unitOfMeasure": {"unit": "W"}}]}]}),
])


# ------------------------------------------------------------ server process

# The server under test and this load generator run on separate cores when
# there are two or more, so they do not take turns on one.
SERVER_CORE, LOAD_CORE = (0, 1) if (os.cpu_count() or 1) >= 2 else (None, None)


def pin(core: Optional[int]):
    """A preexec_fn that pins the child process to ``core`` (None: leave it) and lets it open as
    many files as the hard limit allows (10,000 connections)."""
    def pin_child() -> None:
        if core is not None and hasattr(os, "sched_setaffinity"):
            os.sched_setaffinity(0, {core})
        raise_open_files()
    return pin_child


def raise_open_files() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE,
                           (hard if hard != resource.RLIM_INFINITY else 65536,
                                                    hard))



def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Server:
    """A server under test in its own process, its output going to a file."""

    def __init__(self, name: str, command: list[str], output_dir: str,
                 callgrind: bool = False) -> None:
        self.name = name
        self.port = free_port()
        self.callgrind_prefix = os.path.join(output_dir, name.replace(" ", "_") + ".callgrind")
        if callgrind:
            command = ["valgrind", "--tool=callgrind", "--callgrind-out-file=%s.%%p"
                       % self.callgrind_prefix, "--"] + command
        self.startup_limit = 120 if callgrind else 10
        self.output_path = os.path.join(output_dir, name.replace(" ", "_") + ".out")
        self.output = open(self.output_path, "w")
        self.started = time.perf_counter()
        self.proc = subprocess.Popen(command + ["--port", str(self.port)], stdin=subprocess.DEVNULL,
                                     stdout=self.output, stderr=subprocess.STDOUT,
                                     preexec_fn=pin(SERVER_CORE))
        self.startup_seconds = self._wait_listening()

    def _wait_listening(self) -> float:
        deadline = time.perf_counter() + self.startup_limit
        while time.perf_counter() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.05):
                    return time.perf_counter() - self.started
            except OSError:
                if self.proc.poll() is not None:
                    raise RuntimeError("%s exited: see %s"
                                       % (self.name, self.output_path)) from None
                time.sleep(0.002)
        raise RuntimeError("%s did not listen within %d s" % (self.name, self.startup_limit))

    @property
    def url(self) -> str:
        return "ws://127.0.0.1:%d" % self.port

    def cpu_seconds(self) -> float:
        fields = Path("/proc/%d/stat" % self.proc.pid).read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime + stime

    def _status_mb(self, field: str) -> float:
        for line in Path("/proc/%d/status" % self.proc.pid).read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def peak_rss_mb(self) -> float:
        return self._status_mb("VmHWM")

    def rss_mb(self) -> float:
        return self._status_mb("VmRSS")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.output.close()


# ------------------------------------------------------------ chargers


class LoadCharger:
    """One simulated charger: awaits each reply, answers the server's CALLs."""

    def __init__(self, websocket) -> None:
        self.ws = websocket
        self.sequence = 0

    async def call(self, action: str, payload: dict) -> float:
        """Round-trip time of one CALL, seconds."""
        self.sequence += 1
        message_id = str(self.sequence)
        started = time.perf_counter()
        await self.ws.send(json.dumps([2, message_id, action, payload]))
        while True:
            frame = json.loads(await self.ws.recv())
            if frame[0] == 2:  # BootData and the like: answer, keep waiting
                await self.ws.send(json.dumps([3, frame[1], {"status": "Accepted"}]))
            elif frame[1] == message_id:
                return time.perf_counter() - started


async def connect(url: str, charger_id: str, profile: Profile = OCPP16) -> LoadCharger:
    for attempt in range(50):
        try:
            websocket = await websockets.connect("%s/%s" % (url, charger_id),
                                                 subprotocols=[profile.subprotocol],
                                                 open_timeout=30,
                                                 ping_interval=None)
            return LoadCharger(websocket)
        except (OSError, asyncio.TimeoutError):
            await asyncio.sleep(0.05 * (attempt + 1))
    raise RuntimeError("cannot connect %s" % charger_id)


async def boot_fleet(url: str, chargers: int, profile: Profile = OCPP16) -> list[LoadCharger]:
    """``chargers`` connected chargers, each booted (the BootData answered on their next call)."""
    fleet = await asyncio.gather(*(connect(url, "CP-%04d" % number, profile)
                                   for number in range(chargers)))
    await asyncio.gather(*(charger.call("BootNotification", profile.boot) for charger in fleet))
    return list(fleet)


def percentile(sorted_values: list[float], fraction: float) -> float:
    if not sorted_values:
        return float("nan")
    return sorted_values[min(len(sorted_values) - 1, int(len(sorted_values) * fraction))]


async def throughput(server: Server, chargers: int, rounds: int,
                     profile: Profile = OCPP16) -> dict[str, float]:
    fleet = await boot_fleet(server.url, chargers, profile)
    await asyncio.sleep(0.3)  # let BootData settle
    latencies: list[float] = []

    async def run_rounds(charger: LoadCharger) -> None:
        for _ in range(rounds):
            for action, payload in profile.round:
                latencies.append(await charger.call(action, payload))

    cpu_before, wall_before = server.cpu_seconds(), time.perf_counter()
    await asyncio.gather(*(run_rounds(charger) for charger in fleet))
    wall, cpu = time.perf_counter() - wall_before, server.cpu_seconds() - cpu_before
    await asyncio.gather(*(charger.ws.close() for charger in fleet))
    latencies.sort()
    messages = len(latencies)
    return {"messages": messages, "per_second": messages / wall, "cpu_us": cpu / messages * 1e6,
            "p50_ms": percentile(latencies, 0.5) * 1e3, "p99_ms": percentile(latencies, 0.99) * 1e3,
            "rss_mb": server.peak_rss_mb()}


def callgrind_control(server: Server, command: str) -> None:
    subprocess.run(["callgrind_control", command, str(server.proc.pid)], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


async def instructions(server: Server, chargers: int, rounds: int,
                       profile: Profile = OCPP16) -> dict[str, float]:
    """Instructions the server executes per message, counted by callgrind."""
    fleet = await boot_fleet(server.url, chargers, profile)
    await asyncio.sleep(2)  # BootData, under valgrind's slowness
    callgrind_control(server, "--zero")
    messages = 0

    async def run_rounds(charger: LoadCharger) -> None:
        nonlocal messages
        for _ in range(rounds):
            for action, payload in profile.round:
                await charger.call(action, payload)
                messages += 1

    await asyncio.gather(*(run_rounds(charger) for charger in fleet))
    callgrind_control(server, "--dump")
    await asyncio.gather(*(charger.ws.close() for charger in fleet))
    prefix = Path(server.callgrind_prefix)
    dumps = sorted(prefix.parent.glob(prefix.name + ".*.*"))
    summary = next(line for line in dumps[-1].read_text().splitlines()
                   if line.startswith("summary:"))
    return {"messages": messages, "instructions": int(summary.split()[1]) / messages}


async def concurrency(server: Server, chargers: int, seconds: float) -> dict[str, float]:
    fleet = []
    for start in range(0, chargers, 100):  # connect in waves, as a fleet coming online would
        fleet += await asyncio.gather(*(connect(server.url, "CC-%05d" % number)
                                        for number in range(start, min(chargers, start + 100))))
    await asyncio.gather(*(charger.call("BootNotification", BOOT) for charger in fleet))
    latencies: list[float] = []
    missed = 0

    async def heartbeats(charger: LoadCharger, offset: float) -> None:
        nonlocal missed
        await asyncio.sleep(offset)
        deadline = time.perf_counter() + seconds
        while time.perf_counter() < deadline:
            tick = time.perf_counter()
            try:
                latencies.append(await asyncio.wait_for(charger.call("Heartbeat", {}), 5))
            except asyncio.TimeoutError:
                missed += 1
            await asyncio.sleep(max(0.0, 1.0 - (time.perf_counter() - tick)))

    await asyncio.gather(*(heartbeats(charger, number / chargers) for number,
                           charger in enumerate(fleet)))
    rss = server.rss_mb()
    await asyncio.gather(*(charger.ws.close() for charger in fleet))
    latencies.sort()
    return {"chargers": len(fleet), "answered": len(latencies), "missed": missed,
            "p50_ms": percentile(latencies, 0.5) * 1e3, "p99_ms": percentile(latencies, 0.99) * 1e3,
            "rss_mb": rss, "peak_rss_mb": server.peak_rss_mb()}


NEAR_MISS = {"connectorId": 1, "transactionId": 1,
             "meterValue": [{"timestamp": NOW, "sampledValue": [
    {"value": str(number),
     "measurand": "Energy.Active.Import.Registe"} for number in range(1100)]}]}
HOSTILE_FRAME_SETS = {
    "near-miss MeterValues, 64 KiB": lambda number: json.dumps(
        [2, "nm%d" % number, "MeterValues", NEAR_MISS], separators=(",", ":")),
    "1,000 new unknown fields a frame": lambda number: json.dumps(
        [2, "uf%d" % number, "Heartbeat", {"f%d_%d" % (number, item): 1 for item in range(1000)}]),
    # A DataTransfer: its answer is smaller than the frame (a Heartbeat's, with its time, is not,
    # and an answer larger than its frame is not sent).
    "60 KB unique message ids": lambda number: json.dumps([2, "%06d" % number + "x" * 60000,
                                                           "DataTransfer", {"vendorId": "v"}]),
    "nesting 900 deep": lambda number: '[2,"dn%d","DataTransfer",{"vendorId":"v","data":%s%s}]' % (
        number, "[" * 900, "]" * 900),
    "lone surrogates": lambda number: '[2,"\\ud800%d","Authorize",{"idTag":"\\udfff"}]' % number,
}
HOSTILE_FRAMES = 48


async def fairness(server: Server, make_frame, frames: int, seconds: float) -> dict[str, float]:
    """A victim's Heartbeat latency while a hostile charger sends bursts of ``frames`` frames for
    ``seconds``."""
    hostile = await connect(server.url, "CP-HOSTILE")
    victim = await connect(server.url, "CP-VICTIM")
    await victim.call("Heartbeat", {})
    rss_before = server.rss_mb()
    latencies: list[float] = []
    done = asyncio.Event()

    async def heartbeats() -> None:
        while not done.is_set():
            latencies.append(await victim.call("Heartbeat", {}))
            await asyncio.sleep(0.05)

    beating = asyncio.ensure_future(heartbeats())
    started = time.perf_counter()
    sent = 0
    while time.perf_counter() - started < seconds:
        for _ in range(frames):  # a burst, as fast as the socket takes it; then its replies
            await hostile.ws.send(make_frame(sent))
            sent += 1
        for _ in range(frames):
            await asyncio.wait_for(hostile.ws.recv(), 30)
    elapsed = time.perf_counter() - started
    done.set()
    await beating
    rss_after = server.rss_mb()
    await hostile.ws.close()
    await victim.ws.close()
    latencies.sort()
    return {"frames": sent, "per_second": sent / elapsed, "heartbeats": len(latencies),
            "p99_ms": percentile(latencies, 0.99) * 1e3, "max_ms": latencies[-1] * 1e3,
            "rss_growth_mb": rss_after - rss_before}


async def sigterm_while_flooded(server: Server, make_frame, frames: int) -> float:
    """Seconds from SIGTERM to exit while a hostile charger's frames are still being handled."""
    hostile = await connect(server.url, "CP-HOSTILE")
    for number in range(frames):
        await hostile.ws.send(make_frame(number))
    await asyncio.wait_for(hostile.ws.recv(), 30)  # the server is busy with them now
    started = time.perf_counter()
    server.proc.terminate()
    while server.proc.poll() is None and time.perf_counter() - started < 30:
        await asyncio.sleep(0.01)
    return time.perf_counter() - started


# A process of N event-stream readers that read as fast as they can (64 KiB reads, no parsing) until
# terminated; then it prints how many events they got, and how many they were told they missed.
SSE_READERS = r"""
import re, select, signal, socket, sys
port, count = int(sys.argv[1]), int(sys.argv[2])
readers = []
for _ in range(count):
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(b"GET /api/events HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n\r\n" % port)
    readers.append(sock)
got, missed, tails = 0, 0, {sock: b"" for sock in readers}
def report(*_):
    print(got, missed, flush=True)
    sys.exit(0)
signal.signal(signal.SIGTERM, report)
print("ready", flush=True)
while True:
    for sock in select.select(readers, [], [])[0]:
        data = tails[sock] + sock.recv(65536)
        complete, _, tails[sock] = data.rpartition(b"\n\n")
        got += complete.count(b"\ndata: ") - complete.count(b"event: hello")  # not an event
        missed += sum(int(number) for number in re.findall(rb'"missed":(\d+)', complete))
"""


async def paced_load(server: Server, chargers: int, rate: float, seconds: float
                     ) -> dict[str, float]:
    """``chargers`` chargers each sending ROUND's messages in turn, ``rate`` a second, for
    ``seconds``."""
    fleet = await boot_fleet(server.url, chargers)
    await asyncio.sleep(0.3)  # let BootData settle
    latencies: list[float] = []

    async def send(charger: LoadCharger, offset: float) -> None:
        await asyncio.sleep(offset)
        next_at = time.perf_counter()
        for number in range(int(seconds * rate)):
            action, payload = ROUND[number % len(ROUND)]
            latencies.append(await charger.call(action, payload))
            next_at += 1 / rate
            await asyncio.sleep(max(0.0, next_at - time.perf_counter()))

    cpu_before = server.cpu_seconds()
    await asyncio.gather(*(send(charger, number / chargers / rate) for number,
                           charger in enumerate(fleet)))
    cpu = server.cpu_seconds() - cpu_before
    await asyncio.gather(*(charger.ws.close() for charger in fleet))
    latencies.sort()
    return {"messages": len(latencies), "cpu_us": cpu / len(latencies) * 1e6,
            "p50_ms": percentile(latencies, 0.5) * 1e3, "p99_ms": percentile(latencies, 0.99) * 1e3}


async def with_readers(server: Server, http_port: int, readers: int, chargers: int, seconds: float,
                       rate: float = 10) -> dict[str, float]:
    """The paced load with ``readers`` event-stream readers attached (none: without)."""
    process = None
    if readers:
        process = subprocess.Popen([sys.executable, "-c", SSE_READERS, str(http_port),
                                    str(readers)],
                                   stdout=subprocess.PIPE, text=True)
        assert process.stdout.readline().strip() == "ready"
    try:
        result = await paced_load(server, chargers, rate, seconds)
    finally:
        if process is not None:
            await asyncio.sleep(0.5)  # the last events on their way
            process.terminate()
            got, missed = (int(number) for number in process.communicate(timeout=10)[0].split())
    if process is not None:
        result["events_got"], result["events_missed"] = got / readers, missed / readers
    return result


async def steady_heartbeats(url: str, chargers: int, seconds: float, interval: float) -> dict[
    str, float]:
    """``chargers`` chargers, each sending a Heartbeat every ``interval`` s at a random phase for
    ``seconds`` s: how many were sent and answered, and the latencies."""
    fleet: list[LoadCharger] = []
    for start in range(0, chargers, 200):  # connect in waves, as a fleet coming online would
        fleet += await asyncio.gather(*(connect(url, "TK-%05d" % number)
                                        for number in range(start, min(chargers, start + 200))))
    for start in range(0, chargers, 500):
        await asyncio.gather(*(charger.call("BootNotification", BOOT)
                               for charger in fleet[start:start + 500]))
    await asyncio.sleep(1)
    latencies: list[float] = []
    sent = 0
    rng = random.Random(20)

    async def heartbeats(charger: LoadCharger, phase: float) -> None:
        nonlocal sent
        await asyncio.sleep(phase)
        next_at = time.perf_counter()
        deadline = next_at + seconds - phase
        while next_at < deadline:
            sent += 1
            try:
                latencies.append(await asyncio.wait_for(charger.call("Heartbeat", {}), 10))
            except asyncio.TimeoutError:
                pass
            next_at += interval
            await asyncio.sleep(max(0.0, next_at - time.perf_counter()))

    await asyncio.gather(*(heartbeats(charger, rng.uniform(0, interval)) for charger in fleet))
    await asyncio.gather(*(charger.ws.close() for charger in fleet), return_exceptions=True)
    latencies.sort()
    return {"chargers": len(fleet), "sent": sent, "answered": len(latencies),
            "p50_ms": percentile(latencies, 0.5) * 1e3, "p99_ms": percentile(latencies, 0.99) * 1e3}


def many_chargers(server: Server, chargers: int, seconds: float, interval: float
                  ) -> dict[str, float]:
    """steady_heartbeats in a load process of its own (one core for it, one for the server), with
    the server's RSS read at the end of the load."""
    load = subprocess.Popen([sys.executable, __file__, "--steady-load", server.url, str(chargers),
                             str(seconds), str(interval)], stdout=subprocess.PIPE, text=True,
                            preexec_fn=pin(LOAD_CORE))
    rss = 0.0
    while load.poll() is None:  # the RSS while the fleet is connected, at its highest
        rss = max(rss, server.rss_mb())
        time.sleep(0.5)
    result = json.loads(load.stdout.read())
    result["rss_mb"] = rss
    return result


# ------------------------------------------------------------ report


def ratio(value: float, floor: float) -> str:
    """``value / floor`` as "1.23x"; "n/a" when the floor is too small to measure (a --quick
    run)."""
    return "%.2fx" % (value / floor) if floor > 0 else "n/a"


def table(rows: list[list[str]]) -> str:
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    lines = ["| " + " | ".join(cell.ljust(width) for cell, width in zip(row, widths)) + " |"
             for row in rows]
    lines.insert(1, "|" + "|".join("-" * (width + 2) for width in widths) + "|")
    return "\n".join(lines)


def scenario_1(options, candidates, output_dir: str, profile: Profile = OCPP16) -> None:
    """Throughput: CPU and instructions per message against the floor (the floor offering the
    profile's subprotocol)."""
    print("scenario %s: %d chargers x %d rounds of %s (each awaited), %s\n"
          % ("1" if profile is OCPP16 else "6", options.chargers, options.rounds,
             ", ".join(action for action, _ in profile.round), profile.name))
    candidates = [(name, command + (["--subprotocol", profile.subprotocol] if name == "floor"
                                    else [])) for name, command in candidates]
    runs: dict[str, list[dict[str, float]]] = {name: [] for name, _ in candidates}
    # Interleaved repeats: a noisy neighbour then hurts every candidate alike.
    for _ in range(options.repeat):
        for name, command in candidates:
            server = Server(name, command, output_dir)
            try:
                runs[name].append(asyncio.run(throughput(server, options.chargers, options.rounds,
                                                         profile)))
            finally:
                server.stop()
    results = {name: {key: statistics.median(run[key] for run in results_of_name)
                      for key in results_of_name[0]}
               for name, results_of_name in runs.items()}
    rows = [["server", "msgs/s", "server CPU µs/msg", "p50 ms", "p99 ms", "peak RSS MB",
             "CPU vs floor"]]
    floor_cpu = results["floor"]["cpu_us"]
    for name, result in results.items():
        rows.append([name, "%.0f" % result["per_second"], "%.1f" % result["cpu_us"], "%.2f"
                     % result["p50_ms"], "%.2f" % result["p99_ms"], "%.1f" % result["rss_mb"],
                     ratio(result["cpu_us"], floor_cpu)])
    print("medians of %d interleaved runs each" % options.repeat)
    print(table(rows))
    if options.quick:
        print("\n(--quick: a smoke run, too short for its CPU figures to mean anything: "
              "no verdict)\n")
    else:
        print("\nheadline (CPU): default output, HTTP port on = %s the floor's (target <= 1.2x), "
              "--quiet %s (target <= 1.15x)" % (
            ratio(results["mock, output to a file"]["cpu_us"], floor_cpu),
            ratio(results["mock --quiet"]["cpu_us"], floor_cpu)))
        print("per-run ratios to the floor run beside it: output to a file %s; --quiet %s\n"
              % tuple(
            ", ".join(ratio(run["cpu_us"], floor_run["cpu_us"]) for run,
                      floor_run in zip(runs[name], runs["floor"]))
            for name in ("mock, output to a file", "mock --quiet")))

    if options.quick:
        print("(--quick: no instruction counts)\n")
    elif shutil.which("valgrind") and shutil.which("callgrind_control"):
        chargers, rounds = 10, 50
        print("instructions per message under callgrind (%d chargers x %d rounds, after warm-up):"
              % (
            chargers, rounds))
        counts = {}
        for name, command in candidates:
            server = Server(name, command, output_dir, callgrind=True)
            try:
                counts[name] = asyncio.run(instructions(server, chargers, rounds,
                                                        profile))["instructions"]
            finally:
                server.stop()
        floor_count = counts["floor"]
        print(table([["server", "instructions/msg", "vs floor"]] + [
            [name, "%.0f" % count, "%.2fx" % (count / floor_count)]
            for name, count in counts.items()]))
        print("\nheadline (instructions, repeatable): default output, HTTP port on = %.2fx "
              "the floor's "
              "(target <= 1.39x), --quiet %.2fx\n"
              % (counts["mock, output to a file"] / floor_count,
                 counts["mock --quiet"] / floor_count))
    else:
        print("(valgrind not installed: no instruction counts; apt-get install valgrind)\n")


def scenario_2(options, python: list[str], output_dir: str) -> None:
    print("scenario 2: %d chargers at once, one Heartbeat a second each for %g s" % (
        options.concurrent, options.seconds))
    server = Server("mock concurrency", python + [str(MOCK)], output_dir)
    try:
        result = asyncio.run(concurrency(server, options.concurrent, options.seconds))
    finally:
        server.stop()
    expected = result["chargers"] * int(options.seconds)
    print(table([["chargers", "heartbeats answered", "missed", "p50 ms", "p99 ms", "server RSS MB"],
                 ["%d" % result["chargers"], "%d (~%d expected)" % (result["answered"], expected),
                  "%d" % result["missed"], "%.2f" % result["p50_ms"], "%.2f" % result["p99_ms"],
                  "%.1f (peak %.1f)" % (result["rss_mb"], result["peak_rss_mb"])]]))
    print("targets: every heartbeat answered, p99 < 50 ms, RSS < 100 MB\n")


def scenario_3(options, python: list[str], output_dir: str) -> None:
    print("scenario 3: one charger sends bursts of %d hostile frames of each set for %g s; "
          "another sends a "
          "Heartbeat every 50 ms" % (HOSTILE_FRAMES, 0.5 if options.quick else 3.0))
    rows = [["frame set", "hostile frames", "frames/s", "victim heartbeats", "victim p99 ms",
             "victim max ms", "server RSS growth MB"]]
    for name, make_frame in HOSTILE_FRAME_SETS.items():
        server = Server("mock fairness", python + [str(MOCK)], output_dir)
        try:
            result = asyncio.run(fairness(server, make_frame, HOSTILE_FRAMES, 0.5 if options.quick
                                          else 3.0))
        finally:
            server.stop()
        rows.append([name, "%d" % result["frames"], "%.0f" % result["per_second"], "%d"
                     % result["heartbeats"], "%.1f" % result["p99_ms"], "%.1f" % result["max_ms"],
                     "%.1f"
                     % result["rss_growth_mb"]])
    print(table(rows))
    server = Server("mock sigterm", python + [str(MOCK)], output_dir)
    try:
        seconds = asyncio.run(sigterm_while_flooded(
            server, HOSTILE_FRAME_SETS["near-miss MeterValues, 64 KiB"],
                                                    HOSTILE_FRAMES))
    finally:
        server.stop()
    print("SIGTERM while %d near-miss MeterValues are being handled: exited in %.2f s"
          % (HOSTILE_FRAMES, seconds))
    print("targets: victim p99 < 100 ms, RSS growth < 5 MB per connection, SIGTERM exit < 4 s\n")


def scenario_4(options, python: list[str], output_dir: str) -> None:
    readers = 20
    # chargers, messages a second each, seconds, runs
    loads = [(200, 1.0, 10.0, 5), (200, 10.0, 5.0, 3)]
    if options.quick:
        loads = [(10, 1.0, 1.0, 1)]
    print("scenario 4: steady loads without and with %d event-stream readers (interleaved "
          "runs, medians)"
          % readers)
    rows = [["load", "readers", "chargers' p99 ms", "each run", "server CPU µs/msg",
             "events per reader: got / told missed"]]
    headline = []
    for chargers, rate, seconds, repeat in loads:
        p99s: dict[int, list[float]] = {0: [], readers: []}
        cpus: dict[int, list[float]] = {0: [], readers: []}
        delivered: list[dict[str, float]] = []
        for _ in range(repeat):
            for count in (0, readers):
                http_port = free_port()
                server = Server("mock readers %d" % count, python
                                + [str(MOCK), "--http-port", str(http_port)], output_dir)
                try:
                    result = asyncio.run(with_readers(server, http_port, count, chargers, seconds,
                                                      rate))
                finally:
                    server.stop()
                p99s[count].append(result["p99_ms"])
                cpus[count].append(result["cpu_us"])
                if count:
                    delivered.append(result)
        load = "%d chargers x %g msg/s" % (chargers, rate)
        for count in (0, readers):
            rows.append([load, "%d" % count, "%.2f" % statistics.median(p99s[count]),
                         ", ".join("%.2f" % value for value in p99s[count]), "%.0f"
                         % statistics.median(cpus[count]),
                         ", ".join("%.0f / %.0f" % (run["events_got"], run["events_missed"])
                                   for run in delivered)
                         if count else "-"])
        headline.append("%s: %s"
                        % (load,
                           ratio(statistics.median(p99s[readers]), statistics.median(p99s[0]))))
    print(table(rows))
    if options.quick:
        print("(--quick: no verdict)\n")
    else:
        print("headline: chargers' p99 with %d readers / without: %s (target < 1.2x, at the "
              "first load)\n" % (
            readers, "; ".join(headline)))


def scenario_5(options, python: list[str], output_dir: str) -> None:
    """10,000 chargers, a Heartbeat every 10 s each at a random phase: the floor, then the mock."""
    interval = 10.0
    print("scenario 5: %d chargers, each a Heartbeat every %g s at a random phase for %g s "
          "(the load in a process of its own)" % (options.many, interval, options.many_seconds))
    rows = [["server", "heartbeats answered", "p50 ms", "p99 ms", "server RSS MB"]]
    results = {}
    for name, command in (("floor", python + [str(FLOOR)]),
                          ("mock --quiet", python + [str(MOCK), "--quiet"])):
        server = Server(name, command, output_dir)
        try:
            result = results[name] = many_chargers(server, options.many, options.many_seconds,
                                                   interval)
        finally:
            server.stop()
        rows.append([name, "%d of %d" % (result["answered"], result["sent"]), "%.2f"
                     % result["p50_ms"], "%.2f" % result["p99_ms"], "%.1f" % result["rss_mb"]])
    print(table(rows))
    limit = max(50.0, 1.5 * results["floor"]["p99_ms"])
    mock = results["mock --quiet"]
    print("targets: every heartbeat answered (%s), p99 <= max(50 ms, 1.5x the floor's) = "
          "%.0f ms (%s), "
          "RSS < 250 MB (%s)\n" % ("met" if mock["answered"] == mock["sent"] else "NOT met", limit,
                                   "met" if mock["p99_ms"] <= limit else "NOT met",
                                   "met" if mock["rss_mb"] < 250 else "NOT met"))


def start_up(python: list[str], output_dir: str) -> None:
    startups = []
    for _ in range(5):
        server = Server("mock start-up", python + [str(MOCK)], output_dir)
        startups.append(server.startup_seconds)
        server.stop()
    print("start-up to listening: median %.3f s of 5 (%s) (target <= 0.3 s)" % (
        statistics.median(startups), ", ".join("%.3f" % value for value in startups)))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--chargers", type=int, default=200,
                        help="scenario 1 chargers (default %(default)s)")
    parser.add_argument("--rounds", type=int, default=30,
                        help="scenario 1 rounds (default %(default)s)")
    parser.add_argument("--concurrent", type=int, default=1000,
                        help="scenario 2 chargers (default %(default)s)")
    parser.add_argument("--seconds", type=float, default=20,
                        help="scenario 2 duration (default %(default)s)")
    parser.add_argument("--repeat", type=int, default=5,
                        help="scenario 1 runs per server (default %(default)s)")
    parser.add_argument("--quick", action="store_true",
                        help="a smoke run: 20 chargers, 5 rounds, 100 for 3 s")
    parser.add_argument("--many", type=int, default=10000,
                        help="scenario 5 chargers (default %(default)s)")
    parser.add_argument("--many-seconds", type=float, default=40,
                        help="scenario 5 duration (default %(default)s)")
    parser.add_argument("--scenarios", default="1,2,3,4,5,6",
                        help="the scenarios to run, e.g. 1,5 (default: all)")
    parser.add_argument("--steady-load", nargs=4,
                        # scenario 5's load process
                        metavar=("URL", "CHARGERS", "SECONDS", "INTERVAL"), help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.steady_load:
        raise_open_files()
        url, chargers, seconds, interval = options.steady_load
        print(json.dumps(asyncio.run(steady_heartbeats(url, int(chargers), float(seconds),
                                                       float(interval)))))
        return 0
    if options.quick:
        options.chargers, options.rounds, options.concurrent = 20, 5, 100
        options.seconds, options.repeat = 3, 1
        options.many, options.many_seconds = 200, 5
    scenarios = set(options.scenarios.split(","))
    pin(LOAD_CORE)()

    python = [sys.executable]
    candidates = [
        ("floor", python + [str(FLOOR)]),
        ("mock, output to a file", python + [str(MOCK)]),
        ("mock --quiet", python + [str(MOCK), "--quiet"]),
    ]
    print("machine: %s, %d cores, Python %s, websockets %s" % (
        os.uname().machine, os.cpu_count() or 0, sys.version.split()[0], websockets.__version__))
    with tempfile.TemporaryDirectory() as output_dir:
        if "1" in scenarios:
            scenario_1(options, candidates, output_dir)
        if "6" in scenarios:
            scenario_1(options, candidates, output_dir, OCPP201)
        if "2" in scenarios:
            scenario_2(options, python, output_dir)
        if "3" in scenarios:
            scenario_3(options, python, output_dir)
        if "4" in scenarios:
            scenario_4(options, python, output_dir)
        if "5" in scenarios:
            scenario_5(options, python, output_dir)
        start_up(python, output_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
