"""A large PDF made cheaply: a small one with an incremental update that adds one
unreferenced stream of padding (written in blocks, never held in memory). Readers follow
the update's cross-reference table and never touch the padding; the file is as big as
asked, which is what a streaming test needs."""

from __future__ import annotations

import re
from pathlib import Path

BLOCK = 1024 * 1024


def padded_pdf(base: bytes, path: Path, total_bytes: int) -> Path:
    """Write `base` (a PDF with a classic xref table) plus padding up to `total_bytes`."""
    root = re.search(rb"/Root\s+(\d+\s+\d+\s+R)", base)
    start = re.findall(rb"startxref\s+(\d+)", base)
    size = re.search(rb"/Size\s+(\d+)", base)
    assert root and start and size, "the base PDF needs a classic trailer"
    number = max(int(size.group(1)), 1)
    head = b"\n%d 0 obj\n<< /Length %d >>\nstream\n"
    tail_template = (b"\nendstream\nendobj\nxref\n0 1\n0000000000 65535 f \n%d 1\n%010d 00000 n \n"
                     b"trailer\n<< /Size %d /Root %s /Prev %s >>\nstartxref\n%d\n%%%%EOF\n")
    overhead = len(base) + len(head % (number, 10**12)) + len(tail_template % (
        number, 10**9, number + 1, root.group(1), start[-1], 10**12))
    padding = max(0, total_bytes - overhead)
    with path.open("wb") as out:
        out.write(base)
        offset = out.tell() + 1  # after the newline that opens the object
        out.write(head % (number, padding))
        left = padding
        block = b"\0" * BLOCK
        while left > 0:
            out.write(block[:min(left, BLOCK)])
            left -= min(left, BLOCK)
        xref_at = out.tell() + len(b"\nendstream\nendobj\n")
        out.write(tail_template % (number, offset, number + 1, root.group(1), start[-1], xref_at))
    return path
