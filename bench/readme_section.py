# ruff: noqa: E501 - Markdown row templates read best on one line each
"""Print the README "Performance" section from a bench results JSON file.

python -m bench.readme_section bench/latest-results.json "python -m bench" > section.md
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from bench.contenders import get
from bench.report import ROWS, _fmt


def md(header: list[str], rows: list[list[str]]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out)


def section(path: str, command: str) -> str:
    r = json.loads(Path(path).read_text())
    names = [n for n in r["contenders"] if n in r["figures"]]
    f = r["figures"]
    m = r["machine"]
    peers = [n for n in names if n not in ("pgqueue", "pgqueue_async")]
    ratios = []
    for label, unit, pick, higher in ROWS:
        if unit == "MB":
            continue
        mine = pick(f["pgqueue"])
        cells = []
        for p in peers:
            t = pick(f[p])
            cells.append("-" if not mine or not t else f"{mine / t:.2f}x")
        if any(c != "-" for c in cells):
            ratios.append([f"{label} ({'higher' if higher else 'lower'} is better)", *cells])
    raw = []
    for label, unit, pick, _ in ROWS:
        vals = [pick(f[n]) for n in names]
        if all(v is None for v in vals):
            continue
        raw.append([f"{label} ({unit})", *(_fmt(v, unit) for v in vals)])
    layouts = []
    for n in names:
        lay = {k: v["layout"] for k, v in f[n].items() if isinstance(v, dict) and "layout" in v}
        capped = [k for k, v in f[n].items() if isinstance(v, dict) and v.get("capped")]
        layouts.append(
            f"- {get(n).label} {r['versions'][n]}: drain_default {lay.get('drain_default')}, drain_2x8 {lay.get('drain_2x8')}, drain_1 {lay.get('drain_1')}, drain_4 {lay.get('drain_4')}, sustained {lay.get('sustained')}"
            + (f" (time-capped: {', '.join(capped)})" if capped else "")
        )
    p = r.get("pipeline", {})
    s = []
    s.append("## Performance\n")
    s.append(
        f"Measured with `{command}` (the JSON of this run: "
        f"[bench/latest-results.json](bench/latest-results.json); how the figures are taken: "
        f"[bench/README.md](bench/README.md)). Machine: {m['cpu_count']} CPUs ({m['cpu_model']}), "
        f"{m.get('memory_mb', 0) // 1024} GB, Python {m['python']}, "
        f"{m.get('postgresql', '?').split(' on ')[0]} with its default settings "
        f"(fsync and synchronous_commit on; only max_connections raised), local TCP. "
        f"git {m.get('git_commit')}, {r['started_at'][:10]}; load average at start / end "
        f"{m['load_average_at_start'][0]:.1f} / {m['load_average_at_end'][0]:.1f}. "
        f"Throughput figures are the median of {r['repeat']} run(s); latency and sustained are one run.\n"
    )
    s.append("pgqueue / peer, same run, same machine:\n")
    s.append(md(["figure", *(get(x).label for x in peers)], ratios) + "\n")
    s.append("Absolute figures:\n")
    s.append(md(["figure", *(get(x).label for x in names)], raw) + "\n")
    s.append("Worker layouts:\n")
    s.append("\n".join(layouts) + "\n")
    if p:
        s.append("### The clerk pipeline on pgqueue\n")
        rows = []
        o = p.get("ocr", {})
        if "direct" in o:
            d = o["direct"]
            rows.append(
                [
                    f"OCR, tesseract run directly (1 process, {d['pages']} scanned pages, {o['dpi']} dpi, already rendered)",
                    f"{d['value']:.2f} pages/s ({d['seconds_per_page'] * 1000:.0f} ms/page)",
                ]
            )
            for w in (1, 2):
                q = o[f"queue_{w}"]
                rows.append(
                    [
                        f"OCR through `clerk.ocr_page` jobs, {w} process-isolated worker slot{'s' if w > 1 else ''}",
                        f"{q['value']:.2f} pages/s; ideal {q['ideal']:.2f}; achieved/ideal **{q['achieved_over_ideal']:.2f}**",
                    ]
                )
            rows.append(["OCR, 2 slots / 1 slot", f"{o['scaling_2_over_1']:.2f}x"])
            db = o.get("through_database")
            if db:  # issue 16: documents travel through PostgreSQL
                pp, st = db["per_page"], db["store"]
                rows.append(
                    [
                        f"a page job's PDF ({pp['pdf_bytes'] / 1e6:.1f} MB) streamed from the database into an empty cache vs read from the cache (median of 25)",
                        f"{pp['cold_ms']:.1f} ms vs {pp['warm_ms']:.2f} ms; a scanned page's `read_page` {o['engines']['default_seconds_per_page'] * 1000:.0f} ms",
                    ]
                )
                rows.append(
                    [
                        "OCR through the queue, 1 slot, every page's PDF from the database (cache of 0 bytes) / from the cache",
                        f"{db['value']:.2f} pages/s; **{db['over_local']:.2f}**",
                    ]
                )
                rows.append(
                    [
                        f"a {st['bytes'] / 1e6:.0f} MB PDF into the database / back into an empty cache",
                        f"{st['store_mb_s']:.0f} MB/s / {st['read_mb_s']:.0f} MB/s",
                    ]
                )
            t = o["text_layer"]
            rows.append(
                [
                    "`read_page`, born-digital page (text layer) vs scan of it",
                    f"{t['text_layer_ms_per_page']:.0f} ms vs {t['scanned_ms_per_page']:.0f} ms per page (**{t['value']:.0f}x**)",
                ]
            )
        fi = p.get("fanin", {})
        if "grouped" in fi:
            rows.append(
                [
                    f"drain {fi['ungrouped']['jobs']:,} no-op jobs, ungrouped ({fi['ungrouped']['layout']})",
                    f"{fi['ungrouped']['value']:,.0f} jobs/s",
                ]
            )
            rows.append(
                [
                    f"drain {fi['grouped']['jobs']:,} no-op jobs in one group (fan-in), same layout",
                    f"{fi['grouped']['value']:,.0f} jobs/s; grouped/ungrouped **{fi['grouped_over_ungrouped']:.2f}**",
                ]
            )
        e = p.get("end_to_end", {})
        if "value" in e:
            rows.append(
                [
                    f"end to end: {e['pages']}-page site ({e['documents']} PDFs served on 127.0.0.1, {e['scanned_pages']} pages scanned), enqueue -> deployed, 1 worker x {e['concurrency']} slots",
                    f"**{e['value']:.1f} s** ({e['pages_per_second']:.1f} pages/s); fan-in delay (last page -> compile start) {e['fanin_delay_ms']:.0f} ms",
                ]
            )
        s.append(md(["figure", "result"], rows) + "\n")
        if "value" in e:
            st = [
                [
                    f"`{k}`",
                    str(v["jobs"]),
                    f"{v['first_start_s']:.1f}",
                    f"{v['last_finish_s']:.1f}",
                    f"{v['busy_s']:.1f}",
                ]
                for k, v in e["stages"].items()
            ]
            s.append("End-to-end stages (seconds after the enqueue):\n")
            s.append(md(["task", "jobs", "first start", "last finish", "busy (sum)"], st) + "\n")
    return "\n".join(s)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    print(section(args[0], args[1] if len(args) > 1 else "python -m bench"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
