"""Text that reaches a terminal: scraped strings made printable, job errors made readable.

Everything `clerk status`, `clerk failed` and `clerk site list` print that a city web site
could have written (link texts, URLs, HTTP reason phrases inside error messages) passes
through `printable()`: an escape sequence in a link text must not clear the screen,
retitle the terminal or recolour what follows. JSON output needs none of this, since
`json.dumps` writes control characters as `\\u001b`.
"""

from __future__ import annotations

import re

# A whole escape sequence, not only its ESC: CSI (`ESC [ ... final`), OSC (`ESC ] ... BEL`
# or `ESC \\`), and the two-character forms. Dropping the ESC alone would leave `[31m`.
_ESCAPE = re.compile(
    r"\x1b\[[0-?]*[ -/]*[@-~]"            # CSI, e.g. colours, cursor moves, screen clears
    r"|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?"  # OSC, e.g. the window title, hyperlinks
    r"|\x1b[PX^_][^\x1b]*(?:\x1b\\)?"     # DCS, SOS, PM, APC strings
    r"|\x1b[ -~]?"                          # two-character sequences, or a lone ESC
    r"|\x9b[0-?]*[ -/]*[@-~]"             # the 8-bit CSI
)
# C0 controls but tab and newline, DEL, C1 controls, and the bidirectional overrides and
# isolates, which can make a terminal show text in another order than it is.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
_LINE_BREAKS = re.compile(r"[\t\n]+")

# A traceback's last line starts with the exception's qualified class name.
_QUALIFIED = re.compile(r"^(?:[A-Za-z_]\w*\.)+([A-Za-z_]\w*): ")
# Exceptions that only carry our own message: their name adds nothing for the reader.
_WRAPPERS = {"PermanentFailure", "RuntimeError", "Exception"}
_ERROR_NAME = re.compile(r"[A-Z]\w*(?:Error|Exception|Failure)")


def printable(value: object, *, multiline: bool = False) -> str:
    """`value` as text without escape sequences or control characters.

    Tabs and newlines become single spaces unless `multiline`, so one scraped value
    cannot break a one-line-per-item listing."""
    text = "" if value is None else str(value)
    text = _CONTROL.sub("", _ESCAPE.sub("", text))
    return text if multiline else _LINE_BREAKS.sub(" ", text)


def error_line(text: str | None) -> str:
    """The line of a job's error that says what went wrong, without internal class paths.

    A job's error is a traceback; its last line is `module.Class: message`. The module
    path goes, and so does the class for the wrappers that only carry a message
    (`pgqueue.errors.PermanentFailure: site x: ...` becomes `site x: ...`)."""
    lines = [line for line in (text or "").splitlines() if line.strip()]
    if not lines:
        return ""
    last = lines[-1].strip()
    match = _QUALIFIED.match(last)
    if match is not None:
        last = f"{match.group(1)}: {last[match.end():]}"
    name, _, rest = last.partition(": ")
    if name in _WRAPPERS and rest:
        last = rest
    return printable(last)


def about_url(message: str | None, url: str | None) -> str:
    """A message about a URL, for a line that shows the URL already: without the error's
    class name and without the URL repeated at its start (`FetchError: http://x/a.pdf:
    HTTP 404` beside `(http://x/a.pdf)` becomes `HTTP 404`)."""
    text = error_line(message)
    name, _, rest = text.partition(": ")
    if rest and _ERROR_NAME.fullmatch(name):
        text = rest
    # The message may name the URL as the site wrote it while the line shows it cleaned
    # up, so compare only up to the scheme: the first ": " after it ends the URL.
    scheme = (url or "").partition("://")[0]
    if scheme and text.lower().startswith(f"{scheme.lower()}://") and ": " in text:
        text = text.split(": ", 1)[1]
    return text


__all__ = ["about_url", "error_line", "printable"]
