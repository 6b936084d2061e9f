-- What the dashboard's site pages read beyond `clerk status` (sql/clerk/status.sql, whose
-- `site_runs` gives each listed site's latest run). `{schema}` is clerk's schema,
-- `{queue_schema}` pgqueue's.

-- name: sites_page
-- One page of the Sites list, in subdomain order, keyset-paged: `after` is the last
-- subdomain of the previous page (NULL for the first), so a page costs the same however
-- many sites come before it (the primary key's index, no OFFSET). `q` (NULL for all)
-- keeps the sites whose subdomain or name contains it, in any case.
SELECT subdomain, name, source_kind, last_fetch_at, last_success_at, last_result
FROM {schema}.sites
WHERE (%(after)s::text IS NULL OR subdomain > %(after)s::text)
  AND (%(q)s::text IS NULL
       OR position(lower(%(q)s::text) IN lower(subdomain || ' ' || coalesce(name, ''))) > 0)
ORDER BY subdomain
LIMIT %(limit)s;

-- name: site_totals
-- The overview's panel: the number of sites, and of those with a job queued or running,
-- counted up to `cap` (the panel says "cap+" beyond: polled every few seconds, it must not
-- count a backlog of a million jobs each time).
SELECT (SELECT count(*) FROM {schema}.sites) AS sites,
       (SELECT count(*) FROM (
            SELECT DISTINCT tag FROM {queue_schema}.jobs WHERE tag IS NOT NULL LIMIT %(cap)s
        ) AS live) AS in_flight;

-- name: sites_in_flight
-- The first `limit` sites with a job queued or running, the run in flight longest first
-- (its oldest live job), for the overview's panel; the rest are counted, not listed.
SELECT tag AS site FROM {queue_schema}.jobs WHERE tag IS NOT NULL
GROUP BY tag ORDER BY min(id) LIMIT %(limit)s;

-- name: run_spans
-- When each given site's latest run started (its fetch job was created) and, once it has
-- no live job left, when its last job finished: the run's duration on the Sites page.
-- The finish is read from the history of the run's jobs (the site's tag, ids from the
-- fetch's on), through job_history_tag (tag, finished_at): bounded by the run's start, so
-- the read covers this run's jobs only, however long the site's history.
SELECT t.site, f.created_at AS started_at,
       CASE WHEN live.jobs > 0 THEN NULL ELSE done.finished_at END AS finished_at
FROM unnest(%(sites)s::text[]) AS t(site)
JOIN LATERAL (
    SELECT j.id, j.created_at FROM {queue_schema}.all_jobs AS j
    WHERE j.tag = t.site AND j.queue = %(fetch_queue)s
    ORDER BY j.id DESC LIMIT 1
) AS f ON true
CROSS JOIN LATERAL (
    SELECT max(h.finished_at) AS finished_at FROM {queue_schema}.job_history AS h
    WHERE h.tag = t.site AND h.finished_at >= f.created_at AND h.id >= f.id
) AS done
CROSS JOIN LATERAL (
    SELECT count(*) AS jobs FROM {queue_schema}.jobs AS j WHERE j.tag = t.site
) AS live;
