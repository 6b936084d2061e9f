-- Documents and page texts live in PostgreSQL (issue 16), so machines share nothing but
-- the database: STORAGE_DIR becomes a cache on each host (clerk.blobs).
--
-- A PDF is a blob, content-addressed by its sha256 (an unchanged or republished document
-- is stored once, whichever sites link it), split into chunks of 1 MiB: ordinary bytea rows,
-- not large objects, so a removed site's blobs go with plain DELETEs and a foreign key,
-- vacuum and pg_dump treat them like any table, and logical replication carries them.
-- PDFs are already compressed: EXTERNAL storage keeps TOAST from trying again.
CREATE TABLE {schema}.blobs (
    sha256     text PRIMARY KEY CHECK (sha256 ~ '^[0-9a-f]{{64}}$'),
    size       bigint NOT NULL CHECK (size >= 0),
    chunks     integer NOT NULL CHECK (chunks >= 0),
    stored_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE {schema}.blob_chunks (
    sha256  text NOT NULL REFERENCES {schema}.blobs (sha256) ON DELETE CASCADE,
    seq     integer NOT NULL CHECK (seq >= 0),
    data    bytea NOT NULL,
    PRIMARY KEY (sha256, seq)
);
ALTER TABLE {schema}.blob_chunks ALTER COLUMN data SET STORAGE EXTERNAL;

-- Which documents use a blob: garbage collection finds the unreferenced ones by it.
CREATE INDEX documents_sha256 ON {schema}.documents (sha256);

-- Each page's text beside how it was read: the OCR task writes both in one row, and
-- compile and extraction read it from here on any host. `sha256` is the document version
-- the page was read from (a page job of an older version writes nothing), `dpi` the
-- rendering's resolution when the page was rendered, `seconds` the time reading it took.
-- 'imported' marks a page text loaded from an existing STORAGE_DIR (`clerk storage
-- import`), whose way of reading was not recorded.
ALTER TABLE {schema}.page_reads
    ADD COLUMN text text,
    ADD COLUMN sha256 text,
    ADD COLUMN dpi integer,
    ADD COLUMN seconds real;
ALTER TABLE {schema}.page_reads DROP CONSTRAINT page_reads_method_check;
ALTER TABLE {schema}.page_reads ADD CONSTRAINT page_reads_method_check
    CHECK (method IN ('text-layer', 'ocr', 'blank', 'imported'));
ALTER TABLE {schema}.page_reads DROP CONSTRAINT page_reads_decision_check;
ALTER TABLE {schema}.page_reads ADD CONSTRAINT page_reads_decision_check
    CHECK (decision IN ('text-layer', 'ocr', 'compare', 'imported'));
