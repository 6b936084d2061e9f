-- A site's refresh schedule (issue 15): 'off', 'daily', 'weekly' or a cron expression;
-- NULL follows the REFRESH setting. The schedule itself (its next run) is a pgqueue
-- periodic row named 'clerk.refresh:<subdomain>', written from this (clerk/sites.py).

ALTER TABLE {schema}.sites ADD COLUMN refresh text
    CHECK (refresh IS NULL OR length(refresh) BETWEEN 1 AND 200);
