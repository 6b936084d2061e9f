-- Links a site's source listed but clerk would not fetch (a scheme other than http(s),
-- no date to file the document under), with the reason: what `clerk status --subdomain`
-- shows. Each fetch replaces the site's rows, so a link the city fixed disappears.
CREATE TABLE {schema}.refused_links (
    site      text NOT NULL REFERENCES {schema}.sites (subdomain) ON DELETE CASCADE,
    url       text NOT NULL,
    reason    text NOT NULL,
    seen_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (site, url)
);
