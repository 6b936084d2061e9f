"""Service files: the unit passes `systemd-analyze verify`, the plist parses, no password leaks.

Paths in these tests contain a space, a `%` and a quote on purpose: each must survive
systemd's specifier and quoting rules (a `%i` left undoubled would resolve to an instance
name and `verify` would report a missing executable).
"""

from __future__ import annotations

import os
import plistlib
import shutil
import subprocess
from pathlib import Path

import pytest

from clerk.config import Settings
from clerk.services import (
    install_workers,
    render_launchd_plist,
    render_systemd_unit,
    service_commands,
    service_path,
    uninstall_workers,
)

pytestmark = pytest.mark.timeout(60)

PASSWORD = "s3cret-pa55"
SETTINGS = Settings(
    database_url=f"postgresql://clerk:{PASSWORD}@db.example:5432/clerk",
    fetch_workers=2, ocr_workers=8, extraction_workers=0, compilation_workers=1,
    deploy_workers=1, shutdown_grace=42.5,
)


@pytest.fixture
def machine(tmp_path: Path) -> dict[str, Path]:
    """A working directory with an awkward name, an executable clerkd and a .env."""
    work = tmp_path / "clerk home %i 'x'"
    work.mkdir()
    # systemd refuses quotes in an executable's path (tested below), not in other paths
    bin_dir = tmp_path / "venv %n" / "bin"
    bin_dir.mkdir(parents=True)
    executable = bin_dir / "clerkd"
    executable.write_text("#!/bin/sh\nexit 0\n")
    executable.chmod(0o755)
    env_file = work / ".env"
    env_file.write_text(f"DATABASE_URL={SETTINGS.database_url}\n")
    env_file.chmod(0o600)
    return {"work": work, "executable": executable, "env_file": env_file}


def verify(unit: Path, *, user: bool, runtime_dir: Path) -> subprocess.CompletedProcess[str]:
    """`systemd-analyze verify` without a running systemd.

    In a container there is no systemd as PID 1, yet verify works for system units; for
    user units it needs XDG_RUNTIME_DIR to set up a manager (without it: "Failed to
    initialize manager: No such device or address"). --man=no skips checking man pages.
    """
    command = ["systemd-analyze", "verify", "--man=no", str(unit)]
    env = {**os.environ, "SYSTEMD_LOG_LEVEL": "notice"}
    if user:
        command.insert(1, "--user")
        runtime_dir.mkdir(mode=0o700, exist_ok=True)
        env["XDG_RUNTIME_DIR"] = str(runtime_dir)
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=30)


needs_systemd_analyze = pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                                           reason="systemd-analyze is not installed")


@needs_systemd_analyze
@pytest.mark.parametrize("system", [False, True], ids=["user", "system"])
def test_rendered_unit_passes_systemd_analyze_verify(
        machine: dict[str, Path], tmp_path: Path, system: bool) -> None:
    dest = tmp_path / "units"
    [unit] = install_workers(SETTINGS, platform="linux", system=system, dest_dir=dest,
                             executable=machine["executable"], env_file=machine["env_file"],
                             working_dir=machine["work"], user="root" if system else None)
    assert unit == dest / "clerkd.service"
    result = verify(unit, user=not system, runtime_dir=tmp_path / "runtime")
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "", result.stderr  # not even an unknown-key warning


@needs_systemd_analyze
def test_verify_catches_a_missing_executable(machine: dict[str, Path], tmp_path: Path) -> None:
    """The check above means something: a unit pointing nowhere fails verify."""
    unit = tmp_path / "clerkd.service"
    unit.write_text(render_systemd_unit(SETTINGS, executable=machine["executable"].parent / "missing",
                                        env_file=None, working_dir=machine["work"],
                                        system=True))
    result = verify(unit, user=False, runtime_dir=tmp_path / "runtime")
    assert result.returncode != 0
    assert "missing" in result.stderr


def test_unit_contents(machine: dict[str, Path]) -> None:
    text = render_systemd_unit(SETTINGS, executable=machine["executable"],
                               env_file=machine["env_file"], working_dir=machine["work"],
                               system=True, user="clerk")
    lines = text.splitlines()
    for expected in ("Type=notify", "NotifyAccess=main", "WatchdogSec=60", "Restart=always",
                     "RestartSec=5", "KillSignal=SIGTERM", "KillMode=mixed",
                     "TimeoutStopSec=58", "User=clerk", "WantedBy=multi-user.target",
                     'Environment="OCR_WORKERS=8"', 'Environment="EXTRACTION_WORKERS=0"',
                     'Environment="SHUTDOWN_GRACE=42.5"'):
        assert expected in lines
    quoted_dir = str(machine["work"]).replace("%", "%%")
    assert f"WorkingDirectory={quoted_dir}" in lines
    assert f"EnvironmentFile={quoted_dir}/.env" in lines
    quoted_bin = str(machine["executable"]).replace("%", "%%")
    assert f'ExecStart="{quoted_bin}"' in lines
    assert "ExecReload=/bin/kill -HUP $MAINPID" in lines
    assert PASSWORD not in text and "DATABASE_URL" not in text


def test_user_unit_has_no_user_line_and_targets_default(machine: dict[str, Path]) -> None:
    text = render_systemd_unit(SETTINGS, executable=machine["executable"], env_file=None,
                               working_dir=machine["work"])
    assert "WantedBy=default.target" in text.splitlines()
    lines = text.splitlines()
    assert not [line for line in lines if line.startswith(("User=", "EnvironmentFile="))]
    assert "network-online" not in text
    with pytest.raises(ValueError, match="system units"):
        render_systemd_unit(SETTINGS, executable=machine["executable"], env_file=None,
                            working_dir=machine["work"], user="clerk")


def test_systemd_quoting_of_awkward_values() -> None:
    text = render_systemd_unit(SETTINGS, executable="/opt/my apps/clerkd", env_file=None,
                               working_dir="/srv/100%", args=("--name", 'a "b" $HOME\\x'))
    assert 'ExecStart="/opt/my apps/clerkd" "--name" "a \\"b\\" $$HOME\\\\x"' in text
    assert "WorkingDirectory=/srv/100%%" in text.splitlines()
    with pytest.raises(ValueError, match="control character"):
        render_systemd_unit(SETTINGS, executable="/bin/clerkd", env_file=None,
                            working_dir="/srv/x\nExecStartPre=/bin/rm")
    with pytest.raises(ValueError, match="quotes"):
        render_systemd_unit(SETTINGS, executable="/opt/it's/clerkd", env_file=None,
                            working_dir="/srv")
    with pytest.raises(ValueError, match="absolute"):
        render_systemd_unit(SETTINGS, executable="clerkd", env_file=None, working_dir="/srv")
    with pytest.raises(ValueError, match="user name"):
        render_systemd_unit(SETTINGS, executable="/bin/clerkd", env_file=None,
                            working_dir="/srv", system=True, user="root\nUser=x")


def test_launchd_plist(machine: dict[str, Path], tmp_path: Path) -> None:
    dest = tmp_path / "LaunchAgents"
    [path] = install_workers(SETTINGS, platform="darwin", dest_dir=dest,
                             executable=machine["executable"], working_dir=machine["work"])
    assert path == dest / "org.clerk.clerkd.plist"
    raw = path.read_bytes()
    plist = plistlib.loads(raw)
    assert plist["Label"] == "org.clerk.clerkd"
    assert plist["ProgramArguments"] == [str(machine["executable"])]
    assert plist["WorkingDirectory"] == str(machine["work"])
    assert plist["KeepAlive"] is True and plist["RunAtLoad"] is True
    assert plist["ExitTimeOut"] == 58
    assert plist["StandardOutPath"] == str(Path.home() / "Library/Logs/clerk-clerkd.log")
    assert plist["StandardErrorPath"] == str(Path.home() / "Library/Logs/clerk-clerkd.err.log")
    env = plist["EnvironmentVariables"]
    assert env["OCR_WORKERS"] == "8" and env["EXTRACTION_WORKERS"] == "0"
    assert "DATABASE_URL" not in env
    assert PASSWORD.encode() not in raw
    assert b"'x'" in raw  # the quote in the directory name, escaped by plistlib as needed


def test_launchd_plist_can_carry_the_database_url_when_asked(machine: dict[str, Path]) -> None:
    raw = render_launchd_plist(SETTINGS, executable=machine["executable"],
                               working_dir="/srv/a<b&c", include_database_url=True)
    plist = plistlib.loads(raw)
    assert plist["EnvironmentVariables"]["DATABASE_URL"] == SETTINGS.database_url
    assert plist["WorkingDirectory"] == "/srv/a<b&c"
    assert b"/srv/a&lt;b&amp;c" in raw


def test_install_and_uninstall_round_trip(machine: dict[str, Path], tmp_path: Path) -> None:
    dest = tmp_path / "units"
    assert install_workers(SETTINGS, platform="linux", dest_dir=dest, dry_run=True,
                           executable=machine["executable"], working_dir=machine["work"]) \
        == [dest / "clerkd.service"]
    assert not dest.exists()  # dry run wrote nothing
    [unit] = install_workers(SETTINGS, platform="linux", dest_dir=dest,
                             executable=machine["executable"], working_dir=machine["work"])
    text = unit.read_text()
    assert PASSWORD not in text
    assert "EnvironmentFile=" in text  # found the .env in the working directory
    assert oct(unit.stat().st_mode & 0o777) == "0o644"
    assert uninstall_workers(platform="linux", dest_dir=dest, dry_run=True) == [unit]
    assert unit.exists()
    assert uninstall_workers(platform="linux", dest_dir=dest) == [unit]
    assert not unit.exists()
    assert uninstall_workers(platform="linux", dest_dir=dest) == []


def test_default_locations_and_next_steps(monkeypatch: pytest.MonkeyPatch,
                                          tmp_path: Path) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    user_unit = service_path(platform="linux")
    assert user_unit == tmp_path / ".config/systemd/user/clerkd.service"
    assert service_path(platform="linux", system=True) == Path(
        "/etc/systemd/system/clerkd.service")
    assert service_path(platform="darwin") == tmp_path / "Library/LaunchAgents/org.clerk.clerkd.plist"
    assert service_commands(user_unit, platform="linux")[:2] == [
        "systemctl --user daemon-reload", "systemctl --user enable --now clerkd"]
    assert service_commands(user_unit, platform="linux", system=True,
                            action="uninstall")[0] == "systemctl disable --now clerkd"
    with pytest.raises(ValueError, match="service manager"):
        service_path(platform="win32")


def test_missing_env_file_is_an_error_not_a_broken_unit(machine: dict[str, Path],
                                                        tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="env file"):
        install_workers(SETTINGS, platform="linux", dest_dir=tmp_path,
                        executable=machine["executable"], working_dir=machine["work"],
                        env_file=machine["work"] / "missing.env")
