-- How pages were read (clerk.triage, clerk.ocr): the OCR task's write and what
-- `clerk status --subdomain` shows. `{schema}` is clerk's schema.

-- name: save_page_read
-- Through the document's row: a page job whose document is gone (its site removed while
-- the job ran) records nothing instead of failing on the foreign key.
INSERT INTO {schema}.page_reads (site, kind, meeting, date, page, method, decision, reason,
                                 engine, chars)
SELECT d.site, d.kind, d.meeting, d.date, %(page)s, %(method)s, %(decision)s, %(reason)s,
       %(engine)s, %(chars)s
FROM {schema}.documents AS d
WHERE d.site = %(site)s AND d.kind = %(kind)s AND d.meeting = %(meeting)s AND d.date = %(date)s
ON CONFLICT (site, kind, meeting, date, page) DO UPDATE
SET method = excluded.method, decision = excluded.decision, reason = excluded.reason,
    engine = excluded.engine, chars = excluded.chars, read_at = now();

-- name: page_reads_summary
-- Pages of the site's current documents (a page past a document's current length is
-- an old read) counted by how they were read.
SELECT r.method, r.decision, count(*)::int AS pages
FROM {schema}.page_reads AS r
JOIN {schema}.documents AS d USING (site, kind, meeting, date)
WHERE r.site = %(site)s AND (d.pages IS NULL OR r.page <= d.pages)
GROUP BY r.method, r.decision ORDER BY pages DESC, r.method, r.decision;

-- name: page_reads_not_layer
-- The pages not read from their text layer as it was, with why: OCR'd, compared, blank.
SELECT r.kind, r.meeting, r.date::text AS date, r.page, r.method, r.decision, r.reason,
       r.engine
FROM {schema}.page_reads AS r
JOIN {schema}.documents AS d USING (site, kind, meeting, date)
WHERE r.site = %(site)s AND (d.pages IS NULL OR r.page <= d.pages)
  AND r.decision <> 'text-layer'
ORDER BY r.date, r.meeting, r.kind, r.page
LIMIT %(limit)s;
