"""Run the mutation suite: for each mutation, a copy of the tree, the edit, the cited tests.

    python -m tests.mutations [--jobs 2] [--only ID,ID] [--git REV] [--list] [--json FILE] [--keep]

The working tree (or, with --git, a commit) is snapshotted once (without .git, .venv and
caches), so edits made while the run goes on do not leak into it. Each mutation gets its
own copy of the snapshot; pytest runs there with cwd and PYTHONPATH set to the copy, so the
copy's `pgqueue`, `clerk`, `sql/` and `tests` are imported (before the editable install's
/work/main path), also by the worker, `clerk` and `clerkd` subprocesses the tests start.
The run checks that once, up front.

Result per mutation: killed (a cited test failed), survived (all passed), error (pytest
could not run them: a missing test, a collection error), or drift (an edit's match count
differs from the catalog's, so the mutation was not applied: the tree changed under it).
Exit status 1 unless every mutation was killed.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from tests.mutations.catalog import MUTATIONS, Mutation

ROOT = Path(__file__).resolve().parents[2]
SKIP_AT_ROOT = {".git", ".venv", "build", "dist"}
SKIP_ANYWHERE = {"__pycache__", ".mypy_cache", ".ruff_cache", ".pytest_cache", ".hypothesis"}
TIMEOUT_SECONDS = 600


@dataclass
class Result:
    id: str
    outcome: str  # killed | survived | error | drift
    seconds: float
    detail: str


def _ignore(directory: str, names: list[str]) -> set[str]:
    skipped = {n for n in names if n in SKIP_ANYWHERE or n.endswith(".egg-info")}
    if Path(directory).resolve() == ROOT:
        skipped |= {n for n in names if n in SKIP_AT_ROOT}
    return skipped


def snapshot(into: Path, revision: str | None = None) -> Path:
    """The working tree as it is now, or a commit's tree (`git archive`)."""
    tree = into / "tree"
    if revision is None:
        shutil.copytree(ROOT, tree, ignore=_ignore, symlinks=True)
        return tree
    tree.mkdir()
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", revision], check=True,
                             capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
    return tree


def drift(tree: Path, mutations: Sequence[Mutation]) -> list[str]:
    """Every edit whose match count differs from the catalog's, as one line each."""
    problems = []
    for mutation in mutations:
        for edit in mutation.edits:
            path = tree / edit.file
            found = path.read_text().count(edit.search) if path.exists() else 0
            if found != edit.count:
                problems.append(f"mutation {mutation.id}: expected {edit.count} match"
                                f"{'es' if edit.count != 1 else ''} in {edit.file}, found {found}")
    return problems


def environment(copy: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTEST_ADDOPTS")}
    env.update(PYTHONPATH=str(copy), PYTHONDONTWRITEBYTECODE="1")
    return env


def check_imports(tree: Path) -> str | None:
    """None if the copy's own code is what Python imports there, else what went wrong."""
    probe = ("import clerk, pgqueue, tests; from pgqueue.sql import sql_root;"
             "print(pgqueue.__file__); print(clerk.__file__); print(tests.__file__); print(sql_root())")
    done = subprocess.run([sys.executable, "-c", probe], cwd=tree, env=environment(tree),
                          capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        return done.stderr.strip()
    outside = [line for line in done.stdout.split() if not Path(line).resolve().is_relative_to(tree)]
    return f"imported from outside the copy: {outside}" if outside else None


def apply(copy: Path, mutation: Mutation) -> None:
    for edit in mutation.edits:
        path = copy / edit.file
        text = path.read_text()
        assert text.count(edit.search) == edit.count, f"{mutation.id}: drift in {edit.file}"
        path.write_text(text.replace(edit.search, edit.replace))


def run_one(base: Path, work: Path, mutation: Mutation, keep: bool) -> Result:
    started = time.monotonic()
    copy = work / mutation.id
    shutil.copytree(base, copy, symlinks=True)
    try:
        apply(copy, mutation)
        command = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider",
                   "--no-header", *mutation.tests]
        try:
            done = subprocess.run(command, cwd=copy, env=environment(copy), capture_output=True,
                                  text=True, errors="replace", timeout=TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            return Result(mutation.id, "killed", time.monotonic() - started,
                          f"tests still running after {TIMEOUT_SECONDS} s (a hang counts as killed)")
        output = (done.stdout + done.stderr).strip().splitlines()
        summary = output[-1] if output else ""
        (work / f"{mutation.id}.log").write_text(done.stdout + done.stderr)
        if done.returncode == 0:
            outcome = "survived"
        elif done.returncode == 1:
            outcome = "killed"
        else:  # 2 interrupted/collection error, 4 usage (no such test), 5 nothing collected
            outcome = "error"
        return Result(mutation.id, outcome, time.monotonic() - started, summary)
    finally:
        if not keep:
            shutil.rmtree(copy, ignore_errors=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.mutations", description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=2, help="mutations run at once (default 2)")
    parser.add_argument("--only", default="", help="comma-separated mutation ids")
    parser.add_argument("--list", action="store_true", help="list the mutations and exit")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--keep", action="store_true", help="keep the copies and logs")
    parser.add_argument("--git", metavar="REV",
                        help="mutate this commit (git archive) instead of the working tree")
    parser.add_argument("--cite", type=Path,
                        help="JSON {mutation id: [test ids]} replacing the catalog's tests"
                             " (to measure an older set of tests)")
    options = parser.parse_args(argv)

    chosen = list(MUTATIONS)
    if options.cite:
        cited = json.loads(options.cite.read_text())
        chosen = [dataclasses.replace(m, tests=tuple(cited.get(m.id, m.tests))) for m in chosen]
    if options.only:
        wanted = options.only.split(",")
        unknown = sorted(set(wanted) - {m.id for m in MUTATIONS})
        if unknown:
            print(f"unknown mutation ids: {', '.join(unknown)}", file=sys.stderr)
            return 2
        chosen = [m for m in chosen if m.id in wanted]
    if options.list:
        for mutation in chosen:
            print(f"{mutation.id:28} {mutation.promise}\n{'':28} {' '.join(mutation.tests)}")
        return 0

    started = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="pgqueue-mutations-"))
    try:
        base = snapshot(work, options.git)
        problems = drift(base, chosen)
        for line in problems:
            print(line, file=sys.stderr, flush=True)
        drifted = {line.split(":")[0].removeprefix("mutation ") for line in problems}
        wrong = check_imports(base)
        if wrong:
            print(f"the copy does not import its own code: {wrong}", file=sys.stderr)
            return 1
        print(f"{len(chosen)} mutations, {options.jobs} at a time, copies of {ROOT} in {work}",
              flush=True)
        results = [Result(m.id, "drift", 0.0, "not run: the tree drifted (above)")
                   for m in chosen if m.id in drifted]
        with ThreadPoolExecutor(max_workers=max(1, options.jobs)) as pool:
            futures = [pool.submit(run_one, base, work, m, options.keep)
                       for m in chosen if m.id not in drifted]
            for future in futures:
                result = future.result()
                results.append(result)
                print(f"{result.outcome:8} {result.id:28} {result.seconds:6.1f} s  {result.detail}",
                      flush=True)
        wall = time.monotonic() - started
        for result in results[:len(drifted)]:
            print(f"{result.outcome:8} {result.id:28} {'':8}  {result.detail}")
        counts = {k: sum(r.outcome == k for r in results)
                  for k in ("killed", "survived", "error", "drift")}
        print(f"{counts['killed']} killed, {counts['survived']} survived, {counts['error']} errors,"
              f" {counts['drift']} drifted, in {wall:.0f} s")
        if options.json:
            options.json.write_text(json.dumps(
                {"wall_seconds": round(wall, 1),
                 "results": [r.__dict__ | {"seconds": round(r.seconds, 1)} for r in results]},
                indent=2) + "\n")
        return 0 if counts["killed"] == len(results) else 1
    finally:
        if not options.keep:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"copies and logs kept in {work}")


if __name__ == "__main__":
    sys.exit(main())
