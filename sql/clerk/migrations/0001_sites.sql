-- clerk's own tables, in their own schema (`{schema}`, default `clerk`), beside pgqueue's.

CREATE TABLE {schema}.sites (
    subdomain        text PRIMARY KEY
                     CHECK (subdomain ~ '^[a-z0-9]([a-z0-9-]{{0,61}}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{{0,61}}[a-z0-9])?)*$'),
    name             text NOT NULL,
    source_url       text NOT NULL CHECK (source_url ~* '^https?://'),
    source_kind      text NOT NULL DEFAULT 'index',
    created_at       timestamptz NOT NULL DEFAULT now(),
    last_fetch_at    timestamptz,
    last_success_at  timestamptz,
    last_run_key     text,
    last_result      text,
    last_error       text
);

-- One row per document a site has published: what we fetched, for conditional GETs and
-- to know which documents changed.
CREATE TABLE {schema}.documents (
    site           text NOT NULL REFERENCES {schema}.sites (subdomain) ON DELETE CASCADE,
    kind           text NOT NULL CHECK (kind IN ('agenda', 'minutes')),
    meeting        text NOT NULL,
    date           date NOT NULL,
    url            text NOT NULL,
    etag           text,
    last_modified  text,
    sha256         text,
    pages          integer,
    fetched_at     timestamptz,
    error          text,
    PRIMARY KEY (site, kind, meeting, date)
);
