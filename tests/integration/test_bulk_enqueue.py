"""Bulk enqueue writes COPY's text format by hand: every value must survive it exactly."""

from __future__ import annotations

from pgqueue import Queue
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
