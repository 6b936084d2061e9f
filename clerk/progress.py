"""`clerk enqueue --wait`: follow site runs to their end and say what is happening.

Each tick reads every waited site's run with one statement (`site_runs`), whatever the
number of sites, then sleeps on LISTEN until something changes (`Changes`): a job of a
waited site finished (pgqueue's '<schema>.tag_finished', payload the site) or jobs were
added to one of clerk's queues (a run's next stage); with `FALLBACK_SECONDS` as the
longest sleep (a retry's backoff ends, or a worker dies, without a notification), and at
most one read per `SETTLE_SECONDS` however fast pages finish. Then it prints:

- one line per stage change per site: `testville: fetch → ocr 14 pages`, ...;
- once, after a short grace, for each queue a run waits on that no live worker serves:
  `no worker is running for queue fetch: start clerkd (or clerk worker fetch)`;
- on a terminal, a progress bar redrawn in place; elsewhere (cron, CI, a pipe) a plain
  progress line every `plain_every` seconds, so a log shows the wait is alive.

The percent is weighted by work, not averaged per site: a run counts one step for its
fetch, one per page and one per follow-up (two compiles, extract, deploy), so a 2-page
site that is done moves the total less than the 14 pages of another still being read.
A run's page count is known once its fetch has listed the documents, so the total grows
then, and the percent can step back; it is what is known, not a guess.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import psycopg
from psycopg import sql

from clerk.config import QUEUES
from clerk.pipeline import Pipeline
from clerk.status import read_runs
from pgqueue.db import translate_errors

FOLLOW_UPS = 4  # compile, extract, compile+entities, deploy
ENDED = ("complete", "failed", "cancelled", "stopped", "idle", "never run")
NO_WORKER_GRACE = 2.0  # seconds: a worker started with the enqueue has this long to appear
FALLBACK_SECONDS = 2.0  # the longest sleep without a notification (also NO_WORKER_GRACE's)
SETTLE_SECONDS = 0.2  # after a wake, notifications are gathered this long: one read for all
WAIT_ROLE = "clerk:wait"
PLAIN_EVERY = 10.0
BAR_WIDTH = 30


def run_units(run: dict[str, Any]) -> tuple[int, int]:
    """(steps done, steps in all) of one run: the fetch, its pages and its follow-ups."""
    if run["fetch_job_id"] is not None and run["state"] == "complete" and not run["pages_total"] \
            and run["group_id"] is None:
        return 1, 1  # nothing new: the run was its fetch
    total = 1 + run["pages_total"] + FOLLOW_UPS
    if run["state"] in ENDED:
        return total, total
    fetch = run["stages"][0]["state"]
    done = 1 if fetch in ("done", "failed", "cancelled") else 0
    done += run["pages_total"] - run["pages_pending"]
    done += sum(1 for step in run["steps"] if step["state"] in ("succeeded", "failed", "cancelled"))
    return min(done, total), total


def weighted_percent(runs: list[dict[str, Any]]) -> tuple[float, int, int]:
    """The percent of all the waited runs' steps that are done, with the two counts."""
    done = total = 0
    for run in runs:
        run_done, run_total = run_units(run)
        done += run_done
        total += run_total
    return (100.0 * done / total if total else 100.0), done, total


def stage_label(run: dict[str, Any]) -> str:
    """Where a run is: its current stage, or how it ended."""
    state = str(run["state"])
    if state == "complete":
        return ("complete" if not run["pages_failed"]
                else f"complete, {run['pages_failed']} of {run['pages_total']} pages failed")
    if state in ENDED:
        stopped_at = next((s for s in run["stages"] if s["state"] in ("failed", "cancelled")),
                          None)
        if stopped_at is None:
            return state
        error = f": {stopped_at['error']}" if stopped_at.get("error") else ""
        return f"{state} at {stopped_at['stage']}{error}"
    stage = next((s for s in run["stages"] if s["state"] not in ("done", "skipped")), None)
    if stage is None:
        return "finishing"
    label = str(stage["stage"])
    if label == "ocr":
        label = f"ocr {run['pages_total']} pages"
    if stage["state"] == "retrying":
        label += " (retrying)"
    return label


def run_summary(run: dict[str, Any]) -> str:
    """A run in a few words, for the periodic progress line."""
    if run["state"] not in ENDED and run["stage"] == "ocr":
        return (f"{run['site']} ocr {run['pages_total'] - run['pages_pending']}/"
                f"{run['pages_total']} pages")
    return f"{run['site']} {stage_label(run)}"


def outcome_problem(run: dict[str, Any]) -> str | None:
    """Why a finished run counts as not done (for the exit code), or None."""
    if run["state"] == "complete":
        if run["pages_failed"]:
            return f"{run['site']}: {run['pages_failed']} of {run['pages_total']} pages failed"
        return None
    return f"{run['site']}: {stage_label(run)}"


@dataclass
class Waiter:
    """The state of one `--wait`: what was last said about each site and queue."""

    echo: Callable[[str], None]
    tty: bool
    write: Callable[[str], None]
    clock: Callable[[], float] = time.monotonic
    no_worker_grace: float = NO_WORKER_GRACE
    plain_every: float = PLAIN_EVERY
    labels: dict[str, str] = field(default_factory=dict)
    unserved_since: dict[str, float] = field(default_factory=dict)
    announced: set[str] = field(default_factory=set)
    last_plain: float | None = None
    bar_shown: bool = False

    def say(self, line: str) -> None:
        """A line that stays, printed above the progress bar on a terminal."""
        if self.bar_shown:
            self.write("\r\x1b[K")
            self.bar_shown = False
        self.echo(line)

    def observe(self, runs: list[dict[str, Any]]) -> None:
        now = self.clock()
        for run in runs:
            label = stage_label(run)
            before = self.labels.get(run["site"])
            if label != before:
                self.say(f"{run['site']}: {label}" if before is None
                         else f"{run['site']}: {before} → {label}")
                self.labels[run["site"]] = label
        self._workers(runs, now)
        self._progress(runs, now)

    def _workers(self, runs: list[dict[str, Any]], now: float) -> None:
        unserved = {queue for run in runs if run["state"] not in ENDED
                    for queue in run["queues_without_worker"]}
        for queue in sorted(unserved):
            since = self.unserved_since.setdefault(queue, now)
            if queue not in self.announced and now - since >= self.no_worker_grace:
                self.say(f"no worker is running for queue {queue}: start clerkd "
                         f"(or clerk worker {queue})")
                self.announced.add(queue)
        served = {queue for run in runs for queue in run["served_queues"]}
        for queue in list(self.unserved_since):
            if queue not in unserved:
                del self.unserved_since[queue]
                if queue in self.announced:
                    self.announced.discard(queue)
                    if queue in served:  # not merely emptied by a burst worker now gone
                        self.say(f"a worker now serves queue {queue}")

    def _progress(self, runs: list[dict[str, Any]], now: float) -> None:
        percent, done, total = weighted_percent(runs)
        summary = "; ".join(run_summary(run) for run in runs)
        if self.tty:
            filled = int(BAR_WIDTH * percent / 100)
            self.write(f"\r\x1b[K[{'#' * filled}{'-' * (BAR_WIDTH - filled)}] {percent:3.0f}%"
                       f"  {summary}"[:200])
            self.bar_shown = True
        elif self.last_plain is None or now - self.last_plain >= self.plain_every:
            self.echo(f"progress {percent:.0f}% ({done}/{total} steps): {summary}")
            self.last_plain = now

    def finish(self) -> None:
        if self.bar_shown:
            self.write("\n")
            self.bar_shown = False


class Changes:
    """A LISTEN connection that wakes the waiter when its sites' jobs change."""

    def __init__(self, pipeline: Pipeline, sites: Iterable[str],
                 queues: Iterable[str] = QUEUES) -> None:
        self.sites = set(sites)
        store = pipeline.queue.store
        self.tag_channel = f"{store.schema}.tag_finished"
        self.conn = store.connect(autocommit=True, role=WAIT_ROLE, direct=True)
        with translate_errors():
            for channel in (self.tag_channel, *(f"{store.schema}.{queue}" for queue in queues)):
                self.conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))

    def _relevant(self, notice: psycopg.Notify) -> bool:
        return notice.channel != self.tag_channel or notice.payload in self.sites

    def wait(self, timeout: float, settle: float = SETTLE_SECONDS) -> bool:
        """Sleep until a relevant notification (True) or `timeout` (False); after a wake,
        gather what else arrives within `settle` seconds."""
        deadline = time.monotonic() + timeout
        with translate_errors():
            while (left := deadline - time.monotonic()) > 0:
                if any(self._relevant(n) for n in self.conn.notifies(timeout=left,
                                                                       stop_after=1)):
                    for _ in self.conn.notifies(timeout=settle):
                        pass
                    return True
        return False

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> Changes:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.close()


def wait_for_runs(pipeline: Pipeline, sites: list[str], waiter: Waiter,
                  fallback_seconds: float = FALLBACK_SECONDS) -> list[dict[str, Any]]:
    """Follow the sites' runs until none has a job left; their last state, site by site.
    One statement per tick for all the sites; between ticks, asleep on LISTEN."""
    try:
        with Changes(pipeline, sites) as changes:
            while True:
                runs = read_runs(pipeline, sites)
                waiter.observe(runs)
                if all(run["state"] in ENDED for run in runs):
                    return runs
                changes.wait(fallback_seconds)
    finally:
        waiter.finish()


__all__ = ["Changes", "Waiter", "outcome_problem", "run_units", "stage_label", "wait_for_runs",
           "weighted_percent"]
