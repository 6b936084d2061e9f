"""The two distributions (issue 19): `pgqueue-py` (packaging/pgqueue/: the queue alone)
and `clerk` (pyproject.toml: clerk, depending on pgqueue-py). Both build; the pgqueue
wheel goes alone into a new virtualenv (no system site-packages, its dependencies from the
package index, pip's cache inside tmp) and runs pgqueue/README.md there, block by block:
`pgqueue migrate` from the wheel, the task module, a `pgqueue worker` in the background,
and every Python example, whose output is checked."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import psycopg
import pytest

ROOT = Path(__file__).resolve().parents[2]
LIBRARY_README = ROOT / "pgqueue" / "README.md"
DISTRIBUTION = "pgqueue-py"
# What each Python block of pgqueue/README.md prints, in order (its prose says so too).
EXPECTED_OUTPUT = [
    ["queued 100"],
    ["{'sent': True, 'user': 7}", "sent on attempt 3",
     "failed pgqueue.errors.PermanentFailure: not an address: nobody"],
    ["10"],
]


def readme_blocks(path: Path) -> list[tuple[str, str]]:
    """(language, code) of each fenced block that names a language, in order."""
    blocks: list[tuple[str, str]] = []
    language: str | None = None
    lines: list[str] = []
    for line in path.read_text().splitlines():
        if language is None:
            if line.startswith("```") and line[3:].strip():
                language, lines = line[3:].strip(), []
        elif line.startswith("```"):
            blocks.append((language, "\n".join(lines) + "\n"))
            language = None
        else:
            lines.append(line)
    return blocks


def build(project: Path, out: Path, *, sdist: bool) -> None:
    argv = [sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out), str(project)]
    if not sdist:
        argv.insert(3, "--wheel")
    built = subprocess.run(argv, capture_output=True, text=True, timeout=600)
    assert built.returncode == 0, built.stdout + built.stderr


def metadata(wheel: Path) -> tuple[set[str], str]:
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        (meta,) = [n for n in names if n.endswith(".dist-info/METADATA")]
        return names, archive.read(meta).decode()


def requirements(meta: str) -> list[str]:
    return [line.split(":", 1)[1].strip() for line in meta.splitlines()
            if line.startswith("Requires-Dist:") and "extra ==" not in line]


def test_both_distributions_build_and_split_the_code(tmp_path: Path) -> None:
    build(ROOT / "packaging" / "pgqueue", tmp_path, sdist=True)  # the wheel from the sdist
    build(ROOT, tmp_path, sdist=False)
    (pgqueue_wheel,) = tmp_path.glob("pgqueue_py-*.whl")
    (clerk_wheel,) = tmp_path.glob("clerk-*.whl")
    names, meta = metadata(pgqueue_wheel)
    migrations = sorted(p.name for p in (ROOT / "sql" / "pgqueue" / "migrations").glob("*.sql"))
    assert {f"pgqueue/sql/pgqueue/migrations/{m}" for m in migrations} <= names
    assert {"pgqueue/__init__.py", "pgqueue/cli.py", "pgqueue/sql/pgqueue/queries.sql",
            "pgqueue/web/__init__.py"} <= names
    assert not [n for n in names if n.startswith("clerk") or "__pycache__" in n
                or n.endswith(".pyc") or "/sql/clerk/" in n]
    assert f"Name: {DISTRIBUTION}" in meta
    assert "pgqueue = pgqueue.cli:main" in metadata_file(pgqueue_wheel, "entry_points.txt")
    needs = {re.split(r"[<>=\[;]", r)[0].lower() for r in requirements(meta)}
    assert needs == {"psycopg", "psycopg-pool", "click", "cronsim", "prometheus-client"}
    # the long description is the library's README
    assert LIBRARY_README.read_text().splitlines()[0] in meta

    names, meta = metadata(clerk_wheel)
    assert not [n for n in names if n.startswith("pgqueue/") and not n.startswith(
        "pgqueue/sql/clerk/")], "the clerk wheel must not carry pgqueue's code or SQL"
    assert "pgqueue/sql/clerk/migrations/0001_sites.sql" in names and "clerk/cli.py" in names
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert f"{DISTRIBUTION}=={version}" in requirements(meta)
    ours = tomllib.loads((ROOT / "packaging" / "pgqueue" / "pyproject.toml").read_text())
    assert ours["project"]["version"] == version


def metadata_file(wheel: Path, name: str) -> str:
    with zipfile.ZipFile(wheel) as archive:
        (path,) = [n for n in archive.namelist() if n.endswith(f".dist-info/{name}")]
        return archive.read(path).decode()


def test_the_pgqueue_wheel_alone_runs_its_readme(tmp_path: Path, empty_db_url: str) -> None:
    build(ROOT / "packaging" / "pgqueue", tmp_path / "dist", sdist=False)
    (wheel,) = (tmp_path / "dist").glob("pgqueue_py-*.whl")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PGQUEUE_", "CLERK_", "PYTHON", "VIRTUAL_ENV", "PIP_"))
           and k != "DATABASE_URL"}
    env.update(HOME=str(home), PATH=f"{venv / 'bin'}:{env.get('PATH', '')}",
               PIP_CACHE_DIR=str(tmp_path / "pip-cache"), PIP_DISABLE_PIP_VERSION_CHECK="1")
    blocks = readme_blocks(LIBRARY_README)
    install = blocks[0][1].split("#")[0].strip()
    assert blocks[0][0] == "bash" and install == f"pip install {DISTRIBUTION}"
    # The release is not on the index yet: the wheel just built stands for it; its
    # dependencies come from the package index.
    installed = subprocess.run([str(venv / "bin" / "pip"), "install", "--quiet", str(wheel)],
                               env=env, capture_output=True, text=True, timeout=600)
    assert installed.returncode == 0, installed.stdout + installed.stderr
    python = str(venv / "bin" / "python")
    alone = subprocess.run(
        [python, "-c", "import importlib.util as u, pgqueue, sys; print(pgqueue.__file__); "
         "print([m for m in ('clerk', 'spacy', 'pytesseract', 'requests') if u.find_spec(m)])"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert alone.returncode == 0, alone.stderr
    assert alone.stdout.splitlines() == [
        str(venv / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}"
            / "site-packages" / "pgqueue" / "__init__.py"), "[]"]

    env["DATABASE_URL"] = empty_db_url
    work = tmp_path / "app"
    work.mkdir()
    outputs: list[list[str]] = []
    worker: subprocess.Popen[str] | None = None
    try:
        for language, code in blocks[1:]:
            if language == "python" and code.startswith("# file: "):
                name = code.splitlines()[0].removeprefix("# file: ").strip()
                (work / name).write_text(code)
            elif language == "python":
                ran = subprocess.run([python, "-c", code], cwd=work, env=env,
                                     capture_output=True, text=True, timeout=300)
                assert ran.returncode == 0, code + ran.stdout + ran.stderr
                outputs.append(ran.stdout.splitlines())
            elif language == "bash":
                for line in code.splitlines():
                    command = line.split("  #")[0].strip()
                    if command.startswith("pgqueue worker"):
                        worker = subprocess.Popen(["bash", "-c", f"exec {command}"], cwd=work,
                                                  env=env, text=True, stdout=subprocess.PIPE,
                                                  stderr=subprocess.STDOUT)
                    elif command:
                        ran = subprocess.run(["bash", "-c", command], cwd=work, env=env,
                                             capture_output=True, text=True, timeout=300)
                        assert ran.returncode == 0, command + ran.stdout + ran.stderr
            else:
                pytest.fail(f"a {language} block in pgqueue/README.md that no test runs")
        assert worker is not None, "the README starts no worker"
        assert outputs == EXPECTED_OUTPUT
        assert "COMMIT;" in (work / "pgqueue-migrations.sql").read_text()
        with psycopg.connect(empty_db_url) as conn:
            row = conn.execute("SELECT result FROM pgqueue.job_history "
                               "WHERE task = 'tasks.album_done'").fetchone()
        assert row == (8000,)
    finally:
        if worker is not None:
            worker.send_signal(signal.SIGTERM)
            out, _ = worker.communicate(timeout=120)
            print(out)
    assert worker.returncode == 0, out
