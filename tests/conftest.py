"""Fixtures and helpers shared by the tests in this folder; tests import them by name:
``from conftest import Charger, charger_test, start_server``.

The tests talk to a real server over a real websocket (or real HTTP): the server as its own
process (``ServerProcess``, as a user runs it) or on a thread of this process
(``InProcessServer``: fast, and its state at hand); a ``Charger`` plays the charge point.
The official OCPP 1.6 JSON schemas of the ``ocpp`` package are the oracle for every payload
the server sends; the server itself never imports that package.
"""

import asyncio
import atexit
import base64
import functools
import importlib.util
import io
import json
import os
import py_compile
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path

import jsonschema
import pytest
import websockets

import ocpp_mock_server as mock

# pytest keeps each test module with its asserts rewritten in tests/__pycache__, unless
# PYTHONDONTWRITEBYTECODE is set: then each of the suite's xdist workers rewrote all of them
# again on every run (4-5 s of CPU a worker, a fifth of the suite's CPU).  The test modules are
# cached anyway (the folder is git-ignored); the setting is restored once they are collected.
_DONT_WRITE_BYTECODE, sys.dont_write_bytecode = sys.dont_write_bytecode, False

# ---------------------------------------------------------------------------------------- Schedule


def pytest_collection_modifyitems(items):
    """Longest first: ``@pytest.mark.slow(seconds)`` tests run before the others, the longest first.
    The workers take tests one by one (``--maxschedchunk 1`` in pytest.ini), so the long tests start
    at once on all workers and the short ones fill in around them: the suite ends when its longest
    test does, not when a long test drawn last does."""

    def expected_seconds(item) -> float:
        marker = item.get_closest_marker("slow")
        return marker.args[0] if marker else 0.0

    items.sort(key=expected_seconds, reverse=True)  # stable: the others keep their order
    sys.dont_write_bytecode = _DONT_WRITE_BYTECODE  # the test modules are in (see the imports)


@pytest.fixture(scope="session", autouse=True)
def servers_temporary_folder(tmp_path_factory):
    """The servers the tests start keep their temporary files folders (``ocpp-mock-files-*``)
    under pytest's own temporary folder, which pytest cleans, not in the system's /tmp."""
    folder = tmp_path_factory.mktemp("server-tmp")
    saved = os.environ.get("TMPDIR"), tempfile.tempdir
    os.environ["TMPDIR"], tempfile.tempdir = str(folder), str(folder)
    yield folder
    if saved[0] is None:
        del os.environ["TMPDIR"]
    else:
        os.environ["TMPDIR"] = saved[0]
    tempfile.tempdir = saved[1]


# -------------------------------------------------------------------------------- Paths and limits
# Paths are relative to the repository root, so the tests run from any folder.

ROOT = Path(__file__).resolve().parent.parent
HERE = ROOT  # the old name: the root was the folder of the single test file
SERVER = ROOT / "ocpp_mock_server.py"
# The ``ocpp`` package's folder, found without importing it (0.7 s of CPU in every worker).
OCPP_PACKAGE = Path(importlib.util.find_spec("ocpp").submodule_search_locations[0]).resolve()
SCHEMAS = OCPP_PACKAGE / "v16" / "schemas"
SCHEMAS_201 = OCPP_PACKAGE / "v201" / "schemas"
FIXTURE = ROOT / "fixtures" / "flexicharge-frames.jsonl"  # verbatim copy of shared/fixtures
SHARED_FIXTURE = ROOT.parent / "shared" / "fixtures" / "flexicharge-frames.jsonl"
DEMO_CHARGER = ROOT / "examples" / "demo_charger.py"
SCENARIOS = ROOT / "examples" / "scenarios"
GUIDE = ROOT / "docs" / "guide.md"
TIMEOUT = 5.0
# The server runs as ``python -m ocpp_mock_server``, from bytecode compiled once here: the same
# code as ``python ocpp_mock_server.py``, without compiling 6,000 lines again in each of the
# suite's ~70 server processes (a third of the CPU each one costs).  PYTHONPATH finds the module
# from any working directory.


def _server_bytecode_is_current() -> bool:
    """Whether the server's cached bytecode is the one Python would load for its source now (the
    pyc's header: magic number, timestamp-checked, the source's mtime and size)."""
    try:
        with open(importlib.util.cache_from_source(str(SERVER)), "rb") as pyc:
            header = pyc.read(16)
    except OSError:
        return False
    source = SERVER.stat()
    return header == importlib.util.MAGIC_NUMBER + b"\0\0\0\0" + (
        (int(source.st_mtime) & 0xFFFFFFFF).to_bytes(4, "little")
        + (source.st_size & 0xFFFFFFFF).to_bytes(4, "little")
    )


if not _server_bytecode_is_current():  # each worker compiled it again: 0.3 s of CPU
    py_compile.compile(str(SERVER), doraise=True)
if str(ROOT) not in os.environ.get("PYTHONPATH", "").split(os.pathsep):  # once: xdist's workers
    # inherit the controller's, and the warm processes need the same in every worker
    os.environ["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])
    )


def server_command(
    *args: str, script: Path = SERVER, python_options=(), real: bool = False
) -> list:
    """The command line of ``python ocpp_mock_server.py ARGS``: the module ``-m`` for the server
    beside the tests, the path for a copy elsewhere (``script``).  Started from a warm process
    (``warm_start.py``: the same code, the same process for the test, a tenth of the CPU) unless
    ``real``: where the test is about how a fresh interpreter starts the server."""
    module = ["-m", "ocpp_mock_server"] if Path(script) == SERVER else [str(script)]
    return warm_command([sys.executable, *python_options, *module, *args], real=real)


def demo_command(*args: str, real: bool = False) -> list:
    """``python -W error::DeprecationWarning examples/demo_charger.py ARGS`` (warm unless
    ``real``, as ``server_command``)."""
    python = [sys.executable, "-W", "error::DeprecationWarning"]
    return warm_command([*python, str(DEMO_CHARGER), *args], real=real)


# ------------------------------------------------------------------------- Warm process starts
# A fresh server or demo charger process costs a quarter second of CPU, most of it importing
# asyncio, ssl and websockets; the suite starts about a hundred.  warm_start.py forks them
# instead from a process per test worker (and per set of interpreter options) that has imported
# all that once (see its docstring).  OCPP_TESTS_REAL_PROCESSES=1 starts every one afresh.

WARM_START = Path(__file__).resolve().parent / "warm_start.py"
WARM_PRELOAD = ("main:ocpp_mock_server", "import:urllib.request", f"script:{DEMO_CHARGER}")
_warm_processes = {}  # interpreter options -> (address or None, process)
_warm_lock = threading.Lock()


def _warm_address(python_options: tuple):
    """The warm process's address for these interpreter options, started at first use; None
    where it cannot start (the command then runs as it is)."""
    shared = json.loads(os.environ.get("OCPP_TESTS_WARM", "{}"))
    if json.dumps(python_options) in shared:  # started by the xdist controller for every worker
        return shared[json.dumps(python_options)]
    with _warm_lock:
        if python_options not in _warm_processes:
            _warm_processes[python_options] = _start_warm(python_options)
        return _warm_processes[python_options][0]


def pytest_configure(config):
    """Under xdist, the controller starts the warm processes once for all its workers (they
    inherit the addresses in OCPP_TESTS_WARM): the servers' options and none (demo chargers)."""
    if os.environ.get("PYTEST_XDIST_WORKER") or not getattr(config.option, "numprocesses", None):
        return
    if os.environ.get("OCPP_TESTS_REAL_PROCESSES") or not sys.platform.startswith("linux"):
        return
    shared = {}
    for options in (("-W", "error::DeprecationWarning"), ()):
        address = _warm_address(options)
        if address is not None:
            shared[json.dumps(options)] = address
    os.environ["OCPP_TESTS_WARM"] = json.dumps(shared)


def _start_warm(python_options: tuple):
    address = f"ocpp-tests-warm-{os.getpid()}-{len(_warm_processes)}"
    prefix = [sys.executable, *python_options]
    process = subprocess.Popen(
        [*prefix, str(WARM_START), "serve", address, json.dumps(prefix), *WARM_PRELOAD],
        stdin=subprocess.PIPE,  # it ends when this process does (end of file)
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        cwd=ROOT,
    )
    ready = process.stdout.readline() == b"ready\n"
    return (address if ready else None), process


def warm_command(command: list, real: bool = False) -> list:
    """``command`` (a Python command line) as the warm launcher's, unless ``real``."""
    if real or os.environ.get("OCPP_TESTS_REAL_PROCESSES") or not sys.platform.startswith("linux"):
        return command
    options = ()
    for index, word in enumerate(command[1:], 1):  # the options end at -m or the script
        if word == "-m" or not word.startswith("-") and command[index - 1] not in ("-W", "-X"):
            options = tuple(command[1:index])
            break
    address = _warm_address(options)
    if address is None:
        return command
    return [sys.executable, "-I", "-S", str(WARM_START), "run", address, "--", *command]


# How long a server process may take to listen: it bounds a hang, it checks no speed.  A Python
# process's start-up costs about 0.4 s of CPU, and on two cores shared with other work that can
# stretch to seconds.
START_TIMEOUT = 20.0


# -------------------------------------------------- The oracle: the official OCPP 1.6 JSON schemas


_validators = {}
# The official schemas of each version, and the JSON Schema draft they are written in.
ORACLES = {
    "1.6": (SCHEMAS, jsonschema.Draft4Validator),
    "2.0.1": (SCHEMAS_201, jsonschema.Draft6Validator),
}


def schema_problems(name: str, payload, version: str = "1.6") -> list:
    """Errors of ``payload`` against the official schema ``name`` of ``version`` (e.g.
    "ResetResponse")."""
    if (version, name) not in _validators:
        folder, validator = ORACLES[version]
        schema = json.loads((folder / (name + ".json")).read_text(encoding="utf-8"))
        _validators[version, name] = validator(schema, format_checker=jsonschema.FormatChecker())
    return [error.message for error in _validators[version, name].iter_errors(payload)]


def assert_valid(name: str, payload, version: str = "1.6") -> None:
    problems = schema_problems(name, payload, version)
    assert not problems, f"{name} {json.dumps(payload)}: {problems}"


def v201_problems(name: str, payload) -> list:
    """Errors of ``payload`` against the official 2.0.1 schema ``name`` ("HeartbeatResponse")."""
    return schema_problems(name, payload, "2.0.1")


def assert_v201_valid(name: str, payload) -> None:
    assert_valid(name, payload, "2.0.1")


def _expected_rule(schema):
    """The lint's Rule class for ``schema`` (a 2.0.1 object may be open: OpenObject)."""
    kind = schema.get("type")
    bounded = "minimum" in schema or "maximum" in schema
    if "enum" in schema:
        return mock.Enum
    if kind == "string":
        return mock.DateTime if schema.get("format") == "date-time" else mock.String
    if kind == "integer":
        return mock.BoundedInteger if bounded else mock.Integer
    if kind == "number":
        return mock.BoundedNumber if bounded else mock.Decimal
    if kind == "object" and schema.get("additionalProperties", True) is not False:
        return mock.OpenObject
    if kind is None:
        return mock.Anything
    return {"boolean": mock.Boolean, "object": mock.Object, "array": mock.Array}[kind]


def _compare_rule(schema, rule, path, root, differences):
    if "$ref" in schema:
        schema = root["definitions"][schema["$ref"].split("/")[-1]]
    expected = _expected_rule(schema)
    if type(rule) is not expected:
        differences.append(f"{path}: {type(rule).__name__}, schema says {expected.__name__}")
        return
    if expected is mock.Enum and tuple(rule.values) != tuple(schema["enum"]):
        differences.append("{}: enum {}, schema {}".format(path, rule.values, schema["enum"]))
    if expected is mock.String and rule.max_length != schema.get("maxLength"):
        differences.append(
            "{}: maxLength {}, schema {}".format(path, rule.max_length, schema.get("maxLength"))
        )
    if expected in (mock.BoundedInteger, mock.BoundedNumber):
        bounds = (rule.minimum, rule.maximum)
        if bounds != (schema.get("minimum"), schema.get("maximum")):
            differences.append(f"{path}: bounds {bounds}, schema {schema}")
    if expected is mock.Array:
        if rule.min_items != schema.get("minItems", 0):
            differences.append(
                "{}: minItems {}, schema {}".format(path, rule.min_items, schema.get("minItems", 0))
            )
        if rule.max_items != schema.get("maxItems"):
            maximum = schema.get("maxItems")
            differences.append(f"{path}: maxItems {rule.max_items}, schema {maximum}")
        _compare_rule(schema["items"], rule.items, path + "[]", root, differences)
    if expected in (mock.Object, mock.OpenObject):
        _compare_object(schema, rule, path, root, differences)


def _compare_object(schema, rule, path, root, differences):
    properties = schema.get("properties", {})
    if set(properties) != set(rule.fields):
        differences.append(f"{path}: fields {sorted(rule.fields)}, schema {sorted(properties)}")
    if set(rule.required_names) != set(schema.get("required", [])):
        differences.append(
            "{}: required {}, schema {}".format(path, rule.required_names, schema.get("required"))
        )
    if (schema.get("additionalProperties", True) is not False) != isinstance(rule, mock.OpenObject):
        differences.append(f"{path}: the schema and the lint differ on extra fields")
    for name in set(properties) & set(rule.fields):
        _compare_rule(properties[name], rule.fields[name], path + "." + name, root, differences)


# ------------------------------------------------------- Servers: a subprocess, or in this process


class ServerProcess:
    """``python ocpp_mock_server.py`` in a subprocess, with its output collected."""

    def __init__(
        self,
        *args: str,
        stdin=subprocess.PIPE,
        cwd=None,
        script=SERVER,
        port_args=("--port", "0"),
        real: bool = False,
    ):
        command = server_command(
            *port_args,
            *args,
            script=script,
            python_options=("-W", "error::DeprecationWarning"),
            real=real,
        )
        self.proc = subprocess.Popen(
            command,
            stdin=stdin,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            encoding="utf-8",
            cwd=cwd,
            bufsize=1,
        )
        self.lines = []
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.url = None

    def _read(self):
        for line in self.proc.stdout:
            with self._changed:
                self.lines.append(line.rstrip("\n"))
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    def wait_ready(self):
        match = self.wait_for(r"listening on (wss?://\S+)", timeout=START_TIMEOUT)
        self.url = match.group(1)
        return self

    def mark(self) -> int:
        with self._changed:
            return len(self.lines)

    def wait_for(self, pattern: str, since: int = 0, timeout: float = TIMEOUT):
        """The first line from ``since`` on that matches ``pattern``; fails after ``timeout``."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for line in self.lines[since:]:
                    match = regex.search(line)
                    if match:
                        return match
                left = deadline - time.monotonic()
                if left <= 0 or (self.proc.poll() is not None and not self._reader.is_alive()):
                    raise AssertionError(f"no line matching {pattern!r}; output:\n{self.output()}")
                self._changed.wait(min(left, 0.1))

    def output(self, since: int = 0) -> str:
        with self._changed:
            return "\n".join(self.lines[since:])

    def settled_output(self) -> str:
        """Everything printed so far: an echo typed now comes back after every line queued before
        it."""
        token = f"settled {time.monotonic_ns()}"
        self.type("echo " + token)
        self.wait_for(">> " + token)
        return self.output()

    def type(self, line: str):
        """Type a console line."""
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._reader.join(TIMEOUT)
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                stream.close()
        return self.proc.returncode


@pytest.fixture
def start_server():
    """Start a server for the test: in this process by default (fast, its state at hand), or as a
    process (``process=True``, or any ServerProcess option) where the process itself is under
    test."""
    servers = []

    def start(*args, process: bool = False, **kwargs):
        server = (
            ServerProcess(*args, **kwargs).wait_ready()
            if process or kwargs
            else InProcessServer(*args)
        )
        servers.append(server)
        return server

    yield start
    for server in servers:
        code = server.stop()
        assert "Traceback" not in server.output(), server.output()
        assert code == 0, server.output()


@pytest.fixture(scope="module")
def table_server():
    """One server (in this process) for a module's table of cases."""
    server = InProcessServer("--no-boot-data", "--call-timeout", "1")
    yield server
    assert server.stop() == 0
    assert "Traceback" not in server.output() and " ERROR " not in server.output(), server.output()


class _Lines(io.StringIO):
    """A stream the in-process server prints to, readable while it runs."""


def _run_in_process(args, stdin_reader):
    out_stream = _Lines()
    options = mock.parse_settings(["--port", "0", "--no-boot-data", *args])
    out = mock.Output(stream=out_stream)
    result = {}
    thread = threading.Thread(
        target=lambda: result.setdefault(
            "code", asyncio.run(mock.run_server(options, out, stdin=stdin_reader))
        ),
        daemon=True,
    )
    thread.start()
    deadline = time.monotonic() + TIMEOUT
    while "listening on" not in out_stream.getvalue():
        assert time.monotonic() < deadline, out_stream.getvalue()
        time.sleep(0.02)
    url = re.search(r"listening on (ws://\S+)", out_stream.getvalue()).group(1)
    return url, out_stream, thread, result


class _Stream:
    """What an in-process server prints, readable while it runs."""

    def __init__(self):
        self.lines = []
        self._partial = ""
        self.changed = threading.Condition()

    def write(self, text):
        with self.changed:
            *done, self._partial = (self._partial + text).split("\n")
            self.lines.extend(done)
            self.changed.notify_all()

    def flush(self):
        pass


class InProcessServer:
    """The server on an event loop thread of this process, with a console pipe and its state at
    hand."""

    def __init__(self, *args: str):
        self.stream = _Stream()
        options = mock.parse_settings(["--port", "0", *args])
        out = self.out = mock.Output(stream=self.stream, quiet=options.quiet)
        read_end, write_end = os.pipe()
        self.console_pipe = os.fdopen(write_end, "w", encoding="utf-8")
        self.result = {}
        ready = threading.Event()

        def started(system, console):
            self.system, self.console, self.loop = system, console, asyncio.get_running_loop()
            ready.set()

        def serve():
            with os.fdopen(read_end, "rb") as stdin:
                self.result["code"] = asyncio.run(
                    mock.run_server(options, out, stdin=stdin, started=started)
                )
            ready.set()

        self.thread = threading.Thread(target=serve, daemon=True)
        self.thread.start()
        assert ready.wait(TIMEOUT), self.output()
        self.url = self.system.url
        self.port = int(self.url.rsplit(":", 1)[1])

    wait_for = ServerProcess.wait_for
    output = ServerProcess.output
    settled_output = ServerProcess.settled_output
    mark = ServerProcess.mark

    @property
    def lines(self):
        return self.stream.lines

    @property
    def _changed(self):
        return self.stream.changed

    @property
    def proc(self):  # for ServerProcess.wait_for: the "process" is alive while its thread is
        thread = self.thread

        class Alive:
            @staticmethod
            def poll():
                return None if thread.is_alive() else 0

        return Alive

    @property
    def _reader(self):
        return self.thread

    def type(self, line: str):
        self.console_pipe.write(line + "\n")
        self.console_pipe.flush()

    def call_in_loop(self, function, *args):
        """Run ``function(*args)`` on the server's loop and return its result."""
        done = threading.Event()
        result = {}

        def run_it():
            try:
                result["value"] = function(*args)
            finally:
                done.set()

        self.loop.call_soon_threadsafe(run_it)
        assert done.wait(TIMEOUT)
        return result.get("value")

    def stop(self):
        if self.thread.is_alive():
            self.loop.call_soon_threadsafe(self.system.stop)
        self.thread.join(TIMEOUT * 2)
        self.out.close()  # what the writer thread still holds
        self.console_pipe.close()
        assert not self.thread.is_alive(), self.output()
        return self.result.get("code")


@pytest.fixture
def in_process():
    servers = []

    def start(*args) -> InProcessServer:
        server = InProcessServer(*args)
        servers.append(server)
        return server

    yield start
    for server in servers:
        code = server.stop()
        text = server.output()
        assert "Traceback" not in text and " ERROR " not in text, text
        assert code == 0, text


class LoopThread:
    """An event loop on a thread of its own, for tests whose driver is synchronous (hypothesis)."""

    def __init__(self):
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coroutine, timeout: float = TIMEOUT * 2):
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def close(self):
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(TIMEOUT)
        self.loop.close()


# -------------------------------------------------------------------------------- A charger client


class WireFrame(list):
    """A frame as the test charger received it: equal to its JSON array, with names for the
    fields."""

    type_id = property(lambda self: self[0])
    message_id = property(lambda self: self[1])
    action = property(lambda self: self[2] if self[0] == 2 else None)  # of a CALL
    payload = property(lambda self: self[3] if self[0] == 2 else self[2] if self[0] == 3 else None)
    error_code = property(lambda self: self[2] if self[0] == 4 else None)
    error_description = property(lambda self: self[3] if self[0] == 4 else None)


class Charger:
    """A charger on a real websocket: sends CALLs, collects the server's CALLs."""

    def __init__(self, websocket):
        self.ws = websocket
        self.server_calls = []
        self.sequence = 0

    @classmethod
    async def connect(cls, url: str, charger_id: str = "CP-1", subprotocols=("ocpp1.6",)):
        target = url + "/" + charger_id if charger_id else url
        websocket = await websockets.connect(target, subprotocols=list(subprotocols) or None)
        return cls(websocket)

    async def close(self):
        await self.ws.close()

    async def receive(self, timeout: float = TIMEOUT):
        frame = json.loads(await asyncio.wait_for(self.ws.recv(), timeout))
        return WireFrame(frame) if isinstance(frame, list) else frame

    async def send_frame(self, frame):
        await self.ws.send(frame if isinstance(frame, (str, bytes)) else json.dumps(frame))

    async def reply_to(self, message_id: str, timeout: float = TIMEOUT):
        """Frames until the server's reply to ``message_id``; server CALLs are kept."""
        deadline = time.monotonic() + timeout
        while True:
            frame = await self.receive(max(0.01, deadline - time.monotonic()))
            if frame[0] == 2:
                self.server_calls.append(frame)
            elif frame[1] == message_id:
                return frame
            else:
                raise AssertionError(f"unexpected frame {frame!r} while waiting for {message_id}")

    async def replies_until(self, message_id: str, timeout: float = TIMEOUT):
        """Every reply up to and with the one to ``message_id`` (for frames sent without
        waiting)."""
        deadline = time.monotonic() + timeout
        replies = []
        while not replies or replies[-1][1] != message_id:
            frame = await self.receive(max(0.01, deadline - time.monotonic()))
            if frame[0] == 2:
                self.server_calls.append(frame)
            else:
                replies.append(frame)
        return replies

    async def call(self, action: str, payload, message_id: str = None):
        self.sequence += 1
        message_id = message_id or f"m{self.sequence}"
        await self.send_frame([2, message_id, action, payload])
        return await self.reply_to(message_id)

    async def expect_call(self, action: str, timeout: float = TIMEOUT):
        """The next CALL of ``action`` from the server (earlier ones first)."""
        deadline = time.monotonic() + timeout
        while True:
            for frame in self.server_calls:
                if frame[2] == action:
                    self.server_calls.remove(frame)
                    return frame
            frame = await self.receive(max(0.01, deadline - time.monotonic()))
            assert frame[0] == 2, f"expected a CALL from the server, got {frame!r}"
            self.server_calls.append(frame)

    async def no_frame_within(self, seconds: float):
        try:
            frame = await asyncio.wait_for(self.ws.recv(), seconds)
        except asyncio.TimeoutError:
            return
        raise AssertionError(f"expected no frame, got {frame!r}")

    async def boot(self, answer_boot_data: bool = True, flexicharge: bool = False):
        reply = await self.call(
            "BootNotification", {"chargePointVendor": "Test", "chargePointModel": "Mock-1"}
        )
        assert reply.payload["status"] == "Accepted"
        if answer_boot_data:
            call = await self.expect_call("DataTransfer")
            await self.answer(call, {"status": "Accepted"}, flexicharge=flexicharge)
        return reply

    async def answer(self, call, payload, flexicharge: bool = False):
        if flexicharge:
            await self.send_frame([3, call.message_id, call[2], payload])
        else:
            await self.send_frame([3, call.message_id, payload])


def run(coroutine):
    return asyncio.run(asyncio.wait_for(coroutine, 30))


def charger_test(test):
    """Run an ``async def`` test on an event loop of its own (30 s at most): the one helper every
    test that plays a charger uses.  Its fixtures are resolved as for any test."""

    @functools.wraps(test)
    def run_test(*args, **kwargs):
        return run(test(*args, **kwargs))

    return run_test


async def booted_charger(server, charger_id="CP-1", **kwargs):
    charger = await Charger.connect(server.url, charger_id, **kwargs)
    await charger.boot()
    server.wait_for(rf"{re.escape(charger_id)} <- DataTransfer\.conf")
    return charger


def _connect_kwargs(headers):
    # websockets.connect is the asyncio client from websockets 14 on, the legacy one before.
    name = (
        "additional_headers"
        if websockets.connect.__module__.startswith("websockets.asyncio")
        else "extra_headers"
    )
    return {name: headers}


def _refusal_status(exc):
    response = getattr(exc, "response", None)
    return response.status_code if response is not None else exc.status_code


def _basic(user: str, password: bytes) -> str:
    return "Basic " + base64.b64encode(user.encode() + b":" + password).decode()


async def _text_reply(charger, text: str, message_id: str):
    """Send a frame as typed (escapes and all) and return the server's reply to ``message_id``."""
    await charger.send_frame(text)
    return await charger.reply_to(message_id)


async def _connect_with_key(server, charger_id: str, key):
    """A Charger logged in with HTTP Basic ``key`` (None: no credentials); the refusal's status
    if refused."""
    headers = [("Authorization", _basic(charger_id, key))] if key is not None else []
    try:
        websocket = await websockets.connect(
            server.url + "/" + charger_id, subprotocols=["ocpp1.6"], **_connect_kwargs(headers)
        )
    except websockets.InvalidHandshake as exc:
        return _refusal_status(exc)
    return Charger(websocket)


# ---------------------------------------------------------------------------- Raw websocket frames
# Raw websocket frames, for what a websockets client refuses to send.


def _raw_handshake(port: int, path: str = "/CP-RAW", complete: bool = True) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
    request = (
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
        "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: ocpp1.6\r\n"
    )
    if not complete:
        sock.sendall(request.encode())  # no blank line: the handshake never completes
        return sock
    sock.sendall((request + "\r\n").encode())
    response = b""
    while b"\r\n\r\n" not in response:
        response += sock.recv(4096)
    assert response.startswith(b"HTTP/1.1 101"), response
    return sock


def _raw_send(sock: socket.socket, opcode: int, payload: bytes) -> None:
    mask = os.urandom(4)
    header = bytes([0x80 | opcode])
    if len(payload) < 126:
        header += bytes([0x80 | len(payload)])
    else:
        header += bytes([0x80 | 126]) + len(payload).to_bytes(2, "big")
    sock.sendall(
        header + mask + bytes(byte ^ mask[index % 4] for index, byte in enumerate(payload))
    )


def _raw_close_code(sock: socket.socket) -> int:
    data = b""
    while True:
        chunk = sock.recv(4096)
        assert chunk, "connection dropped without a close frame"
        data += chunk
        while len(data) >= 2:
            opcode, length = data[0] & 0x0F, data[1] & 0x7F
            if len(data) < 2 + length:
                break
            if opcode == 8:
                return int.from_bytes(data[2:4], "big")
            data = data[2 + length :]


# ----------------------------------------------------- Sample payloads and the FlexiCharge fixture


def flexicharge_frames():
    """The FlexiCharge charger's frames as it really sends them: {dir, note, frame}."""
    return [json.loads(line) for line in FIXTURE.read_text().splitlines() if line.strip()]


NOW = "2026-11-25T15:11:34.123Z"


# A valid request for every charger-initiated action.
CHARGER_REQUEST_SAMPLES = {
    "Authorize": {"idTag": "TAG-1"},
    "BootNotification": {"chargePointVendor": "Test", "chargePointModel": "Mock-1"},
    "DataTransfer": {"vendorId": "com.example", "messageId": "Ping", "data": "x"},
    "DiagnosticsStatusNotification": {"status": "Uploaded"},
    "FirmwareStatusNotification": {"status": "Installed"},
    "Heartbeat": {},
    "MeterValues": {
        "connectorId": 1,
        "transactionId": 1,
        "meterValue": [
            {
                "timestamp": NOW,
                "sampledValue": [
                    {"value": "1234", "measurand": "Energy.Active.Import.Register", "unit": "Wh"}
                ],
            }
        ],
    },
    "StartTransaction": {"connectorId": 1, "idTag": "TAG-1", "meterStart": 0, "timestamp": NOW},
    "StatusNotification": {
        "connectorId": 1,
        "errorCode": "NoError",
        "status": "Available",
        "timestamp": NOW,
    },
    "StopTransaction": {
        "transactionId": 1,
        "idTag": "TAG-1",
        "meterStop": 1500,
        "timestamp": NOW,
        "reason": "Remote",
    },
    "SecurityEventNotification": {"type": "FirmwareUpdated", "timestamp": NOW},
    "SignCertificate": {"csr": "-----BEGIN CERTIFICATE REQUEST-----"},
    "LogStatusNotification": {"status": "Uploaded", "requestId": 1},
    "SignedFirmwareStatusNotification": {"status": "Installed", "requestId": 1},
}


# A valid charger reply to every server-initiated action.
CHARGER_REPLY_SAMPLES = {
    "CancelReservation": {"status": "Accepted"},
    "ChangeAvailability": {"status": "Accepted"},
    "ChangeConfiguration": {"status": "Accepted"},
    "ClearCache": {"status": "Accepted"},
    "ClearChargingProfile": {"status": "Accepted"},
    "DataTransfer": {"status": "Accepted"},
    "GetCompositeSchedule": {"status": "Rejected"},
    "GetConfiguration": {
        "configurationKey": [{"key": "HeartbeatInterval", "readonly": False, "value": "60"}]
    },
    "GetDiagnostics": {"fileName": "diagnostics.log"},
    "GetLocalListVersion": {"listVersion": 1},
    "RemoteStartTransaction": {"status": "Accepted"},
    "RemoteStopTransaction": {"status": "Accepted"},
    "ReserveNow": {"status": "Accepted"},
    "Reset": {"status": "Accepted"},
    "SendLocalList": {"status": "Accepted"},
    "SetChargingProfile": {"status": "Accepted"},
    "TriggerMessage": {"status": "Accepted"},
    "UnlockConnector": {"status": "Unlocked"},
    "UpdateFirmware": {},
    "CertificateSigned": {"status": "Accepted"},
    "DeleteCertificate": {"status": "NotFound"},
    "ExtendedTriggerMessage": {"status": "Accepted"},
    "GetInstalledCertificateIds": {"status": "NotFound"},
    "GetLog": {"status": "Accepted", "filename": "security.log"},
    "InstallCertificate": {"status": "Accepted"},
    "SignedUpdateFirmware": {"status": "Accepted"},
}


LONG_ID = "x" * 37


# Item 3: fair CPU, the mechanisms (the numbers are in bench/bench.py's fairness scenario).
NEAR_MISS = {
    "connectorId": 1,
    "transactionId": 1,
    "meterValue": [
        {
            "timestamp": NOW,
            "sampledValue": [
                {"value": str(number), "measurand": "Energy.Active.Import.Registe"}
                for number in range(1100)
            ],
        }
    ],
}


SPEC_ERROR_CODES = set(mock.ERROR_CODES) - {"InternalError"}


# --------------------------------------------------------------------------------- Floods and fuzz


FLOODER = """
import asyncio, json, sys, websockets
async def flood(url, count):
    async with websockets.connect(url, subprotocols=["ocpp1.6"], max_queue=None) as ws:
        async def send_all():
            for number in range(count):
                await ws.send(json.dumps([2, "f%d" % number, "Heartbeat", {}]))
        async def receive_all():
            for number in range(count):
                assert json.loads(await ws.recv())[1] == "f%d" % number
        await asyncio.gather(send_all(), receive_all())
    print("flooded", count)
asyncio.run(flood(sys.argv[1], int(sys.argv[2])))
"""


VALID_CALLS = [
    [2, f"v{number}", action, payload]
    for number, (action, payload) in enumerate(CHARGER_REQUEST_SAMPLES.items())
]


RANDOM_STRINGS = [
    "",
    "x",
    "Heartbeat",
    "null",
    "\u0000",
    "\u001b[2J",
    "\u202e",
    "é€😀",
    "9" * 40,
    "{",
    "[2]",
]


def _random_value(rng, depth=0):
    choice = rng.randrange(9 if depth < 3 else 6)
    if choice == 0:
        return None
    if choice == 1:
        return rng.choice([True, False])
    if choice == 2:
        return rng.choice([0, -1, 1, 2, 3, 4, 2**63, -(2**31), 1.5, 1e308])
    if choice in (3, 4, 5):
        return rng.choice(RANDOM_STRINGS)
    if choice in (6, 7):
        return {
            rng.choice(RANDOM_STRINGS + ["connectorId", "idTag", "status"]): _random_value(
                rng, depth + 1
            )
            for _ in range(rng.randrange(3))
        }
    return [_random_value(rng, depth + 1) for _ in range(rng.randrange(3))]


def _mutate(rng, number):
    """A mutated CALL (as text) and, when it is CALL-shaped with a readable id, that id."""
    frame = json.loads(json.dumps(rng.choice(VALID_CALLS)))
    frame[1] = f"fz-{number}"
    mutation = rng.randrange(12)
    payload = frame[3]
    if mutation == 0 and payload:
        payload[rng.choice(list(payload))] = _random_value(rng)
    elif mutation == 1 and payload:
        del payload[rng.choice(list(payload))]
    elif mutation == 2:
        payload[rng.choice(RANDOM_STRINGS)] = _random_value(rng)
    elif mutation == 3:
        frame[2] = rng.choice(
            [_random_value(rng)] + [name for _, _, name, _ in VALID_CALLS] + ["Reset"]
        )
    elif mutation == 4:
        frame[3] = _random_value(rng)
    elif mutation == 5:
        frame = frame[: rng.randrange(5)] if rng.random() < 0.7 else frame + [_random_value(rng)]
    elif mutation == 6:
        frame[0] = rng.choice([0, 1, 3, 4, 5, "2", 2.0, None, True])
    elif mutation == 7:
        frame[1] = rng.choice([1000000 + number, LONG_ID + str(number), None, True, 2.5, ["x"]])
    elif mutation == 8:
        frame = _random_value(rng)
    text = json.dumps(frame)
    if mutation == 9:
        text = text[: rng.randrange(len(text))]
    elif mutation == 10:
        position = rng.randrange(len(text))
        text = text[:position] + rng.choice(['"', "]", ",", "\\", "\u0001", "{"]) + text[position:]
    try:
        parsed = json.loads(text)
    except ValueError:
        return text, None
    if (
        isinstance(parsed, list)
        and len(parsed) >= 2
        and type(parsed[0]) is int
        and parsed[0] == 2
        and type(parsed[1]) in (str, int, float)  # any number id is answered, as its text
    ):
        return text, parsed[1] if isinstance(parsed[1], str) else repr(parsed[1])
    return text, None


def _paths(value, prefix=()):
    """Every path to a value inside a sample payload (dict keys and list indices)."""
    yield prefix
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _paths(item, prefix + (key,))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _paths(item, prefix + (index,))


def _replaced(payload, path, new_value):
    if not path:
        return new_value
    copy = json.loads(json.dumps(payload))
    target = copy
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = new_value
    return copy


# -------------------------------------- Transcripts, the demo charger, scenario runs and the guide


def read_transcript(path: Path) -> list:
    records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    for record in records:
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", record["ts"]), record
        assert ("dir" in record) != ("event" in record), record
        if "dir" in record:
            assert record["dir"] in ("in", "out") and isinstance(record["frame"], str)
    return records


def check_transcript_is_a_whole_session(records: list, charger_id: str, flexicharge: bool) -> None:
    mine = [record for record in records if record["charger"] == charger_id]
    session = [record for record in mine if record.get("event") != "summary"]  # verdicts follow
    assert session[0]["event"] == "connect" and session[-1]["event"] == "disconnect"
    frames = [(record["dir"], json.loads(record["frame"])) for record in mine if "frame" in record]
    calls = [(direction, frame[2]) for direction, frame in frames if frame[0] == 2]
    in_order = [
        "BootNotification",
        "DataTransfer",
        "RemoteStartTransaction",
        "StartTransaction",
        "MeterValues",
        "RemoteStopTransaction",
        "StopTransaction",
    ]
    names = [name for _, name in calls]
    positions = [names.index(name) for name in in_order]
    assert positions == sorted(positions), names
    assert names.count("MeterValues") >= 3
    assert ("out", "DataTransfer") in calls and ("out", "RemoteStartTransaction") in calls
    # Every reply the server sent is valid by the official schema of its action.
    last_call_action = {}
    for direction, frame in frames:
        if direction == "in" and frame[0] == 2:
            last_call_action[frame[1]] = frame[2]
        elif direction == "out" and frame[0] == 3:
            action = last_call_action[frame[1]]
            if (
                flexicharge and action != "BootNotification"
            ):  # the dialect shows in its BootData reply
                assert frame[2] == action
            assert_valid(action + "Response", frame[-1])
        elif direction == "out" and frame[0] == 2:
            if flexicharge and frame[2] == "RemoteStopTransaction":
                assert set(frame[3]) == {"transactionID"}
            else:
                assert_valid(frame[2], frame[3])


_demo_charger_code = []  # examples/demo_charger.py compiled, once per process


class InProcessDemo:
    """``python examples/demo_charger.py ARGS`` run in this process, on an event loop thread of its
    own: the same code on a real websocket to 127.0.0.1, without the 0.3 s of CPU a process costs.
    Each run executes the module afresh (its own globals); its lines are kept in ``lines``, as it
    prints them.  For tests about the server; the demo charger's own command line, exit statuses
    and output stream are tested on the real process (``_demo``, tests/test_demo_charger.py)."""

    def __init__(self, *args: str):
        if not _demo_charger_code:
            source = DEMO_CHARGER.read_text(encoding="utf-8")
            _demo_charger_code.append(compile(source, str(DEMO_CHARGER), "exec"))
        module = {"__name__": "demo_charger", "__file__": str(DEMO_CHARGER)}
        exec(_demo_charger_code[0], module)
        self.lines = []
        module["say"] = lambda text: self.lines.append(
            "{} demo-charger {}".format(time.strftime("%H:%M:%S"), text)
        )
        options = module["parse_args"](list(args))

        async def main():  # what the process would exit with; its traceback in its lines
            try:
                return await module["main"](options)
            except Exception:
                self.lines.extend(traceback.format_exc().splitlines())
                return 1

        self._thread = LoopThread()
        self._future = asyncio.run_coroutine_threadsafe(main(), self._thread.loop)

    def wait(self, timeout: float = TIMEOUT) -> int:
        """Its exit status, once it has ended by itself (``--once``, a refusal...)."""
        return self._future.result(timeout)

    @property
    def stdout(self) -> str:
        return "\n".join(self.lines)

    def stop(self) -> None:
        """Ends it as a kill would, if it still runs (every task of its loop), and its loop."""

        async def cancel_all():
            tasks = asyncio.all_tasks() - {asyncio.current_task()}
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        try:
            self._thread.run(cancel_all(), TIMEOUT)
        finally:
            self._thread.close()

    async def stop_soon(self) -> None:
        """``stop`` from a coroutine, whose loop goes on (it may be the server the charger is
        closing its websocket with)."""
        await asyncio.get_running_loop().run_in_executor(None, self.stop)


def run_scenario(
    script: Path,
    *server_args: str,
    charger_args=("--meter-interval", "0.2"),
    charger_id="CP-1",
    start_charger=True,
    timeout=60,
    in_process=False,
):
    """Run ``--script`` with the demo charger; (exit status, server output).  ``in_process``: the
    server on a thread of this process (see run_scenario_in_process)."""
    if in_process:
        return _scenario_in_process(script, server_args, charger_args, charger_id, start_charger,
                                    timeout)
    server = subprocess.Popen(
        server_command(
            "--port",
            "0",
            "--script",
            str(script),
            *server_args,
            python_options=("-W", "error::DeprecationWarning"),
        ),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    charger, listening = None, None
    head = []
    # Up to the URL it listens on (a script that is invalid never listens).
    for line in server.stdout:
        head.append(line)
        listening = re.search(r"listening on (ws://\S+)", line)
        if listening:
            break
    try:
        if start_charger and listening:
            charger = InProcessDemo(f"{listening.group(1)}/{charger_id}", *charger_args)
        output, _ = server.communicate(timeout=timeout)
    finally:
        if server.poll() is None:
            server.kill()
            server.communicate()
        if charger is not None:
            charger.stop()
    return server.returncode, "".join(head) + output


# Item 13: the demo charger never hangs, and its data stays consistent.
def _demo(*args, timeout=TIMEOUT):
    started = time.monotonic()
    result = subprocess.run(
        demo_command(*args),
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )
    return result, time.monotonic() - started


def _normalized(line: str) -> str:
    """A line of output without what changes from run to run: times, ports, meter readings, ids."""
    line = re.sub(r"^\d\d:\d\d:\d\d\.\d{3} ", "", line)
    line = re.sub(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+Z", "TS", line)
    line = re.sub(r"127\.0\.0\.1:\d+", "127.0.0.1:PORT", line)
    line = re.sub(r"(Register|SoC|meterStop\":) ?\d+", r"\1 N", line)
    line = re.sub(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", "UUID", line)
    line = re.sub(r"seqNo \d+", "seqNo N", line)
    if " ended: " in line:  # a transaction's verdict: its energy, time, peak and counts vary
        line = re.sub(r"\d+(\.\d+)?", "N", line)
    return re.sub(r"\d+ s old", "N s old", line)


def guide_session(server, charger_id: str = "CP-1", *demo_args: str) -> list:
    """The guide's section 4 session: the demo charger (with ``demo_args``), `chargers` typed by
    the test; the server's lines."""
    mark = server.mark()
    demo = InProcessDemo(f"{server.url}/{charger_id}", "--once", *demo_args)
    try:
        assert demo.wait(30) == 0, demo.stdout
    finally:
        demo.stop()
    server.wait_for(rf"{charger_id} \*\* disconnected", since=mark)
    return [
        line
        for line in server.output(mark).splitlines()
        if f" {charger_id} " in line or ">> " in line
    ]


# ------------------------------------------------ HTTP: the API, the event stream, the file server
# Real HTTP over a real socket: a small asyncio client, so a test can be the
# charger and the API caller at once without one blocking the other.


class HttpReply:
    """An HTTP response: status, headers (lower-case names, last value wins) and body."""

    def __init__(self, status: int, headers: dict, body: bytes):
        self.status, self.headers, self.body = status, headers, body

    @property
    def json(self):
        return json.loads(self.body.decode("utf-8"))

    def __repr__(self):
        return f"HTTP {self.status} {self.body[:300]!r}"


def http_port(server) -> int:
    return int(server.wait_for(r">> web page and HTTP API: http://[\d.]+:(\d+)/").group(1))


async def http(
    server,
    method: str,
    path: str,
    body=None,
    headers=None,
    data: bytes = None,
    port: int = None,
    timeout: float = TIMEOUT,
) -> HttpReply:
    """One request to the server's HTTP port; ``body`` is sent as JSON, ``data`` as it is."""
    port = port or http_port(server)
    headers = dict({"Host": f"127.0.0.1:{port}"}, **(headers or {}))
    if body is not None:
        data = json.dumps(body).encode("utf-8")
        headers.setdefault("Content-Type", "application/json")
    if data is not None and "Transfer-Encoding" not in headers:
        headers.setdefault("Content-Length", str(len(data)))
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    head = "{} {} HTTP/1.1\r\n{}\r\n".format(
        method,
        path,
        "".join("{}: {}\r\n".format(*item) for item in headers.items()),
    )
    writer.write(head.encode("latin-1") + (data or b""))
    # The server closes after each response.
    response = await asyncio.wait_for(reader.read(), timeout)
    writer.close()
    head, _, payload = response.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    fields = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        fields[name.strip().lower()] = value.strip()
    return HttpReply(int(lines[0].split()[1]), fields, payload)


def http_sync(server, *args, **kwargs) -> HttpReply:
    return asyncio.run(http(server, *args, **kwargs))


class EventStream:
    """A reader of GET /api/events, event by event."""

    def __init__(self, reader, writer):
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, server, query: str = "", headers: str = "", receive_buffer: int = None):
        port = http_port(server)
        if receive_buffer is None:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
        else:  # a reader that never reads: the smallest window the kernel allows
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
            sock.connect(("127.0.0.1", port))
            reader, writer = await asyncio.open_connection(sock=sock)
        writer.write(
            (f"GET /api/events{query} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{headers}\r\n").encode(
                "latin-1"
            )
        )
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), TIMEOUT)
        assert head.startswith(b"HTTP/1.1 200"), head
        assert b"text/event-stream" in head
        stream = cls(reader, writer)
        while not hasattr(stream, "hello"):  # every stream starts with its hello event
            line = (await asyncio.wait_for(reader.readline(), TIMEOUT)).decode("utf-8")
            if line.startswith("data: "):
                stream.hello = json.loads(line[6:])
        return stream

    async def next(self, timeout: float = TIMEOUT) -> dict:
        """The next event: its JSON with its SSE id (``<run>:<number>``) checked against the JSON's;
        the stream's ``hello`` is kept as ``self.hello``."""
        event_id, name = None, None
        while True:
            line = (
                (await asyncio.wait_for(self.reader.readline(), timeout))
                .decode("utf-8")
                .rstrip("\n")
            )
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("id: "):
                event_id = line[4:]
            elif line.startswith("data: ") and name == "hello":
                self.hello, name = json.loads(line[6:]), None
            elif line.startswith("data: "):
                event = json.loads(line[6:])
                assert event_id == f"{self.hello['run']}:{event['id']}"
                return event

    async def until(self, predicate, timeout: float = TIMEOUT) -> list:
        """Events up to and with the first one ``predicate`` accepts."""
        deadline = time.monotonic() + timeout
        events = []
        while not events or not predicate(events[-1]):
            events.append(await self.next(max(0.01, deadline - time.monotonic())))
        return events

    def close(self):
        self.writer.close()


def is_frame(direction: str, label: str):
    return lambda event: (
        event["type"] == "frame" and event["direction"] == direction and event["label"] == label
    )


def _listing(server):
    return {
        entry["name"]: entry["size"] for entry in http_sync(server, "GET", "/files/").json["files"]
    }


def urllib_quote(text: str) -> str:
    import urllib.parse

    return urllib.parse.quote(text, safe="")


# ------------------------------------------------------------------------------ A headless browser
# A real headless browser (Debian's chromium and chromium-driver, driven by
# selenium).  .ci/run installs them and sets REQUIRE_BROWSER=1, so there a
# missing browser fails the test; elsewhere it is skipped with its reason.


def headless_browser(width: int = 1280, height: int = 900):
    """A headless Chromium, or a skip (a failure under REQUIRE_BROWSER=1) saying what is missing.
    Its ``quit()`` hands it back blank to this test worker, for the next test that asks for one:
    starting Chromium costs about a second of CPU."""
    while _idle_browsers:
        browser = _idle_browsers.pop()
        try:
            browser.driver.set_window_size(width, height)
        except Exception:  # it died or hangs: start another
            browser.close()
            continue
        return browser
    reason = None
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        reason = "selenium is not installed (pip install -r requirements-dev.txt)"
    browser, driver = (
        shutil.which("chromium") or shutil.which("chromium-browser"),
        shutil.which("chromedriver"),
    )
    if reason is None and (browser is None or driver is None):
        reason = "no chromium and chromedriver on PATH (apt-get install chromium chromium-driver)"
    if reason is not None:
        if os.environ.get("REQUIRE_BROWSER"):
            pytest.fail("REQUIRE_BROWSER is set but " + reason)
        pytest.skip("BROWSER TEST NOT RUN: " + reason)
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--window-size={width},{height}",
    ):
        options.add_argument(flag)
    return _PooledBrowser(webdriver.Chrome(service=Service(driver), options=options))


_idle_browsers = []  # this worker's browsers whose tests have ended


class _PooledBrowser:
    """A Selenium driver whose ``quit()`` blanks it (another origin, no cookies) and puts it back
    in ``_idle_browsers``; the rest is the driver's own."""

    def __init__(self, driver):
        self.driver = driver

    def __getattr__(self, name):
        return getattr(self.driver, name)

    def quit(self):
        try:
            self.driver.get("about:blank")
            self.driver.delete_all_cookies()
        except Exception:
            self.close()
            return
        _idle_browsers.append(self)

    def close(self):
        try:
            self.driver.quit()
        except Exception:
            pass


@atexit.register
def _quit_idle_browsers():
    while _idle_browsers:
        _idle_browsers.pop().close()


def wait_in_browser(driver, condition, what: str, timeout: float = 15.0):
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(
        driver, timeout, poll_frequency=0.05, ignored_exceptions=(StaleElementReferenceException,)
    ).until(lambda _: condition(), message=what)


# ------------------------------------------------------------------------------------ Certificates


def _self_signed_certificate(directory: Path):
    import datetime as dt
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ocpp-mock-test")])
    now = dt.datetime.now(dt.timezone.utc)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    certfile, keyfile = directory / "cert.pem", directory / "key.pem"
    certfile.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    keyfile.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return certfile, keyfile


def _certificate_authority(directory: Path, name: str = "Test CA"):
    """A CA certificate and key written as PEM files: (cert path, key path, cert, key)."""
    import datetime as _datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = _datetime.datetime.now(_datetime.timezone.utc)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _datetime.timedelta(days=1))
        .not_valid_after(now + _datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = (
        directory / (name.replace(" ", "_") + ".pem"),
        directory / (name.replace(" ", "_") + ".key"),
    )
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path, certificate, key


def _csr(common_name: str) -> str:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    request = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .sign(key, hashes.SHA256())
    )
    return request.public_bytes(serialization.Encoding.PEM).decode()


def _signed_by(ca_certificate, ca_key, directory: Path, common_name: str, server: bool = False):
    """A certificate for ``common_name`` signed by the CA, written with its key: (cert path, key
    path)."""
    import datetime as _datetime
    import ipaddress as _ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    now = _datetime.datetime.now(_datetime.timezone.utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca_certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _datetime.timedelta(days=1))
        .not_valid_after(now + _datetime.timedelta(days=30))
    )
    if server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(_ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
    certificate = builder.sign(ca_key, hashes.SHA256())
    cert_path, key_path = directory / (common_name + ".pem"), directory / (common_name + ".key")
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


# -------------------------------------------------------------------------------- A terminal (pty)


class Terminal:
    """The server in a pseudo-terminal ``columns`` wide and 24 lines high, typed at as a person
    would (stdlib pty); with ``console=False`` its input is not the terminal (output only)."""

    def __init__(self, home: Path, *args: str, columns: int = 200, console: bool = True):
        import fcntl
        import pty
        import struct
        import termios

        self.master, self.slave = pty.openpty()
        fcntl.ioctl(self.slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
        self.settings = termios.tcgetattr(self.slave)  # as the terminal was before the server ran
        env = {
            name: value for name, value in os.environ.items() if name not in ("COLUMNS", "LINES")
        }
        env.update(HOME=str(home), TERM="xterm")
        self.proc = subprocess.Popen(  # a fresh process: the terminal is its controlling one
            server_command("--port", "0", "--no-http", *args, real=True),
            stdin=self.slave if console else subprocess.DEVNULL,
            stdout=self.slave,
            stderr=self.slave,
            env=env,
            close_fds=True,
            start_new_session=True,
        )
        self.seen = b""

    def type(self, keys: str):
        os.write(self.master, keys.encode())

    def wait_for(self, pattern: str, count: int = 1, timeout: float = TIMEOUT) -> str:
        """The terminal's output so far, once ``pattern`` has appeared ``count`` times (escapes
        removed)."""
        import select

        deadline = time.monotonic() + timeout
        while True:
            text = self.seen.decode("utf-8", "replace")
            text = re.sub(r"[^\n]*\r\x1b\[K", "", text)  # a line cleared, as the terminal shows it
            text = re.sub(r"\x1b\[[0-9;]*[A-Za-z]|\r", "", text)
            if len(re.findall(pattern, text)) >= count:
                return text
            left = deadline - time.monotonic()
            assert left > 0, f"no {pattern!r} (x{count}) on the terminal:\n{text}"
            if select.select([self.master], [], [], min(left, 0.1))[0]:
                try:
                    self.seen += os.read(self.master, 65536)
                except OSError:  # the server has exited
                    pass

    def close(self):
        if self.proc.poll() is None:
            self.proc.terminate()
        self.proc.wait(TIMEOUT)
        os.close(self.master)
        os.close(self.slave)


# --- suite-slow ---
# Files that several tests read and none writes (a recorded session, say), made once per run of
# the suite: by the first of pytest-xdist's workers to ask, while the others wait for it on a
# lock, then read the same file.  Without xdist, once per process.  Each test still gets the whole
# file whichever worker made it, so the tests stay independent of their order and placement.


def _made_once_folder(tmp_path_factory) -> Path:
    base = tmp_path_factory.getbasetemp()
    # Under xdist a worker's folder is <this run's folder>/popen-gwN: the run's folder is shared.
    folder = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "made-once"
    folder.mkdir(exist_ok=True)
    return folder


class _RunLock:
    """An exclusive lock on a file, between the processes of this run (fcntl; where there is none,
    no lock: then each worker may make the file itself, which costs time, not correctness)."""

    def __init__(self, path: Path):
        self.path = path

    def __enter__(self):
        self.handle = open(self.path, "a")
        try:
            import fcntl
        except ImportError:
            return self
        fcntl.flock(self.handle, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc_info):
        self.handle.close()  # releases the lock


def made_once(tmp_path_factory, name: str, make) -> Path:
    """The file ``name`` of this run's shared folder, made by ``make(path)`` unless a worker has
    made it already (one that failed left none: the next to ask makes it again)."""
    path = _made_once_folder(tmp_path_factory) / name
    with _RunLock(path.with_name(name + ".lock")):
        if not path.exists():
            partial = path.with_name(f"{name}.{os.getpid()}.partial")
            make(partial)
            partial.replace(path)
    return path


async def without_blocking(function, *args):
    """``function(*args)`` (a server's ``wait_for``, say) on a thread, so that the caller's event
    loop goes on meanwhile: its chargers answer the server (a closing handshake that nobody
    answers holds a server that is ending for CLOSE_TIMEOUT, 2 s)."""
    return await asyncio.get_running_loop().run_in_executor(None, function, *args)


def exit_status(server, timeout: float = TIMEOUT):
    """The exit status of a server that ends by itself (a --script run, a --replay): a process's,
    or an in-process server's (what ``main`` exits with); fails after ``timeout``."""
    if isinstance(server, InProcessServer):
        server.thread.join(timeout)
        assert not server.thread.is_alive(), server.output()
        server.out.close()  # its last lines, which the output's writer may still hold
        return server.result.get("code")
    return server.proc.wait(timeout)


def run_scenario_in_process(script: Path, *server_args: str, **options):
    """``run_scenario`` with the server on a thread of this process: the same ``run_server`` that
    ``python ocpp_mock_server.py --script`` runs (its return value is the process's exit status),
    without the 0.2-0.4 s of CPU a process costs.  For tests about the script engine; the process
    and its command line are tested with ``run_scenario``.  (exit status, server output)."""
    return run_scenario(script, *server_args, in_process=True, **options)


def _scenario_in_process(script, server_args, charger_args, charger_id, start_charger, timeout):
    stream = _Stream()
    options = mock.parse_settings(["--port", "0", "--script", str(script), *server_args])
    out = mock.Output(stream=stream, quiet=options.quiet, wide=options.wide)
    chargers, result, running = [], {}, []

    def started(system, console):  # it listens: the charger connects (from a loop of its own)
        running.append((asyncio.get_running_loop(), system))
        if start_charger:
            chargers.append(InProcessDemo(f"{system.url}/{charger_id}", *charger_args))

    def serve():
        with open(os.devnull, "rb") as stdin:
            result["code"] = asyncio.run(
                mock.run_server(options, out, stdin=stdin, started=started)
            )

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        thread.join(timeout)
        if thread.is_alive():  # stopped as run_scenario kills its process, then failed
            for loop, system in running:
                loop.call_soon_threadsafe(system.stop)
            thread.join(TIMEOUT)
            raise AssertionError("the script did not end:\n" + "\n".join(stream.lines))
    finally:
        for charger in chargers:
            charger.stop()
        out.close()  # its last lines, which the output's writer may still hold
    return result.get("code"), "\n".join(stream.lines) + "\n"
