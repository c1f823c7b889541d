"""Start ``python -m ocpp_mock_server ...`` (or ``python examples/demo_charger.py ...``) for the
tests in a few milliseconds of CPU instead of a quarter second: a forked copy of a Python that
has imported the server's dependencies once.

A fresh interpreter spends most of a server process's CPU importing asyncio, ssl, websockets and
the server's bytecode; the suite starts about a hundred such processes.  Here one *warm* process
per test worker (``serve``) imports all that once; each start is a small *launcher* process
(``run``, the process the test sees: its pid, its pipes, its exit status) that hands its command,
working folder, environment, open-files limit and standard streams to the warm process, which
forks a child that runs the command as ``python -m`` / ``python SCRIPT`` would, in a fresh
``__main__``.  The launcher passes on the signals it gets (SIGINT, SIGTERM, ...) and ends as the
child ends (same exit status, or killed by the same signal); if the launcher is killed (SIGKILL),
the warm process kills the child.  What cannot be the same (another Python or other interpreter
options, another PYTHON*/locale variable) runs as a real process: the launcher ``exec``s the real
command.  Tests of the process's start itself, and a terminal (pty) session, use real commands
(``server_command(..., real=True)`` in conftest.py).

Only the standard library.  The launcher imports as little as it can (``-I -S``; the C modules
``_socket`` and ``_signal``, ``marshal`` for its messages): it costs about 15 ms of CPU.
"""

import marshal
import os
import sys

FORWARDED_SIGNALS = ("SIGINT", "SIGTERM", "SIGHUP", "SIGQUIT", "SIGUSR1", "SIGUSR2", "SIGWINCH")
# Environment variables Python reads while it starts: a child whose values differ from the warm
# process's cannot be a fork of it.
STARTUP_VARIABLES = ("PYTHON", "LANG", "LC_", "TZ", "WEBSOCKETS_")
MAX_MESSAGE = 1 << 20
FD_SIZE = 4  # bytes of an int in SCM_RIGHTS data


def _startup_environment(environ) -> dict:
    return {name: value for name, value in environ.items() if name.startswith(STARTUP_VARIABLES)}


def _send(sock, message: dict, fds=()) -> None:
    """A message: its length (4 bytes) and its marshal, with ``fds`` passed along (SCM_RIGHTS)."""
    import _socket

    data = marshal.dumps(message)
    data = len(data).to_bytes(4, "little") + data
    if fds:
        rights = b"".join(fd.to_bytes(FD_SIZE, sys.byteorder) for fd in fds)
        sent = sock.sendmsg([data], [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, rights)])
        data = data[sent:]
    if data:
        sock.sendall(data)


def _receive(sock, buffer: bytearray):
    """One message, or None at end of stream; ``buffer`` holds what came after it."""
    while len(buffer) < 4 or len(buffer) < 4 + int.from_bytes(buffer[:4], "little"):
        if len(buffer) >= 4 and int.from_bytes(buffer[:4], "little") > MAX_MESSAGE:
            return None
        try:
            chunk = sock.recv(65536)
        except OSError:
            return None
        if not chunk:
            return None
        buffer += chunk
    size = int.from_bytes(buffer[:4], "little")
    message = marshal.loads(bytes(buffer[4 : 4 + size]))
    del buffer[: 4 + size]
    return message


# ------------------------------------------------------------------------------------ The launcher


def launch(address: str, command: list) -> None:
    """``run``: have the warm process at ``address`` run ``command`` (a full command line: Python,
    its options, ``-m module`` or a script, arguments) as this process; ``exec`` it if it cannot."""
    import _signal
    import _socket

    try:
        sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
        sock.connect("\0" + address)
        try:
            import resource

            limit = resource.getrlimit(resource.RLIMIT_NOFILE)
        except ImportError:
            limit = None
        umask = os.umask(0o22)
        os.umask(umask)
        request = dict(
            command=command, cwd=os.getcwd(), env=dict(os.environ), umask=umask, nofile=limit
        )
        _send(sock, request, fds=(0, 1, 2))
        buffer = bytearray()
        reply = _receive(sock, buffer)
    except OSError:
        reply = None
    if not reply or "pid" not in reply:
        os.execv(command[0], command)
    child = reply["pid"]

    def forward(number, _frame):
        try:
            os.kill(child, number)
        except ProcessLookupError:
            pass

    for name in FORWARDED_SIGNALS:
        if hasattr(_signal, name):
            _signal.signal(getattr(_signal, name), forward)
    # The child has the streams: this process holds them no longer (a pipe ends when it ends).
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    ended = _receive(sock, buffer)
    if ended is None:  # the warm process is gone: the child must not outlive its launcher
        forward(_signal.SIGKILL, None)
        os._exit(1)
    status = ended["status"]
    if os.WIFSIGNALED(status):
        number = os.WTERMSIG(status)
        _signal.signal(number, _signal.SIG_DFL)
        os.kill(os.getpid(), number)
        os._exit(128 + number)
    os._exit(os.WEXITSTATUS(status) if os.WIFEXITED(status) else 1)


# -------------------------------------------------------------------------------- The warm process


class Warm:
    """``serve``: import the server's dependencies, then fork a child per launcher."""

    def __init__(self, address: str, prefix: list, preload: list):
        import selectors
        import signal
        import socket

        self.startup_environment = _startup_environment(os.environ)
        self.prefix = prefix  # the command line's start this process stands for
        self.compiled = {}
        for item in preload:
            kind, _, name = item.partition(":")
            if kind == "script":
                self._code(os.path.abspath(name))
            else:
                __import__(name)
                if kind == "main":
                    del sys.modules[name]  # each child runs it afresh as __main__
        import gc

        gc.collect()
        gc.freeze()  # what the children inherit stays out of their collections (and unwritten)
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind("\0" + address)
        self.listener.listen(64)
        self.wakeup_read, wakeup_write = os.pipe()
        os.set_blocking(self.wakeup_read, False)
        os.set_blocking(wakeup_write, False)
        signal.set_wakeup_fd(wakeup_write)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        self.selector = selectors.DefaultSelector()
        self.selector.register(self.listener, selectors.EVENT_READ, "accept")
        self.selector.register(self.wakeup_read, selectors.EVENT_READ, "reap")
        self.selector.register(sys.stdin, selectors.EVENT_READ, "stdin")  # EOF: the tests ended
        self.children = {}  # pid -> launcher connection
        self.launchers = {}  # launcher connection -> pid

    def _code(self, path: str):
        stat = os.stat(path)
        key = (path, stat.st_mtime_ns, stat.st_size)
        if key not in self.compiled:
            with open(path, "rb") as source:
                self.compiled[key] = compile(source.read(), path, "exec", dont_inherit=True)
        return self.compiled[key]

    def serve(self):
        """Until the tests end; in a forked child, returns what to run."""
        while True:
            for key, _events in self.selector.select():
                if key.data == "stdin":
                    if not os.read(sys.stdin.fileno(), 4096):
                        return None
                elif key.data == "reap":
                    self._reap()
                elif key.data == "accept":
                    connection, _ = self.listener.accept()
                    work = self._start(connection)
                    if work is not None:
                        return work
                else:
                    self._launcher_ended(key.fileobj)

    def _reap(self):
        try:
            while os.read(self.wakeup_read, 4096):
                pass
        except BlockingIOError:
            pass
        while self.children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            connection = self.children.pop(pid, None)
            if connection is not None:
                self.launchers.pop(connection, None)
                self.selector.unregister(connection)
                try:
                    _send(connection, {"status": status})
                except OSError:
                    pass
                connection.close()

    def _launcher_ended(self, connection):
        """A launcher's connection ended before its child: the launcher was killed (SIGKILL)."""
        import signal

        try:
            if connection.recv(1):
                return
        except OSError:
            pass
        pid = self.launchers.pop(connection, None)
        self.selector.unregister(connection)
        connection.close()
        if pid is not None:
            self.children.pop(pid, None)
            try:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
            except OSError:
                pass

    def _start(self, connection):
        import array
        import socket

        fds = array.array("i")
        try:
            data, ancillary, _flags, _ = connection.recvmsg(
                MAX_MESSAGE, socket.CMSG_LEN(3 * fds.itemsize)
            )
            for level, kind, payload in ancillary:
                if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                    fds.frombytes(payload[: len(payload) - (len(payload) % fds.itemsize)])
            buffer = bytearray(data)
            request = _receive(connection, buffer)
            run = self._what_to_run(request) if request and len(fds) == 3 else None
        except (OSError, ValueError, EOFError, TypeError, KeyError):
            run = None
        if run is None:
            for fd in fds:
                os.close(fd)
            try:
                _send(connection, {"fallback": True})
            except OSError:
                pass
            connection.close()
            return None
        pid = os.fork()
        if pid == 0:
            return self._become_child(request, list(fds), run, connection)
        for fd in fds:
            os.close(fd)
        self.children[pid] = connection
        self.launchers[connection] = pid
        import selectors

        self.selector.register(connection, selectors.EVENT_READ, "launcher")
        try:
            _send(connection, {"pid": pid})
        except OSError:
            pass
        self._reap()  # a child that ended at once
        return None

    def _what_to_run(self, request):
        """("module", name) or ("script", path), if this process can run the command as asked."""
        command = request["command"]
        if command[: len(self.prefix)] != self.prefix:
            return _not_warm(command, "another interpreter or other options")
        startup = _startup_environment(request["env"])
        if startup != self.startup_environment:
            changed = set(startup.items()) ^ set(self.startup_environment.items())
            return _not_warm(command, f"start-up variables {sorted({k for k, _ in changed})}")
        rest = command[len(self.prefix) :]
        if len(rest) >= 2 and rest[0] == "-m":
            return ("module", rest[1], rest[2:])
        if rest and not rest[0].startswith("-"):
            return ("script", rest[0], rest[1:])
        return _not_warm(command, "not -m MODULE or a script")

    def _become_child(self, request, fds, run, connection):
        import signal

        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        self.selector.close()
        for sock in (self.listener, connection, *self.launchers):
            sock.close()
        os.close(self.wakeup_read)
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
        for fd in set(fds):
            if fd > 2:
                os.close(fd)
        os.chdir(request["cwd"])
        os.umask(request["umask"])
        if request["nofile"] is not None:
            import resource

            resource.setrlimit(resource.RLIMIT_NOFILE, tuple(request["nofile"]))
        os.environ.clear()
        os.environ.update(request["env"])
        _fresh_standard_streams("-u" in self.prefix or bool(os.environ.get("PYTHONUNBUFFERED")))
        kind, name, arguments = run
        if kind == "script":
            path = os.path.abspath(os.path.join(request["cwd"], name))
            return ("script", name, self._code(path), arguments)
        return ("module", name, None, arguments)


def _not_warm(command: list, reason: str) -> None:
    """None: the command runs as a fresh process; why, in OCPP_TESTS_WARM_LOG if that is set."""
    log = os.environ.get("OCPP_TESTS_WARM_LOG")
    if log:
        with open(log, "a", encoding="utf-8") as file:
            file.write(f"{reason}: {command}\n")
    return None


def _fresh_standard_streams(unbuffered: bool) -> None:
    """sys.stdin/stdout/stderr on fds 0-2 as a starting interpreter makes them (create_stdio)."""
    import io

    made = []
    for fd, name, old in (
        (0, "<stdin>", sys.stdin),
        (1, "<stdout>", sys.stdout),
        (2, "<stderr>", sys.stderr),
    ):
        writing = fd != 0
        buffering = 0 if (unbuffered and writing) else -1
        try:
            binary = open(fd, "wb" if writing else "rb", buffering, closefd=False)
        except OSError:
            made.append(None)
            continue
        raw = binary if buffering == 0 else binary.raw
        raw.name = name
        line_buffering = not unbuffered and (raw.isatty() or fd == 2)
        stream = io.TextIOWrapper(
            binary,
            encoding=old.encoding,
            errors=old.errors,
            newline="\n",
            line_buffering=line_buffering,
            write_through=unbuffered and writing,
        )
        stream.mode = "w" if writing else "r"
        made.append(stream)
    sys.stdin, sys.stdout, sys.stderr = made
    sys.__stdin__, sys.__stdout__, sys.__stderr__ = made


def run_child(work) -> None:
    """In the forked child: run the module or script as ``python -m`` / ``python SCRIPT`` would."""
    import runpy
    import types

    kind, name, code, arguments = work
    main = types.ModuleType("__main__")
    sys.modules["__main__"] = main
    if kind == "module":
        sys.argv = ["-m", *arguments]  # runpy puts the module's path in argv[0]
        sys.path[0] = os.getcwd()
        runpy._run_module_as_main(name, alter_argv=True)
    else:
        sys.argv = [name, *arguments]
        sys.path[0] = os.path.dirname(os.path.abspath(name))
        main.__dict__.update(  # as Python 3.9+ sets them: the script's absolute path
            __file__=os.path.abspath(name), __cached__=None, __builtins__=__builtins__
        )
        exec(code, main.__dict__)


def main(argv: list) -> None:
    if argv[1] == "run":  # warm_start.py run ADDRESS -- COMMAND...
        launch(argv[2], argv[4:])
    elif argv[1] == "serve":  # warm_start.py serve ADDRESS PREFIX_JSON [import:|main:|script:X...]
        import json

        warm = Warm(argv[2], json.loads(argv[3]), argv[4:])
        sys.stdout.write("ready\n")
        sys.stdout.flush()
        work = warm.serve()
        if work is not None:
            run_child(work)


if __name__ == "__main__":
    main(sys.argv)
