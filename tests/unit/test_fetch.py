"""Pure parts of fetch: which URLs may be fetched and how they appear in messages."""

import pytest

from clerk.fetch import FetchError, UnsupportedScheme, check_scheme, download, redact_url


@pytest.mark.parametrize(
    "url",
    [
        "file:///etc/passwd",
        "ftp://x.org/a.pdf",
        "javascript:alert(1)",
        "data:,x",
        "/local.pdf",
        "http:///nohost.pdf",
    ],
)
def test_only_http_and_https(url: str) -> None:
    with pytest.raises(UnsupportedScheme) as caught:
        check_scheme(url)
    assert isinstance(caught.value, FetchError)
    assert url.split(":")[0] in str(caught.value) or "host" in str(caught.value)


def test_secrets_never_reach_messages() -> None:
    url = "https://user:hunter2@city.gov:8443/a.pdf?x=1"
    assert redact_url(url) == "https://city.gov:8443/a.pdf?x=1"
    with pytest.raises(FetchError) as caught:
        download("ftp://user:hunter2@city.gov/a.pdf", dest=__import__("pathlib").Path("/tmp/x"))
    assert "hunter2" not in str(caught.value)
