"""Every `clerk` command starts fast: the heavy libraries load only in the tasks that use them.

spaCy alone took 0.7 s of the 1.2 s `import clerk.cli` took (audit 21); pytesseract and
pdf2image (with PIL) are needed only by a worker that reads a page, sqlite-utils (which
imports numpy, another quarter second) only by the compile task.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

HEAVY = ("spacy", "pytesseract", "pdf2image", "PIL", "sqlite_utils", "numpy")


@pytest.mark.parametrize("module", ["clerk.cli", "clerk.daemon"])
def test_commands_do_not_import_the_task_libraries(module: str) -> None:
    script = (f"import sys, {module}; "
              f"print(' '.join(m for m in {HEAVY!r} if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [], f"`import {module}` imported {result.stdout.strip()}"


def test_the_tasks_still_find_their_libraries() -> None:
    """The lazy imports resolve: an Extractor asked for a spaCy model imports spaCy (rules
    alone never do), and the OCR backends load."""
    script = ("import sys; from clerk.config import Settings; from clerk.extract import Extractor; "
              "Extractor(Settings(spacy_model='no_such_model')); "
              "from clerk.ocr import TesseractBackend; import clerk.pdf; "
              "print('spacy' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "True"
