-- Documents (blobs in chunks) and page texts in PostgreSQL: clerk.blobs' statements.
-- `{schema}` is clerk's schema.

-- name: blob_lock_shared
-- Held by a transaction that stores or refers to a blob, so garbage collection (which
-- takes the lock exclusively) cannot delete a blob between "it is stored" and the
-- document row that refers to it.
SELECT pg_advisory_xact_lock_shared(hashtextextended('clerk.blobs', 0));

-- name: blob_lock_exclusive
SELECT pg_advisory_xact_lock(hashtextextended('clerk.blobs', 0));

-- name: blob_get
SELECT sha256, size, chunks FROM {schema}.blobs WHERE sha256 = %(sha256)s;

-- name: blob_insert
-- A concurrent store of the same bytes waits here for the first to commit, then does
-- nothing: a blob is stored once.
INSERT INTO {schema}.blobs (sha256, size, chunks) VALUES (%(sha256)s, %(size)s, 0)
ON CONFLICT (sha256) DO NOTHING RETURNING sha256;

-- name: blob_chunk_insert
INSERT INTO {schema}.blob_chunks (sha256, seq, data) VALUES (%(sha256)s, %(seq)s, %(data)s);

-- name: blob_complete
UPDATE {schema}.blobs SET chunks = %(chunks)s WHERE sha256 = %(sha256)s AND size = %(size)s;

-- name: blob_chunk
SELECT data FROM {schema}.blob_chunks WHERE sha256 = %(sha256)s AND seq = %(seq)s;

-- name: blob_collect_garbage
-- Blobs no document refers to any more (a removed site's, a document's older version).
DELETE FROM {schema}.blobs AS b
WHERE NOT EXISTS (SELECT 1 FROM {schema}.documents AS d WHERE d.sha256 = b.sha256)
RETURNING b.size;

-- name: save_page_text
-- A page's text and how it was read, through its document's row and only for the version
-- of the document the page was read from: a page job of an older version, or of a
-- document whose site was removed, writes nothing.
INSERT INTO {schema}.page_reads (site, kind, meeting, date, page, method, decision, reason,
                                 engine, chars, text, sha256, dpi, seconds)
SELECT d.site, d.kind, d.meeting, d.date, %(page)s, %(method)s, %(decision)s, %(reason)s,
       %(engine)s, %(chars)s, %(text)s, d.sha256, %(dpi)s, %(seconds)s
FROM {schema}.documents AS d
WHERE d.site = %(site)s AND d.kind = %(kind)s AND d.meeting = %(meeting)s AND d.date = %(date)s
  AND d.sha256 = %(sha256)s
ON CONFLICT (site, kind, meeting, date, page) DO UPDATE
SET method = excluded.method, decision = excluded.decision, reason = excluded.reason,
    engine = excluded.engine, chars = excluded.chars, text = excluded.text,
    sha256 = excluded.sha256, dpi = excluded.dpi, seconds = excluded.seconds, read_at = now()
RETURNING page;

-- name: import_page_text
-- A page text found in an existing STORAGE_DIR; a page already read keeps its row.
INSERT INTO {schema}.page_reads (site, kind, meeting, date, page, method, decision, reason,
                                 engine, chars, text, sha256)
SELECT d.site, d.kind, d.meeting, d.date, %(page)s, 'imported', 'imported',
       'loaded from STORAGE_DIR by clerk storage import', 'import', %(chars)s, %(text)s,
       d.sha256
FROM {schema}.documents AS d
WHERE d.site = %(site)s AND d.kind = %(kind)s AND d.meeting = %(meeting)s AND d.date = %(date)s
  AND (d.pages IS NULL OR %(page)s <= d.pages)
ON CONFLICT (site, kind, meeting, date, page) DO UPDATE
SET text = excluded.text, sha256 = excluded.sha256
WHERE {schema}.page_reads.text IS NULL
RETURNING page;

-- name: pages_with_text
SELECT page FROM {schema}.page_reads
WHERE site = %(site)s AND kind = %(kind)s AND meeting = %(meeting)s AND date = %(date)s
  AND text IS NOT NULL
ORDER BY page;

-- name: clear_page_texts
-- A document that changed: the pages read from its old version go.
DELETE FROM {schema}.page_reads
WHERE site = %(site)s AND kind = %(kind)s AND meeting = %(meeting)s AND date = %(date)s;

-- name: site_page_texts
-- Every page text of a site's current documents, in the order compile lays them out.
SELECT r.kind, r.meeting, r.date::text AS date, r.page, r.text
FROM {schema}.page_reads AS r
JOIN {schema}.documents AS d USING (site, kind, meeting, date)
WHERE r.site = %(site)s AND r.text IS NOT NULL AND (d.pages IS NULL OR r.page <= d.pages)
ORDER BY r.kind, r.meeting, r.date, r.page;

-- name: site_documents_stored
-- A site's documents whose PDF is in the database.
SELECT d.kind, d.meeting, d.date::text AS date, d.sha256, b.size
FROM {schema}.documents AS d
JOIN {schema}.blobs AS b ON b.sha256 = d.sha256
WHERE d.site = %(site)s
ORDER BY d.kind, d.meeting, d.date;

-- name: site_documents
SELECT kind, meeting, date::text AS date, sha256, pages FROM {schema}.documents
WHERE site = %(site)s ORDER BY kind, meeting, date;

-- name: site_storage
-- What a site holds in the database: its distinct PDFs and its page texts.
SELECT (SELECT count(*) FROM {schema}.documents WHERE site = %(site)s) AS documents,
       (SELECT coalesce(sum(b.size), 0) FROM {schema}.blobs AS b
        WHERE b.sha256 IN (SELECT sha256 FROM {schema}.documents WHERE site = %(site)s))::bigint
           AS pdf_bytes,
       (SELECT count(*) FROM {schema}.page_reads WHERE site = %(site)s AND text IS NOT NULL)
           AS pages,
       (SELECT coalesce(sum(octet_length(text)), 0) FROM {schema}.page_reads
        WHERE site = %(site)s)::bigint AS text_bytes;
