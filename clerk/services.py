"""Install clerkd as a service: a systemd unit on Linux, a launchd agent on macOS.

The templates live in `systemd/clerkd.service` and `launchd/clerkd.plist`. The unit gets
the worker counts as `Environment=` lines and reads DATABASE_URL through
`EnvironmentFile=` from the .env file, so the password never lands in a unit file that
`systemctl cat` shows to anyone. Values are quoted for systemd (spaces, quotes, `%`
specifiers, `$` expansion) and the plist is written by plistlib, which escapes XML.

Nothing here runs systemctl or launchctl: `service_commands()` says what to run next,
and the CLI prints it.
"""

from __future__ import annotations

import logging
import math
import os
import plistlib
import re
import shutil
import stat
import string
import sys
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from clerk.config import QUEUES, Settings

__all__ = [
    "LAUNCHD_LABEL",
    "SERVICE_NAME",
    "ServiceFile",
    "install_workers",
    "render_launchd_plist",
    "render_service",
    "render_systemd_unit",
    "service_commands",
    "service_enabled",
    "service_path",
    "uninstall_workers",
    "write_service",
]

log = logging.getLogger(__name__)

SERVICE_NAME = "clerkd"
LAUNCHD_LABEL = "org.clerk.clerkd"
STOP_MARGIN_SECONDS = 15  # after the grace period: record results, release leases, exit
_REPO_ROOT = Path(__file__).resolve().parent.parent
_USER_NAME = re.compile(r"^[a-z_][a-z0-9_-]{0,30}\$?$")


# Only `${name}` is a placeholder, so `$MAINPID` in a unit passes through untouched.
_PLACEHOLDER = r"""
    \$(?:
      (?P<escaped>\$(?=\{)) |
      \{(?P<braced>[_a-z][_a-z0-9]*)\} |
      (?P<named>(?!)) |
      (?P<invalid>(?!))
    )
"""


class _Template(string.Template):
    """string.Template with braced placeholders only (see _PLACEHOLDER)."""

    pattern = _PLACEHOLDER  # type: ignore[assignment]  # a str here; Template compiles it


def _template(relative: str) -> str:
    """A template from the package (wheel) or, in a checkout, from the repository root."""
    packaged = resources.files("clerk").joinpath("service_templates", relative)
    if packaged.is_file():
        return packaged.read_text(encoding="utf-8")
    return (_REPO_ROOT / relative).read_text(encoding="utf-8")


# -- systemd ------------------------------------------------------------------------------

def _plain(value: str, what: str) -> str:
    """A value systemd takes verbatim: no line breaks, and `%` doubled (specifiers)."""
    if any(ord(char) < 32 or ord(char) == 127 for char in value):
        raise ValueError(f"{what} contains a control character: {value!r}")
    return value.replace("%", "%%")


def _quoted(value: str, what: str, *, expands_variables: bool) -> str:
    """One double-quoted word: backslashes and quotes escaped, `%` (and `$`) doubled."""
    text = _plain(value, what).replace("\\", "\\\\").replace('"', '\\"')
    if expands_variables:  # ExecStart= expands $NAME; Environment= does not
        text = text.replace("$", "$$")
    return f'"{text}"'


def _absolute(path: Path | str, what: str) -> str:
    text = str(path)
    if not os.path.isabs(text):
        raise ValueError(f"{what} must be an absolute path, not {text!r}")
    if text != text.strip():
        raise ValueError(f"{what} must not start or end with spaces: {text!r}")
    return text


def _environment(settings: Settings) -> dict[str, str]:
    """What the service is started with: the worker counts and the grace period."""
    values = {f"{queue.upper()}_WORKERS": str(settings.workers_for(queue)) for queue in QUEUES}
    values["SHUTDOWN_GRACE"] = f"{settings.shutdown_grace:g}"
    return values


def _stop_timeout(settings: Settings) -> int:
    return math.ceil(settings.shutdown_grace) + STOP_MARGIN_SECONDS


def render_systemd_unit(
    settings: Settings,
    *,
    executable: Path | str,
    env_file: Path | str | None,
    working_dir: Path | str,
    system: bool = False,
    user: str | None = None,
    args: tuple[str, ...] = (),
) -> str:
    """The clerkd unit text. A user unit unless `system`; `user` (system units only) is
    the account clerkd runs as. `env_file=None` leaves out EnvironmentFile=."""
    if user is not None and not system:
        raise ValueError("User= is for system units; a user unit runs as its owner")
    if user is not None and not _USER_NAME.match(user):
        raise ValueError(f"not a valid user name: {user!r}")
    program = _absolute(executable, "executable")
    if set(program) & set("'\"\\"):
        # systemd refuses these in an executable's path ("contains special characters")
        raise ValueError(f"systemd cannot run an executable whose path has quotes or "
                         f"backslashes: {program!r}; install clerk elsewhere")
    words = [program, *args]
    exec_start = " ".join(_quoted(word, "ExecStart", expands_variables=True) for word in words)
    environment = "\n".join(
        "Environment=" + _quoted(f"{name}={value}", "Environment", expands_variables=False)
        for name, value in _environment(settings).items()
    )
    values = {
        "network": "Wants=network-online.target\nAfter=network-online.target" if system else "",
        "exec_start": exec_start,
        "working_dir": _plain(_absolute(working_dir, "working_dir"), "working_dir"),
        "user": f"User={user}" if user else "",
        "environment": environment,
        "environment_file": "" if env_file is None else
        "EnvironmentFile=" + _plain(_absolute(env_file, "env_file"), "env_file"),
        "timeout_stop": str(_stop_timeout(settings)),
        "wanted_by": "multi-user.target" if system else "default.target",
    }
    rendered = []
    for line in _template("systemd/clerkd.service").splitlines():
        # a line that is just an optional placeholder disappears when that value is empty
        match = re.fullmatch(r"\$\{([a-z_]+)\}", line)
        if match and not values.get(match.group(1)):
            continue
        rendered.append(_Template(line).substitute(values))
    return "\n".join(rendered) + "\n"


# -- launchd ------------------------------------------------------------------------------

def _fill(node: Any, values: dict[str, Any]) -> Any:
    """Substitute placeholders in every string of a loaded plist; a string that is one
    placeholder becomes the value itself, keeping its type (an int stays an int)."""
    if isinstance(node, dict):
        return {key: _fill(value, values) for key, value in node.items()}
    if isinstance(node, list):
        return [_fill(item, values) for item in node]
    if isinstance(node, str):
        whole = re.fullmatch(r"\$\{([a-z_]+)\}", node)
        if whole:
            return values[whole.group(1)]
        return _Template(node).substitute(values)
    return node


def _log_dir(system: bool) -> Path:
    return Path("/Library/Logs") if system else Path.home() / "Library" / "Logs"


def render_launchd_plist(
    settings: Settings,
    *,
    executable: Path | str,
    working_dir: Path | str,
    system: bool = False,
    user: str | None = None,
    include_database_url: bool = False,
    args: tuple[str, ...] = (),
) -> bytes:
    """The clerkd launchd plist. DATABASE_URL goes in only with `include_database_url`
    (clerkd otherwise reads it from the .env file in `working_dir`)."""
    environment = _environment(settings)
    logs = _log_dir(system)
    values: dict[str, Any] = {
        "label": LAUNCHD_LABEL,
        "executable": _absolute(executable, "executable"),
        "working_dir": _absolute(working_dir, "working_dir"),
        # launchd's default PATH lacks Homebrew, where tesseract and pdftoppm live
        "path": os.environ.get("PATH", "/usr/bin:/bin:/usr/sbin:/sbin"),
        "exit_timeout": _stop_timeout(settings),
        "stdout_path": str(logs / "clerk-clerkd.log"),
        "stderr_path": str(logs / "clerk-clerkd.err.log"),
        **{name.lower(): value for name, value in environment.items()},
    }
    plist = _fill(plistlib.loads(_template("launchd/clerkd.plist").encode()), values)
    plist["ProgramArguments"].extend(args)
    if include_database_url and settings.database_url:
        plist["EnvironmentVariables"]["DATABASE_URL"] = settings.database_url
    if system and user:
        plist["UserName"] = user
    return plistlib.dumps(plist, sort_keys=False)


# -- install ------------------------------------------------------------------------------

def _platform(platform: str | None) -> str:
    name = platform or sys.platform
    if name.startswith("linux"):
        return "systemd"
    if name == "darwin":
        return "launchd"
    raise ValueError(f"no service manager support for {name!r}: run clerkd by hand")


def service_path(*, platform: str | None = None, system: bool = False,
                 dest_dir: Path | None = None) -> Path:
    """Where the unit or plist goes (dest_dir replaces the directory, for tests)."""
    kind = _platform(platform)
    if kind == "systemd":
        name = f"{SERVICE_NAME}.service"
        default = Path("/etc/systemd/system") if system else \
            Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config") / "systemd" / "user"
    else:
        name = f"{LAUNCHD_LABEL}.plist"
        default = Path("/Library/LaunchDaemons") if system else \
            Path.home() / "Library" / "LaunchAgents"
    return (dest_dir or default) / name


def service_commands(path: Path, *, platform: str | None = None, system: bool = False,
                     action: str = "install") -> list[str]:
    """The shell commands that activate (or, before uninstalling, stop) the service."""
    if _platform(platform) == "systemd":
        ctl = "systemctl" if system else "systemctl --user"
        if action == "install":
            commands = [f"{ctl} daemon-reload", f"{ctl} enable --now {SERVICE_NAME}"]
            if not system:  # keep running after logout, and start at boot
                commands.append("loginctl enable-linger $USER")
            return commands
        return [f"{ctl} disable --now {SERVICE_NAME}", f"{ctl} daemon-reload"]
    domain = "system" if system else "gui/$(id -u)"
    if action == "install":
        return [f"launchctl bootstrap {domain} {path}"]
    return [f"launchctl bootout {domain}/{LAUNCHD_LABEL}"]


def _default_executable() -> Path:
    found = shutil.which(SERVICE_NAME) or str(Path(sys.executable).parent / SERVICE_NAME)
    path = Path(found).absolute()
    if not os.access(path, os.X_OK):
        raise FileNotFoundError(f"no {SERVICE_NAME} executable at {path}; install clerk "
                                "(pip install clerk) or pass executable=")
    return path


def _warn_if_readable(env_file: Path) -> None:
    mode = env_file.stat().st_mode
    if mode & (stat.S_IRGRP | stat.S_IROTH) and "DATABASE_URL" in env_file.read_text():
        log.warning("%s holds DATABASE_URL and is readable by others; chmod 600 it",
                    env_file, extra={"action": "env_file_readable"})


@dataclass(frozen=True)
class ServiceFile:
    """A rendered unit or plist and where it goes; `env_file` is None when it has none."""

    path: Path
    content: bytes
    env_file: Path | None
    mode: int


def render_service(
    settings: Settings,
    *,
    platform: str | None = None,
    system: bool = False,
    dest_dir: Path | None = None,
    executable: Path | str | None = None,
    env_file: Path | str | None = None,
    working_dir: Path | str | None = None,
    user: str | None = None,
    include_database_url: bool = False,
) -> ServiceFile:
    """The unit (Linux) or plist (macOS) for this machine, not yet written.

    Defaults: the clerkd next to this Python, the current directory, and its .env file
    when there is one. A named `env_file` must exist; clerkd is then started with
    `--env-file` pointing at it, so a reload (SIGHUP) re-reads that file and not the
    working directory's .env.
    """
    kind = _platform(platform)
    work = Path(working_dir or Path.cwd()).absolute()
    program = Path(executable).absolute() if executable else _default_executable()
    environment_file: Path | None
    args: tuple[str, ...] = ()
    if env_file is not None:
        environment_file = Path(env_file).absolute()
        if not environment_file.is_file():
            raise FileNotFoundError(f"env file {environment_file} does not exist")
        args = ("--env-file", str(environment_file))
    else:
        candidate = work / ".env"
        environment_file = candidate if candidate.is_file() else None
    if environment_file is not None:
        _warn_if_readable(environment_file)
    if system and user is None and kind == "systemd":
        user = os.environ.get("SUDO_USER") or None
    path = service_path(platform=platform, system=system, dest_dir=dest_dir)
    if kind == "systemd":
        content = render_systemd_unit(settings, executable=program, env_file=environment_file,
                                      working_dir=work, system=system, user=user,
                                      args=args).encode()
    else:
        content = render_launchd_plist(settings, executable=program, working_dir=work,
                                       system=system, user=user, args=args,
                                       include_database_url=include_database_url)
    # 600 when the password is inside; a unit without secrets is readable, as systemd expects
    return ServiceFile(path, content, environment_file, 0o600 if include_database_url else 0o644)


def write_service(service: ServiceFile) -> Path:
    """Write a rendered service file atomically (never half a unit)."""
    service.path.parent.mkdir(parents=True, exist_ok=True)
    partial = service.path.with_name(service.path.name + ".tmp")
    partial.write_bytes(service.content)
    partial.chmod(service.mode)
    partial.replace(service.path)
    # DEBUG: the CLI prints what it wrote; an INFO line would say it twice
    log.debug("wrote %s", service.path, extra={"action": "service_installed"})
    return service.path


def install_workers(
    settings: Settings,
    *,
    platform: str | None = None,
    system: bool = False,
    dest_dir: Path | None = None,
    dry_run: bool = False,
    executable: Path | str | None = None,
    env_file: Path | str | None = None,
    working_dir: Path | str | None = None,
    user: str | None = None,
    include_database_url: bool = False,
) -> list[Path]:
    """Render (`render_service`) and write the service file; return what was written.

    With `dry_run` nothing is written. Follow with the commands from
    `service_commands()`; this function never runs systemctl or launchctl.
    """
    service = render_service(settings, platform=platform, system=system, dest_dir=dest_dir,
                             executable=executable, env_file=env_file,
                             working_dir=working_dir, user=user,
                             include_database_url=include_database_url)
    if not dry_run:
        write_service(service)
    return [service.path]


def service_enabled(path: Path, *, platform: str | None = None, system: bool = False) -> bool:
    """Whether `systemctl enable` linked the unit (a file check: systemctl is not run).
    Always False for launchd, which keeps no such link."""
    if _platform(platform) != "systemd":
        return False
    target = "multi-user.target" if system else "default.target"
    return (path.parent / f"{target}.wants" / path.name).is_symlink()


def uninstall_workers(
    *,
    platform: str | None = None,
    system: bool = False,
    dest_dir: Path | None = None,
    dry_run: bool = False,
) -> list[Path]:
    """Remove the unit or plist; return what was (or, with `dry_run`, would be) removed.

    Stop the service first (`service_commands(..., action="uninstall")`).
    """
    path = service_path(platform=platform, system=system, dest_dir=dest_dir)
    if not path.exists():
        return []
    if not dry_run:
        path.unlink()
        log.debug("removed %s", path, extra={"action": "service_removed"})
    return [path]
