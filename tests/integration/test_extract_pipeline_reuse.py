"""Two extraction jobs in one worker process build the spaCy pipeline once (issue 21)."""

from __future__ import annotations

from pathlib import Path

import spacy

from clerk import extract
from clerk.config import Settings
from clerk.pipeline import build_pipeline
from clerk.sites import site_dir


def test_two_extraction_jobs_in_one_worker_build_the_pipeline_once(db_url: str,
                                                                    tmp_path: Path) -> None:
    model = tmp_path / "blank_en"
    spacy.blank("en").to_disk(model)  # a real pipeline on disk, loaded by spacy.load
    settings = Settings(spacy_model=str(model), storage_dir=tmp_path / "sites")
    for site in ("springfield", "shelbyville"):
        page = site_dir(settings.storage_dir, site) / "txt" / "City Council" / "2024-03-05"
        page.mkdir(parents=True)
        (page / "1.txt").write_text("Motion by Councilmember Diaz, seconded by Councilmember "
                                    "Lee. Ayes: Diaz, Lee. Passed 2-0.\n")
    pipeline = build_pipeline(settings, db_url)
    extract._pipelines.clear()
    builds = extract.pipeline_builds
    try:
        jobs = [pipeline.extract_task.enqueue(site=site) for site in ("springfield", "shelbyville")]
        assert pipeline.queue.work(["extraction"], burst=True) == 0
        assert [pipeline.queue.get_job(job).state.value for job in jobs] == ["succeeded"] * 2
    finally:
        pipeline.close()
    assert extract.pipeline_builds - builds == 1
    assert extract.Extractor(settings).model_name == str(model)  # the model was used
    assert extract.pipeline_builds - builds == 1
