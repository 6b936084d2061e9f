"""CPU per extraction job, with the spaCy pipeline built per job or once per process.

    python -m bench.extraction_jobs --model en_core_web_sm      # 20 jobs of 10 pages
    python -m bench.extraction_jobs --model en_core_web_sm --jobs 50 --pages 10

Each job is `clerk.extract.extract_site` over a fresh site of `--pages` page texts (the
labelled pages of tests/fixtures/extraction, in turn), as a worker's extraction job runs
it. "per job" empties the process's pipeline cache before each job, which is what every
job paid before issue 21 (each built its own `Extractor` and loaded the model); "once"
keeps it, as a worker process now does. Also printed: the model's load time (wall and
CPU), and rules alone for scale. Medians of CPU seconds (time.process_time) per job.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from clerk import extract
from clerk.config import Settings

FIXTURES = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "extraction" / "text"


def make_site(root: Path, pages: int, texts: list[str], offset: int) -> Path:
    folder = root / "txt" / "City Council" / f"2024-01-{offset % 28 + 1:02d}"
    folder.mkdir(parents=True)
    for page in range(1, pages + 1):
        text = texts[(offset + page) % len(texts)]
        (folder / f"{page}.txt").write_text(f"{text}\n(job {offset}, page {page})\n")
    return root


def run_jobs(settings: Settings, jobs: int, pages: int, texts: list[str], *,
             rebuild: bool) -> list[float]:
    seconds = []
    with tempfile.TemporaryDirectory() as tmp:
        for job in range(jobs):
            site = make_site(Path(tmp) / f"site{job}", pages, texts, job)
            if rebuild:
                extract._pipelines.clear()
            started = time.process_time()
            extract.extract_site(site, settings)
            seconds.append(time.process_time() - started)
    return seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="a spaCy model (default: rules only)")
    parser.add_argument("--jobs", type=int, default=20)
    parser.add_argument("--pages", type=int, default=10)
    args = parser.parse_args(argv)
    texts = [path.read_text() for path in sorted(FIXTURES.glob("*.txt"))]
    rules = run_jobs(Settings(), args.jobs, args.pages, texts, rebuild=False)
    print(f"rules only:           {statistics.median(rules) * 1000:7.1f} ms CPU per job "
          f"({args.pages} pages)")
    if not args.model:
        return 0
    settings = Settings(spacy_model=args.model)
    extract._pipelines.clear()
    wall, cpu = time.perf_counter(), time.process_time()
    nlp, problem = extract.shared_pipeline(args.model)
    if nlp is None:
        print(problem)
        return 1
    print(f"model load:           {(time.perf_counter() - wall) * 1000:7.1f} ms wall, "
          f"{(time.process_time() - cpu) * 1000:.1f} ms CPU (spaCy imported before)")
    run_jobs(settings, 2, args.pages, texts, rebuild=False)  # warm: first calls compile things
    before = run_jobs(settings, args.jobs, args.pages, texts, rebuild=True)
    builds = extract.pipeline_builds
    after = run_jobs(settings, args.jobs, args.pages, texts, rebuild=False)
    print(f"pipeline per job:     {statistics.median(before) * 1000:7.1f} ms CPU per job")
    print(f"pipeline per process: {statistics.median(after) * 1000:7.1f} ms CPU per job "
          f"({statistics.median(before) / statistics.median(after):.1f}x less; "
          f"{extract.pipeline_builds - builds} builds in {args.jobs} jobs)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
