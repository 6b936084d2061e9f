"""`python -m bench`: run the figures for every contender and print the comparison."""

from __future__ import annotations

import argparse
import os
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import figures, pipeline, report
from bench.contenders import NAMES, get
from bench.figures import Sizes
from bench.harness import Cluster, machine_facts
from bench.report import median_run

FIGURES = ("enqueue_one", "enqueue_bulk", "drain_default", "drain_2x8", "drain_1", "drain_4",
           "latency", "sustained")

# What `--tune` sweeps: worker knobs for the no-op drain, per contender.
TUNING: dict[str, tuple[str, tuple[int, ...]]] = {
    "pgqueue": ("concurrency", (4, 8, 16)),
    "pgqueue_async": ("async_concurrency", (10, 100, 500)),
    "procrastinate": ("concurrency", (1, 10, 30)),
    "pgqueuer": ("batch_size", (10, 50, 100)),
    "raw_batched": ("batch", (10, 50, 200)),
}


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes: about 2 minutes")
    parser.add_argument("--contenders", default=",".join(NAMES),
                        help=f"comma-separated, from {','.join(NAMES)}")
    parser.add_argument("--figures", default=",".join(FIGURES),
                        help=f"comma-separated, from {','.join(FIGURES)}")
    parser.add_argument("--repeat", type=int, default=1,
                        help="runs per throughput figure; the median is reported")
    parser.add_argument("--tune", action="store_true",
                        help="instead of the figures, sweep each contender's worker knobs "
                             "on the drain (1 and 4 processes)")
    parser.add_argument("--pipeline", action=argparse.BooleanOptionalAction, default=None,
                        help="also the clerk pipeline figures (bench/pipeline.py; about 3 "
                             "minutes, 1 with --quick); on by default unless --figures, "
                             "--contenders or --tune is given")
    parser.add_argument("--output", help="JSON path (default bench/results/<timestamp>.json)")
    defaults = Sizes()
    for name, value in defaults.as_dict().items():
        parser.add_argument(f"--{name.replace('_', '-')}", type=type(value), default=None,
                            help=f"(default {value}, quick {getattr(Sizes.quick(), name)})")
    return parser.parse_args(argv)


def sizes_from(args: argparse.Namespace) -> Sizes:
    sizes = Sizes.quick() if args.quick else Sizes()
    for name in sizes.as_dict():
        value = getattr(args, name)
        if value is not None:
            setattr(sizes, name, value)
    return sizes




def figure_runner(name: str, cluster: Cluster, sizes: Sizes) -> Callable[[Any], dict[str, Any]]:
    if name == "enqueue_one":
        return lambda c: figures.enqueue_one(cluster, c, sizes)
    if name == "enqueue_bulk":
        return lambda c: figures.enqueue_bulk(cluster, c, sizes)
    if name == "drain_default":
        return lambda c: figures.drain_with(cluster, c, sizes, c.default_layout())
    if name == "drain_2x8":
        return lambda c: figures.drain_with(cluster, c, sizes, c.layout_2x8())
    if name == "drain_1":
        return lambda c: figures.drain(cluster, c, sizes, 1)
    if name == "drain_4":
        return lambda c: figures.drain(cluster, c, sizes, 4)
    if name == "latency":
        return lambda c: figures.latency(cluster, c, sizes)
    if name == "sustained":
        return lambda c: figures.sustained(cluster, c, sizes)
    raise SystemExit(f"unknown figure {name!r}; choose from {', '.join(FIGURES)}")


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def run_figures(args: argparse.Namespace, cluster: Cluster, sizes: Sizes,
                results: dict[str, Any]) -> None:
    names = results["contenders"]
    for figure in args.figures.split(","):
        runner = figure_runner(figure, cluster, sizes)
        repeats = args.repeat if figure not in ("latency", "sustained") else 1
        for name in names:
            contender = get(name)
            started = time.monotonic()
            measured = results["figures"].get(name, {})
            if figure == "drain_2x8" and name not in ("pgqueue", "pgqueue_async") \
                    and "drain_default" in measured:
                measured[figure] = measured["drain_default"]  # a peer's best layout, measured once
                continue
            try:
                entry = median_run([runner(contender) for _ in range(repeats)])
            except Exception as error:  # one contender failing must not lose the rest
                traceback.print_exc()
                entry = {"value": None, "error": repr(error)}
            results["figures"].setdefault(name, {})[figure] = entry
            value = entry.get("value")
            shown = "failed" if value is None else f"{value:,.1f}"
            _say(f"  {figure:<13} {contender.label:<14} {shown:>12}"
                 f"   ({time.monotonic() - started:.1f} s)")


def run_tuning(cluster: Cluster, sizes: Sizes, results: dict[str, Any]) -> None:
    for name in results["contenders"]:
        if name not in TUNING:
            continue
        knob, values = TUNING[name]
        contender = get(name)
        for processes in (1, 4):
            for value in values:
                entry = figures.drain(cluster, contender, sizes, processes, {knob: value})
                key = f"tune_drain_{processes}_{knob}_{value}"
                results["figures"].setdefault(name, {})[key] = entry
                _say(f"  {contender.label:<14} {processes} proc {knob}={value:<4}"
                     f" {entry['value']:>10,.0f} jobs/s{'  (capped)' if entry['capped'] else ''}")


def with_pipeline(args: argparse.Namespace, argv: list[str] | None) -> bool:
    if args.pipeline is not None:
        return bool(args.pipeline)
    given = sys.argv[1:] if argv is None else argv
    return not args.tune and not any(a.startswith(("--figures", "--contenders")) for a in given)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    sizes = sizes_from(args)
    names = [n.strip() for n in args.contenders.split(",") if n.strip()]
    for name in names:
        get(name)  # unknown names fail before the cluster starts
    results: dict[str, Any] = {
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "quick": args.quick, "tune": args.tune, "repeat": args.repeat,
        "sizes": sizes.as_dict(), "contenders": names,
        "versions": {n: get(n).version() for n in names},
        "machine": machine_facts(), "figures": {},
    }
    cluster = Cluster().start()
    started = time.monotonic()
    try:
        results["machine"].update(cluster.facts())
        _say(f"PostgreSQL on port {cluster.server.port}; sizes {sizes.as_dict()}")
        if args.tune:
            run_tuning(cluster, sizes, results)
        else:
            run_figures(args, cluster, sizes, results)
            if with_pipeline(args, argv):
                psizes = pipeline.PipelineSizes.quick() if args.quick else pipeline.PipelineSizes()
                results["pipeline"] = pipeline.run_all(cluster, psizes, args.repeat)
    finally:
        results["seconds"] = time.monotonic() - started
        results["machine"]["load_average_at_end"] = os.getloadavg()
        cluster.stop()
        path = report.write(results, None if args.output is None else Path(args.output))
    if not args.tune:
        print(report.render(results))
    if "pipeline" in results:
        print()
        print(pipeline.render(results["pipeline"]))
    print(f"\n{results['machine']['cpu_count']} CPUs ({results['machine']['cpu_model']}), "
          f"Python {results['machine']['python']}, {results['machine'].get('postgresql', '?')}")
    print("versions: " + ", ".join(f"{n} {v}" for n, v in results["versions"].items()))
    print(f"load average at start / end: {results['machine']['load_average_at_start'][0]:.1f}"
          f" / {results['machine']['load_average_at_end'][0]:.1f}")
    print(f"took {results['seconds']:.0f} s; JSON: {path}")
    return 0
