-- How each page of a document was read: its text layer, OCR, or nothing (blank), what the
-- triage decided (text-layer, ocr, compare) and why, and by which reader and engine. The
-- OCR task writes its page's row as it writes the page's text; `clerk status --subdomain`
-- summarises them. A document that changes is read again and its rows replaced.
CREATE TABLE {schema}.page_reads (
    site      text NOT NULL,
    kind      text NOT NULL,
    meeting   text NOT NULL,
    date      date NOT NULL,
    page      integer NOT NULL CHECK (page >= 1),
    method    text NOT NULL CHECK (method IN ('text-layer', 'ocr', 'blank')),
    decision  text NOT NULL CHECK (decision IN ('text-layer', 'ocr', 'compare')),
    reason    text NOT NULL,
    engine    text NOT NULL,
    chars     integer NOT NULL,
    read_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (site, kind, meeting, date, page),
    FOREIGN KEY (site, kind, meeting, date)
        REFERENCES {schema}.documents (site, kind, meeting, date) ON DELETE CASCADE
);
