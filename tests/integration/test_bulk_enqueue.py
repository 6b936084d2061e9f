"""Bulk enqueue writes COPY's text format by hand: every value must survive it exactly."""

from __future__ import annotations

import pytest

from pgqueue import Queue, SerializationError
from pgqueue.enqueue import COPY_THRESHOLD

HOSTILE = ["back\\slash", "tab\there", "new\nline", "cr\rhere", "\\N", "quote\"s 'and' more",
           "ünïcødé ✓", "\\\\t", "end\\", "{\"json\": [1, 2]}", "\\x00 not a nul", ""]


def test_hostile_values_survive_the_copy_path(app: Queue) -> None:
    @app.task(name="keep", queue="copy", timeout=7, priority=3)
    def keep(**kwargs: object) -> None:
        return None

    args = [{"i": i, "text": HOSTILE[i % len(HOSTILE)], "nested": {"k": HOSTILE[-i % len(HOSTILE)]}}
            for i in range(COPY_THRESHOLD + 50)]
    ids = app.enqueue_many(keep, args, tag="tab\tand\\back\nslash")
    assert len(ids) == len(set(ids)) == len(args)
    for job_id, sent in zip(ids, args, strict=True):
        job = app.get_job(job_id)
        assert job.args == sent
        assert (job.tag, job.priority, job.timeout_seconds, job.queue, job.task) == \
            ("tab\tand\\back\nslash", 3, 7, "copy", "keep")
    with app.group("copy-group", tag="g\\1") as group:
        members = group.enqueue_many(keep, args)
    assert [app.get_job(i).args for i in members[:20]] == args[:20]
    assert app.get_group(group.id).total == len(args)


def test_a_bad_arg_midway_through_a_copy_inserts_nothing_and_spares_the_callers_transaction(
        app: Queue) -> None:
    """Rows are written to the COPY as they are made, so a bad one can come after the first
    rows have gone to the server: the COPY is abandoned with them, and the caller's own
    transaction carries on."""
    @app.task(name="keep", queue="copy")
    def keep(**kwargs: object) -> None:
        return None

    args: list[dict[str, object]] = [{"i": i} for i in range(COPY_THRESHOLD * 3)]
    args[COPY_THRESHOLD * 2] = {"i": float("nan")}
    with app.connect() as conn:
        with conn.transaction():
            before = app.enqueue(keep, {"i": "before"}, conn=conn)
            with pytest.raises(SerializationError, match="not JSON"):
                app.enqueue_many(keep, args, conn=conn)
            after = app.enqueue(keep, {"i": "after"}, conn=conn)
    with app.connect() as conn:
        rows = conn.execute("SELECT args FROM pgqueue.jobs WHERE queue = 'copy' ORDER BY id").fetchall()
    assert [row["args"] for row in rows] == [{"i": "before"}, {"i": "after"}]
    assert [app.get_job(i).args for i in (before, after)] == [{"i": "before"}, {"i": "after"}]
