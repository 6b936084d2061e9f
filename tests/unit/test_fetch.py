"""Pure parts of fetch: which URLs may be fetched and how they appear in messages."""

import pytest

from clerk.fetch import FetchError, UnsupportedScheme, check_scheme, download, redact_url


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("file:///etc/passwd", "scheme 'file' refused: only http and https"),
        ("ftp://x.org/a.pdf", "scheme 'ftp' refused: only http and https"),
        ("javascript:alert(1)", "scheme 'javascript' refused: only http and https"),
        ("data:,x", "scheme 'data' refused: only http and https"),
        ("/local.pdf", "scheme '(none)' refused: only http and https"),
        ("http:///nohost.pdf", "URL has no host"),
    ],
)
def test_only_http_and_https(url: str, reason: str) -> None:
    with pytest.raises(UnsupportedScheme) as caught:
        check_scheme(url)
    assert isinstance(caught.value, FetchError)
    # The message is the URL, then why it was refused (the URL alone would always match).
    assert str(caught.value) == f"{url}: {reason}"


def test_secrets_never_reach_messages() -> None:
    url = "https://user:hunter2@city.gov:8443/a.pdf?x=1"
    assert redact_url(url) == "https://city.gov:8443/a.pdf?x=1"
    with pytest.raises(FetchError) as caught:
        download("ftp://user:hunter2@city.gov/a.pdf", dest=__import__("pathlib").Path("/tmp/x"))
    assert "hunter2" not in str(caught.value)
