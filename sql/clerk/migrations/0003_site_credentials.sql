-- A site's basic-auth credential (`--url http://user:pass@host/`) lives apart from its URL,
-- so `site list`, `status --json`, logs and every published document_url show the URL
-- without it. Sites and documents stored before this move their credential out.
ALTER TABLE {schema}.sites ADD COLUMN source_auth text;

UPDATE {schema}.sites
SET source_auth = substring(source_url from '^[A-Za-z][A-Za-z0-9+.-]*://([^/?#]*)@'),
    source_url = regexp_replace(source_url, '^([A-Za-z][A-Za-z0-9+.-]*://)[^/?#]*@', '\1')
WHERE source_url ~ '^[A-Za-z][A-Za-z0-9+.-]*://[^/?#]*@';

UPDATE {schema}.documents
SET url = regexp_replace(url, '^([A-Za-z][A-Za-z0-9+.-]*://)[^/?#]*@', '\1')
WHERE url ~ '^[A-Za-z][A-Za-z0-9+.-]*://[^/?#]*@';

UPDATE {schema}.refused_links
SET url = regexp_replace(url, '^([A-Za-z][A-Za-z0-9+.-]*://)[^/?#]*@', '\1')
WHERE url ~ '^[A-Za-z][A-Za-z0-9+.-]*://[^/?#]*@';
