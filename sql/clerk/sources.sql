-- What clerk remembers of the sites' index pages (clerk/sources/memory.py; migration 0007).

-- name: index_page
SELECT url, etag, last_modified, sha256, result FROM {schema}.index_pages
WHERE site = %(site)s AND url = %(url)s;

-- name: save_index_page
-- A changed page replaces what was remembered; an unchanged one (304, the same body) only
-- moves checked_at, and keeps validators the server did not send again.
INSERT INTO {schema}.index_pages AS p (site, url, etag, last_modified, sha256, result)
VALUES (%(site)s, %(url)s, %(etag)s, %(last_modified)s, %(sha256)s, %(result)s::jsonb)
ON CONFLICT (site, url) DO UPDATE SET
    etag = coalesce(EXCLUDED.etag, p.etag),
    last_modified = coalesce(EXCLUDED.last_modified, p.last_modified),
    sha256 = EXCLUDED.sha256, result = EXCLUDED.result, checked_at = now(),
    fetched_at = CASE WHEN p.sha256 = EXCLUDED.sha256 THEN p.fetched_at ELSE now() END;
