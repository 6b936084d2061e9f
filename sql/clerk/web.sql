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
-- The latest fetch is the live one if any (one run per site at a time), else the one that
-- finished last: read newest first through jobs_tag and job_history_tag (tag, finished_at),
-- so a site with a long history, or none, costs one index probe, never a scan of every
-- job's history. The finish is read through job_history_tag from the run's start on.
-- A site without a fetch (never run, or its history pruned) and without live jobs has
-- started_at NULL and live_jobs 0: the Sites list then needs nothing more about it.
SELECT t.site, f.created_at AS started_at, live.jobs AS live_jobs,
       CASE WHEN live.jobs > 0 THEN NULL ELSE done.finished_at END AS finished_at
FROM unnest(%(sites)s::text[]) AS t(site)
LEFT JOIN LATERAL (
    SELECT fetches.id, fetches.created_at FROM (
        (SELECT j.id, j.created_at FROM {queue_schema}.jobs AS j
         WHERE j.tag = t.site AND j.queue = %(fetch_queue)s ORDER BY j.id DESC LIMIT 1)
        UNION ALL
        (SELECT h.id, h.created_at FROM {queue_schema}.job_history AS h
         WHERE h.tag = t.site AND h.queue = %(fetch_queue)s
         ORDER BY h.tag, h.finished_at DESC LIMIT 1)
    ) AS fetches
    ORDER BY fetches.id DESC LIMIT 1
) AS f ON true
CROSS JOIN LATERAL (
    SELECT max(h.finished_at) AS finished_at FROM {queue_schema}.job_history AS h
    WHERE h.tag = t.site AND h.finished_at >= f.created_at AND h.id >= f.id
) AS done
CROSS JOIN LATERAL (
    SELECT count(*) AS jobs FROM {queue_schema}.jobs AS j WHERE j.tag = t.site
) AS live;
