-- Every statement clerk runs, one `-- name:` block each. `{schema}` is clerk's schema.

-- name: add_site
-- The URL's user:password (if any), or a platform's API token, goes to source_auth, and the
-- URL is stored without it. An update that gives no new credential keeps the one stored.
INSERT INTO {schema}.sites (subdomain, name, source_url, source_auth, source_kind)
VALUES (%(subdomain)s, %(name)s,
        regexp_replace(%(source_url)s, '^([A-Za-z][A-Za-z0-9+.-]*://)[^/?#]*@', '\1'),
        coalesce(%(token)s,
                 substring(%(source_url)s from '^[A-Za-z][A-Za-z0-9+.-]*://([^/?#]*)@')),
        %(source_kind)s)
ON CONFLICT (subdomain) DO UPDATE
SET name = excluded.name, source_url = excluded.source_url,
    source_auth = coalesce(excluded.source_auth, {schema}.sites.source_auth),
    source_kind = excluded.source_kind
RETURNING subdomain, (xmax = 0) AS created;

-- name: get_site
-- Every column but the credential, which only a fetch reads (site_auth).
SELECT subdomain, name, source_url, source_kind, created_at, last_fetch_at, last_success_at,
       last_run_key, last_result, last_error
FROM {schema}.sites WHERE subdomain = %(subdomain)s;

-- name: site_auth
SELECT source_auth FROM {schema}.sites WHERE subdomain = %(subdomain)s;

-- name: list_sites
SELECT subdomain, name, source_url, source_kind, created_at, last_fetch_at, last_success_at,
       last_run_key, last_result, last_error
FROM {schema}.sites ORDER BY subdomain;

-- name: remove_site
DELETE FROM {schema}.sites WHERE subdomain = %(subdomain)s RETURNING subdomain;

-- name: site_fetched
UPDATE {schema}.sites SET last_fetch_at = now(), last_run_key = %(run_key)s,
    last_result = %(result)s
WHERE subdomain = %(subdomain)s;

-- name: site_succeeded
UPDATE {schema}.sites SET last_success_at = now() WHERE subdomain = %(subdomain)s;

-- name: get_document
SELECT * FROM {schema}.documents
WHERE site = %(site)s AND kind = %(kind)s AND meeting = %(meeting)s AND date = %(date)s;

-- name: save_document
INSERT INTO {schema}.documents (site, kind, meeting, date, url, etag, last_modified, sha256,
                                pages, fetched_at, error)
VALUES (%(site)s, %(kind)s, %(meeting)s, %(date)s, %(url)s, %(etag)s, %(last_modified)s,
        %(sha256)s, %(pages)s, now(), %(error)s)
ON CONFLICT (site, kind, meeting, date) DO UPDATE
SET url = excluded.url, etag = excluded.etag, last_modified = excluded.last_modified,
    sha256 = excluded.sha256, pages = excluded.pages, fetched_at = excluded.fetched_at,
    error = excluded.error;

-- name: document_errors
SELECT kind, meeting, date, url, error FROM {schema}.documents
WHERE site = %(site)s AND error IS NOT NULL ORDER BY date, meeting;

-- name: document_urls
SELECT kind, meeting, date::text AS date, url FROM {schema}.documents WHERE site = %(site)s;

-- name: clear_refused_links
DELETE FROM {schema}.refused_links WHERE site = %(site)s;

-- name: save_refused_links
-- One statement for all of a fetch's refused links (parallel arrays).
INSERT INTO {schema}.refused_links (site, url, reason)
SELECT %(site)s, url, reason FROM unnest(%(urls)s::text[], %(reasons)s::text[]) AS r(url, reason)
ON CONFLICT (site, url) DO UPDATE SET reason = excluded.reason, seen_at = now();

-- name: refused_links
SELECT url, reason FROM {schema}.refused_links WHERE site = %(site)s ORDER BY url;

-- name: lock_site
-- Held to the end of the transaction: makes "is a run in progress?" and the insert of a
-- run's fetch job one step (two enqueues of one site serialise here).
SELECT pg_advisory_xact_lock(hashtextextended('clerk.site:' || %(subdomain)s, 0));

-- name: set_site_refresh
-- Bulk site operations and refresh schedules (clerk/sites.py).
UPDATE {schema}.sites SET refresh = %(refresh)s WHERE subdomain = %(subdomain)s
RETURNING subdomain;

-- name: site_refreshes
-- Each site's refresh setting (NULL: the REFRESH default); all sites, or those named.
SELECT subdomain, refresh FROM {schema}.sites
WHERE %(subdomains)s::text[] IS NULL OR subdomain = ANY(%(subdomains)s::text[])
ORDER BY subdomain;

-- name: sites_for_import
-- The stored values an import row leaves blank keeps (one query per batch).
SELECT subdomain, name, source_url, source_kind, refresh FROM {schema}.sites
WHERE subdomain = ANY(%(subdomains)s::text[]);

-- name: import_sites
-- One batch of an import, one statement. A credential in a URL moves to source_auth as in
-- add_site; a row equal to the stored one is not written (a re-import changes nothing).
INSERT INTO {schema}.sites AS s (subdomain, name, source_url, source_auth, source_kind, refresh)
SELECT i.subdomain, i.name,
       regexp_replace(i.url, '^([A-Za-z][A-Za-z0-9+.-]*://)[^/?#]*@', '\1'),
       substring(i.url from '^[A-Za-z][A-Za-z0-9+.-]*://([^/?#]*)@'), i.kind, i.refresh
FROM unnest(%(subdomains)s::text[], %(names)s::text[], %(urls)s::text[], %(kinds)s::text[],
            %(refreshes)s::text[]) AS i (subdomain, name, url, kind, refresh)
ON CONFLICT (subdomain) DO UPDATE
SET name = excluded.name, source_url = excluded.source_url,
    source_auth = coalesce(excluded.source_auth, s.source_auth),
    source_kind = excluded.source_kind, refresh = excluded.refresh
WHERE (s.name, s.source_url, s.source_kind, s.refresh)
      IS DISTINCT FROM (excluded.name, excluded.source_url, excluded.source_kind, excluded.refresh)
   OR (excluded.source_auth IS NOT NULL AND excluded.source_auth IS DISTINCT FROM s.source_auth)
RETURNING subdomain, (xmax = 0) AS created;

-- name: export_sites
-- Every site as `site import` reads it; never the credential (source_auth).
SELECT subdomain, name, source_url, source_kind, refresh FROM {schema}.sites
ORDER BY subdomain;

-- name: site_names
-- All sites, or those whose last successful run is older than `stale_before` (or never).
SELECT subdomain FROM {schema}.sites
WHERE %(stale_before)s::timestamptz IS NULL
   OR last_success_at IS NULL OR last_success_at < %(stale_before)s::timestamptz
ORDER BY subdomain;

-- name: site_source_urls
-- The source URL of each of a batch of sites: its host is the key of the fetch limits.
SELECT subdomain, source_url FROM {schema}.sites WHERE subdomain = ANY(%(subdomains)s::text[]);

-- name: lock_sites
-- lock_site for a batch of sites, in one order (two bulk enqueues cannot deadlock).
SELECT count(pg_advisory_xact_lock(hashtextextended('clerk.site:' || s, 0)))
FROM (SELECT DISTINCT s FROM unnest(%(subdomains)s::text[]) AS s ORDER BY s) AS sites;
