"""Settings and CLI: config.py, --help and --version, and flag mistakes as one line and exit 2."""

import shutil
import socket
import subprocess

import pytest

import ocpp_mock_server as mock
from conftest import (
    ROOT,
    SERVER,
    ServerProcess,
    server_command,
)


def test_default_address_comes_from_config_py(tmp_path):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    shutil.copy(SERVER, tmp_path / SERVER.name)
    config = (
        (ROOT / "config.py").read_text().replace("ws://127.0.0.1:60003", f"ws://127.0.0.1:{port}")
    )
    (tmp_path / "config.py").write_text(config)
    server = ServerProcess(
        script=tmp_path / SERVER.name, port_args=(), stdin=subprocess.DEVNULL
    ).wait_ready()
    try:
        assert server.url == f"ws://127.0.0.1:{port}"
    finally:
        assert server.stop() == 0


def test_default_address_without_config_py(tmp_path):
    assert mock.config_default_address(str(tmp_path / "missing.py")) == ("127.0.0.1", 60003)
    (tmp_path / "config.py").write_text("this is not python (")
    assert mock.config_default_address(str(tmp_path / "config.py")) == ("127.0.0.1", 60003)


def test_config_py_is_the_chargers_configuration():
    import config

    configuration = config.Configurations()
    assert configuration._protocols == ["ocpp1.6"]
    configuration._useMockServer = True
    assert configuration.getServerAddress() == "ws://127.0.0.1:60003"
    configuration._useMockServer = False
    assert configuration.getServerAddress() != "ws://127.0.0.1:60003"


def test_help_and_version():
    result = subprocess.run(  # a fresh interpreter, as a user starts it
        server_command("--help", real=True), capture_output=True, text=True, timeout=10
    )
    assert result.returncode == 0
    for flag in (
        "--host",
        "--port",
        "--dialect",
        "--strict",
        "--auto-start-after",
        "--call-timeout",
    ):
        assert flag in result.stdout


# Items 11 and 12: fail closed, and every flag checked at the door.
@pytest.mark.parametrize(
    "args, message",
    [
        (["--charger-ids", ""], "--charger-ids: must not be empty"),
        (["--charger-ids", ","], "--charger-ids ',' names no charge point id"),
        (["--charger-ids", " , "], "--charger-ids ' , ' names no charge point id"),
        (["--basic-auth", ""], "--basic-auth: must not be empty"),
        (["--basic-auth-hex", ""], "--basic-auth-hex: must not be empty"),
        (["--port", "99999"], "--port: 99999 is out of range: give 0 to 65535"),
        (["--port", "http"], "--port: 'http' is not a whole number"),
        (["--heartbeat-interval", "-1"], "--heartbeat-interval: -1 is out of range"),
        (["--max-message-size", "0"], "--max-message-size: 0 is out of range: give 1024 to"),
        (["--call-timeout", "0"], "--call-timeout: 0 is out of range: give 0.1 to 86400"),
        (["--call-timeout", "nan"], "--call-timeout: nan is out of range"),
        (["--auto-start-after", "inf"], "--auto-start-after: inf is out of range"),
        (["--id-tag", "X" * 24], "--id-tag: an idTag is 1 to 20 characters (CiString20), got 24"),
        (["--tag", "T" * 21 + "=Blocked"], "expected TAG=STATUS"),
    ],
)
def test_flag_mistakes_exit_2_with_one_line(capsys, args, message):
    with pytest.raises(SystemExit) as exited:
        mock.parse_settings(args)
    assert exited.value.code == 2
    error = capsys.readouterr().err
    assert message in error and "Traceback" not in error, error


def test_an_out_of_range_port_is_one_line_from_the_command_line():
    result = subprocess.run(
        server_command("--port", "99999"),
        capture_output=True,
        text=True,
        timeout=10,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 2 and "99999 is out of range" in result.stderr
    assert "Traceback" not in result.stderr
    assert (
        result.stderr.strip()
        .splitlines()[-1]
        .endswith("--port: 99999 is out of range: give 0 to 65535")
    )
