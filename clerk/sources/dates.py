"""Dates as cities write them in link text and file names, turned into ISO dates.

Handles 2024-01-05, 2024_01_05, 20240105, 1/5/2024, 1-5-24, 1.29.18, "January 5, 2024",
"Jan. 5th 2024", "5 January 2024". Two-digit years are 2000-2069 or 1970-1999.
Month-first (US) order for numeric dates: these are US city documents.
"""

from __future__ import annotations

import datetime as dt
import re

MONTHS = {
    "jan": 1,
    "january": 1,
    "feb": 2,
    "february": 2,
    "mar": 3,
    "march": 3,
    "apr": 4,
    "april": 4,
    "may": 5,
    "jun": 6,
    "june": 6,
    "jul": 7,
    "july": 7,
    "aug": 8,
    "august": 8,
    "sep": 9,
    "sept": 9,
    "september": 9,
    "oct": 10,
    "october": 10,
    "nov": 11,
    "november": 11,
    "dec": 12,
    "december": 12,
}
_MONTH_NAMES = "|".join(sorted(MONTHS, key=len, reverse=True))
_SEP = r"[\s_\-]*"

# Order matters: the most specific patterns first. Each has named groups y, m, d.
PATTERNS: tuple[re.Pattern[str], ...] = (
    re.compile(r"(?<!\d)(?P<y>(?:19|20)\d{2})[-_./](?P<m>\d{1,2})[-_./](?P<d>\d{1,2})(?!\d)"),
    re.compile(r"(?<!\d)(?P<m>\d{1,2})[-_./](?P<d>\d{1,2})[-_./](?P<y>(?:19|20)\d{2})(?!\d)"),
    re.compile(
        rf"(?<![a-z])(?P<mon>{_MONTH_NAMES})\.?{_SEP}(?P<d>\d{{1,2}})(?:st|nd|rd|th)?,?"
        rf"{_SEP}(?P<y>(?:19|20)\d{{2}})(?!\d)",
        re.IGNORECASE,
    ),
    re.compile(
        rf"(?<!\d)(?P<d>\d{{1,2}})(?:st|nd|rd|th)?{_SEP}(?P<mon>{_MONTH_NAMES})\.?,?"
        rf"{_SEP}(?P<y>(?:19|20)\d{{2}})(?!\d)",
        re.IGNORECASE,
    ),
    re.compile(r"(?<!\d)(?P<y>(?:19|20)\d{2})(?P<m>[01]\d)(?P<d>[0-3]\d)(?!\d)"),
    re.compile(r"(?<![\d.])(?P<m>\d{1,2})[-_./](?P<d>\d{1,2})[-_./](?P<y>\d{2})(?![\d])"),
)


def _year(text: str) -> int:
    year = int(text)
    if len(text) == 2:
        year += 2000 if year < 70 else 1900
    return year


def find_date(text: str) -> tuple[str, tuple[int, int]] | None:
    """The first valid date in `text` as (ISO date, (start, end) of the match), or None."""
    for pattern in PATTERNS:
        for match in pattern.finditer(text):
            groups = match.groupdict()
            month = MONTHS[groups["mon"].lower()] if groups.get("mon") else int(groups["m"])
            try:
                day = dt.date(_year(groups["y"]), month, int(groups["d"]))
            except ValueError:
                continue
            return day.isoformat(), match.span()
    return None


def parse_date(text: str) -> str | None:
    """The first valid date in `text` as YYYY-MM-DD, or None."""
    found = find_date(text)
    return found[0] if found else None
