-- Cheap re-runs (issue 21): what the last read of a site's index page learnt, so the next
-- run asks with If-None-Match / If-Modified-Since and, on 304 (or the same page again),
-- reuses the documents and refused links parsed last time instead of reading the page.
-- `sha256` is the page's body (HTML, small; never a PDF's). One row per site and URL; a
-- site removed takes its rows with it.
CREATE TABLE {schema}.index_pages (
    site           text NOT NULL REFERENCES {schema}.sites (subdomain) ON DELETE CASCADE,
    url            text NOT NULL,
    etag           text,
    last_modified  text,
    sha256         text NOT NULL,
    result         jsonb NOT NULL,  -- the documents and the refused links, as parsed
    fetched_at     timestamptz NOT NULL DEFAULT now(),
    checked_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (site, url)
);
