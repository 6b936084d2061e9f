-- Statements clerk.compile runs on a site's meetings.db (SQLite), one `-- name:` block each.
-- The entity tables are filled page by page; these run once at the end of a full compile,
-- after `person_names` maps every name written on a page to one person of the site.

-- name: entity_names
-- Every name the pages give a person: mentions, movers, seconders and roll-call voters.
SELECT name FROM mentions
UNION SELECT mover FROM motions WHERE mover IS NOT NULL
UNION SELECT seconder FROM motions WHERE seconder IS NOT NULL
UNION SELECT name FROM votes;

-- name: name_titles
-- How often each name carries each title, to give a person the title the pages use most.
SELECT name, title, count(*) AS uses FROM mentions WHERE title IS NOT NULL GROUP BY name, title;

-- name: link_mentions
UPDATE mentions SET person_id = (SELECT person_id FROM person_names WHERE person_names.name = mentions.name);

-- name: link_votes
UPDATE votes SET person_id = (SELECT person_id FROM person_names WHERE person_names.name = votes.name);

-- name: link_motions
UPDATE motions SET
    mover_id = (SELECT person_id FROM person_names WHERE person_names.name = motions.mover),
    seconder_id = (SELECT person_id FROM person_names WHERE person_names.name = motions.seconder);

-- name: person_spans
-- Pages and dates on which each person appears (mentions and votes), once the ids are set.
SELECT person_id, min(date) AS first_date, max(date) AS last_date, count(DISTINCT page_id) AS pages
FROM (SELECT person_id, date, page_id FROM mentions UNION ALL SELECT person_id, date, page_id FROM votes)
WHERE person_id IS NOT NULL
GROUP BY person_id;

-- name: set_person_span
UPDATE people SET first_date = :first_date, last_date = :last_date, pages = :pages WHERE id = :id;

-- name: person_votes_view
-- How each person voted: one row per person and roll call, with the motion, its outcome,
-- the meeting, and the page (`page_url` opens the PDF at that page). Datasette shows it
-- as a table; filter it by person, meeting or date.
CREATE VIEW person_votes AS
SELECT people.id AS person_id, people.name AS person, people.title, votes.vote,
       motions.text AS motion, motions.result AS outcome, motions.tally,
       votes.meeting, votes.date, votes.page, votes.page_url, votes.page_table, votes.page_id,
       votes.motion_id, votes.roll_call_id
FROM votes
JOIN people ON people.id = votes.person_id
LEFT JOIN motions ON motions.id = votes.motion_id
ORDER BY votes.date, votes.meeting, votes.page, votes.roll_call_id, people.name;
