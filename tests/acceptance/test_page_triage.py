"""Issue 17 from the outside: a city publishes a scan under a junk invisible text layer, a
mixed page, text drawn as outlines and a born-digital page; after a run, full-text search
finds the scans' words, and `clerk status --subdomain` says how each page was read."""

from __future__ import annotations

import json
from pathlib import Path

from clerk.compile import DATABASE_FILE
from clerk.pipeline import Pipeline
from tests.acceptance.conftest import CitySite, Cli, run_workers, search
from tests.support.scans import make_page

MET = "\nThe board met at noon\nMotion approved"  # enough words for the triage to judge
DOCUMENTS = {  # kind of page: (link text, what it says, words to search for)
    "junk_layer": ("Harbor Commission Agenda 2024-02-06",
                   "HARBOR COMMISSION\nPelican Street repaving" + MET, "pelican repaving"),
    "mixed": ("Parks Board Agenda 2024-02-07", "PARKS BOARD\nLighthouse garden budget" + MET,
              "lighthouse garden"),
    "outlines": ("Library Board Agenda 2024-02-08", "LIBRARY BOARD\nOrchard branch hours" + MET,
                 "orchard branch"),
    "born_digital": ("Planning Commission Agenda 2024-02-09",
                     "PLANNING COMMISSION\nVariance hearing for the marina" + MET,
                     "variance marina"),
}


def test_each_page_is_read_as_triaged_and_status_says_why(
        city: CitySite, cli: Cli, pipeline: Pipeline, tmp_path: Path) -> None:
    for kind, (link, text, _) in DOCUMENTS.items():
        pdf = make_page(kind, tmp_path / f"{kind}.pdf", text)
        city.add(f"{kind.replace('_', '-')}.pdf", link, pdf.read_bytes())
    cli("site", "add", "seabright", "--url", city.url, "--name", "Seabright")
    cli("enqueue", "seabright")
    run_workers(pipeline)

    database = tmp_path / "storage" / "seabright" / DATABASE_FILE
    for _, _, words in DOCUMENTS.values():
        assert len(search(database, "agendas", words)) == 1, words

    status = json.loads(cli("status", "--subdomain", "seabright", "--json").output)
    reads = status["page_reads"]
    counts = {(row["method"], row["decision"]): row["pages"] for row in reads["counts"]}
    assert counts == {("ocr", "ocr"): 3, ("text-layer", "text-layer"): 1}
    reasons = {row["meeting"]: row["reason"] for row in reads["pages"]}
    assert "invisible text layer over a scan" in reasons["Harbor Commission"]
    assert "is junk" in reasons["Harbor Commission"]
    assert reasons["Parks Board"].startswith("mixed page")
    assert "vector paths" in reasons["Library Board"]

    text = cli("status", "--subdomain", "seabright").output
    assert "pages read: 3 OCR, 1 text layer" in text
    assert "Harbor Commission 2024-02-06 p1: ocr (invisible text layer over a scan" in text
