"""The mutations: each breaks one mechanism behind a README guarantee, on a copy of the tree.

Every edit is an exact search-and-replace with the number of matches it expects, so a tree
that drifted (a statement reworded, a line moved into another module) fails loudly instead
of mutating nothing. `tests` are the pytest node ids that must go red; they are the tests
the README's "Guarantees" table cites for the promise.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Edit:
    file: str  # relative to the project root
    search: str
    replace: str
    count: int = 1  # exact number of matches expected in `file`


@dataclass(frozen=True)
class Mutation:
    id: str
    promise: str  # what the README promises, in a few words
    edits: tuple[Edit, ...]
    tests: tuple[str, ...]


QUERIES = "sql/pgqueue/queries.sql"
FOLLOWUPS = "sql/pgqueue/migrations/0002_followups.sql"
JOBS_MIGRATION = "sql/pgqueue/migrations/0001_jobs.sql"

GROUPS = "tests/integration/test_groups.py"
QUEUE = "tests/integration/test_queue.py"
MIGRATE = "tests/integration/test_migrate.py"
ATTACKS = "tests/acceptance/test_attacks.py"
PERIODIC = "tests/integration/test_periodic.py"
SITE_BULK = "tests/acceptance/test_site_bulk.py"
QATTACKS = "tests/integration/test_attacks_queue.py"
COUNTS = "tests/integration/test_counts.py"
COUNTS_MIGRATION = "sql/pgqueue/migrations/0008_counts.sql"
RERUNS = "tests/acceptance/test_cheap_reruns.py"
RESULTS = "tests/integration/test_results.py"
CONNECTIONS = "tests/integration/test_connections.py"
POOL = "tests/integration/test_store_pool.py"
BLOBS = "tests/integration/test_blobs.py"
STORAGE = "tests/acceptance/test_storage.py"
ASYNC_TASKS = "tests/integration/test_async_tasks.py"
AIO = "tests/integration/test_aio.py"
ATTEMPTS = "tests/integration/test_attempts.py"
WEB_PAGES = "tests/web/test_pages.py"

ROBUST_FOLLOWUPS = "sql/pgqueue/migrations/0004_robust_followups.sql"
WHO_RUNS_NEXT = "sql/pgqueue/migrations/0005_who_runs_next.sql"
PAUSE = "tests/integration/test_pause.py"
FAIR = "tests/integration/test_fairness.py"
LIMITS = "tests/integration/test_limits.py"
# The fan-in's catch (line 47); the chain's catch further down reads the same, so the
# context names the group's warning.
_FANIN_CATCH = ("        EXCEPTION WHEN OTHERS THEN\n"
                "            GET STACKED DIAGNOSTICS problem = MESSAGE_TEXT;\n"
                "            RAISE WARNING 'pgqueue: group")

RERUN_RUNNING = f"{GROUPS}::test_stale_outcomes_while_the_rerun_runs_change_nothing"
RESCUED_WAITING = f"{GROUPS}::test_stale_outcomes_while_the_rescued_job_waits_keep_only_its_success"

_FINISH_GUARD = "       j.attempt = o.attempt AND j.state = %(from_state)s::{schema}.job_state\n"
# requeue_attempts' guard; give_back_unknown starts with the same line, so the context runs
# on to the outcome requeue_attempts records.
_RETRY_GUARD = ("    WHERE j.attempt = o.attempt AND j.state = 'running'\n"
                "    ORDER BY j.id\n    FOR UPDATE OF j\n),\nrecorded AS (\n"
                "    INSERT INTO {schema}.job_attempts (job_id, attempt, outcome, error, worker_id,"
                " started_at)\n    SELECT id, attempt, %(outcome)s::text,")

MUTATIONS: tuple[Mutation, ...] = (
    # -- the guards of every terminal update ---------------------------------------------
    Mutation(
        "finish-attempt-guard", "a late finish changes nothing",
        (Edit(QUERIES, _FINISH_GUARD, "       j.state = %(from_state)s::{schema}.job_state\n"),),
        (RERUN_RUNNING,)),
    Mutation(
        "finish-state-guard", "a late finish changes nothing",
        (Edit(QUERIES, _FINISH_GUARD, "       j.attempt = o.attempt\n"),),
        (RESCUED_WAITING,)),
    Mutation(
        "retry-attempt-guard", "a late failure changes nothing",
        (Edit(QUERIES, _RETRY_GUARD, _RETRY_GUARD.replace("j.attempt = o.attempt AND ", "")),),
        (RERUN_RUNNING,)),
    Mutation(
        "retry-state-guard", "a late failure changes nothing",
        (Edit(QUERIES, _RETRY_GUARD, _RETRY_GUARD.replace(" AND j.state = 'running'", "")),),
        (RESCUED_WAITING,)),
    Mutation(
        "release-worker-guard", "a late release changes nothing",
        (Edit(QUERIES,
              "    WHERE id = ANY(%(ids)s::bigint[]) AND worker_id = %(worker_id)s AND state = 'running'\n"
              "    RETURNING id, attempt + 1 AS attempt, started_at\n",
              "    WHERE id = ANY(%(ids)s::bigint[]) AND state = 'running'\n"
              "    RETURNING id, attempt + 1 AS attempt, started_at\n"),),
        (RERUN_RUNNING,)),
    Mutation(
        # Cancel is guarded twice (it locks only queued rows, and finishes from 'queued'):
        # removing one layer changes nothing, so the mutation removes both.
        "cancel-state-guard", "cancel deletes only queued jobs; running ones are told to stop",
        (Edit(QUERIES, "WHERE tag = %(tag)s AND state = 'queued'\nFOR UPDATE SKIP LOCKED;",
              "WHERE tag = %(tag)s\nFOR UPDATE SKIP LOCKED;"),
         Edit(QUERIES, _FINISH_GUARD, "       j.attempt = o.attempt\n")),
        (f"{GROUPS}::test_cancel_a_site_stops_queued_and_running_jobs",)),
    Mutation(
        "release-gives-back", "warm shutdown gives unfinished jobs back, their attempt not counted",
        (Edit(QUERIES, "SET state = 'queued', attempt = attempt - 1, lease_until = NULL",
              "SET state = state, attempt = attempt, lease_until = NULL"),),
        (f"{QUEUE}::test_prefetched_jobs_run_once_and_go_back_on_a_warm_stop",)),
    Mutation(
        "release-keeps-place", "a job given back at a warm shutdown keeps its place in line",
        (Edit(QUERIES, "lease_until = NULL, worker_id = NULL,\n        updated_at = now()\n"
                       "    WHERE id = ANY(%(ids)s::bigint[]) AND worker_id",
              "lease_until = NULL, worker_id = NULL,\n        run_at = now(), updated_at = now()\n"
              "    WHERE id = ANY(%(ids)s::bigint[]) AND worker_id"),),
        (f"{QUEUE}::test_prefetched_jobs_run_once_and_go_back_on_a_warm_stop",)),
    # -- every attempt kept -----------------------------------------------------------------
    Mutation(
        "attempt-recorded-on-release", "a job a warm shutdown gives back after it ran is kept",
        (Edit(QUERIES, "    WHERE id = ANY(%(started)s::bigint[])\n",
              "    WHERE false AND id = ANY(%(started)s::bigint[])\n"),),
        (f"{ATTEMPTS}::test_a_job_given_back_at_a_warm_shutdown_is_kept_as_returned_if_it_ran",)),
    Mutation(
        "attempt-recorded-on-requeue", "every attempt of a job is kept, with its error",
        (Edit(QUERIES, "    SELECT id, attempt, %(outcome)s::text, error, worker_id, started_at"
                       " FROM locked\n",
              "    SELECT id, attempt, %(outcome)s::text, error, worker_id, started_at"
              " FROM locked WHERE false\n"),),
        (f"{ATTEMPTS}::test_each_failed_attempt_is_kept_with_its_traceback_in_order",
         f"{WEB_PAGES}::test_a_job_page_lists_every_attempt_with_its_error_and_traceback",
         f"{ATTEMPTS}::test_a_rescued_attempt_is_kept_and_a_late_failure_records_nothing",
         f"{WEB_PAGES}::test_a_rescued_attempt_shows_as_rescued")),
    Mutation(
        "attempts-pruned-with-history", "pruning a job's history takes its attempts",
        (Edit(QUERIES,
              "    DELETE FROM {schema}.job_attempts AS a USING doomed WHERE a.job_id = doomed.id\n",
              "    SELECT 1\n"),),
        (f"{ATTEMPTS}::test_pruning_a_jobs_history_deletes_its_attempts",)),
    # -- the rescuer ------------------------------------------------------------------------
    Mutation(
        "rescuer-lease-expiry", "only jobs whose lease ran out are rescued (at-least-once)",
        (Edit(QUERIES, "WHERE state = 'running' AND lease_until < now()\n",
              "WHERE state = 'running'\n"),),
        (RERUN_RUNNING,)),
    # -- fan-in -----------------------------------------------------------------------------
    Mutation(
        "group-decrement", "exactly-once fan-in",
        (Edit(QUERIES, "    SET pending = g.pending - p.finished,\n", "    SET pending = g.pending,\n"),),
        (f"{GROUPS}::test_group_fires_its_followups_exactly_once",)),
    Mutation(
        "group-completes-only-sealed", "exactly-once fan-in",
        (Edit(QUERIES, "completed_at = CASE WHEN g.sealed AND g.pending - p.finished = 0 THEN now()",
              "completed_at = CASE WHEN g.pending - p.finished = 0 THEN now()"),),
        (f"{GROUPS}::test_open_group_cannot_complete_before_sealed",)),
    Mutation(
        "group-completed-at-once", "exactly-once fan-in",
        (Edit(FOLLOWUPS, "WHEN (OLD.completed_at IS NULL AND NEW.completed_at IS NOT NULL)",
              "WHEN (NEW.completed_at IS NOT NULL)"),),
        (f"{GROUPS}::test_followups_fire_on_the_first_completion_only",)),
    # -- enqueue ----------------------------------------------------------------------------
    Mutation(
        "notify-single", "an idle worker wakes on NOTIFY",
        (Edit(QUERIES, "SELECT id, pg_notify({schema_name} || '.' || queue, '') FROM inserted;",
              "SELECT id, queue FROM inserted;"),),
        (f"{QUEUE}::test_idle_worker_wakes_on_notify_not_on_the_poll[single]",)),
    Mutation(
        "notify-many", "an idle worker wakes on NOTIFY",
        (Edit(QUERIES, "count(pg_notify({schema_name} || '.' || queue, ''))", "count(queue)"),),
        (f"{QUEUE}::test_idle_worker_wakes_on_notify_not_on_the_poll[many]",)),
    Mutation(
        "notify-copy", "an idle worker wakes on NOTIFY",
        # The COPY path notifies in the statement that reserves the ids (reserve_job_ids).
        (Edit(QUERIES, "(SELECT count(pg_notify({schema_name} || '.' || q, ''))",
              "(SELECT count(q)"),),
        (f"{QUEUE}::test_idle_worker_wakes_on_notify_not_on_the_poll[copy]",)),
    Mutation(
        "dedupe-single", "a dedupe key is unique among live jobs",
        (Edit(QUERIES, "%(tag)s, %(dedupe_key)s, %(timeout)s", "%(tag)s, NULL, %(timeout)s"),),
        (f"{QUEUE}::test_dedupe_key_is_unique_among_live_jobs",)),
    Mutation(
        "dedupe-many", "a dedupe key is unique among live jobs",
        (Edit(QUERIES, "%(dedupe_keys)s::text[], %(timeouts)s::integer[]",
              "array_fill(NULL::text, ARRAY[cardinality(%(dedupe_keys)s::text[])]), "
              "%(timeouts)s::integer[]"),),
        (f"{QUEUE}::test_dedupe_key_is_unique_among_live_jobs",)),
    Mutation(
        "callers-transaction", "a job is created iff the caller's transaction commits",
        (Edit("pgqueue/store.py", "        if conn is not None:\n            if atomic:",
              "        if False:\n            if atomic:"),),
        (f"{QUEUE}::test_enqueue_inside_the_callers_transaction",)),
    # -- passwords --------------------------------------------------------------------------
    Mutation(
        "mask-cli-status", "no password in `clerk status`",
        (Edit("clerk/status.py", "mask_url(pipeline.dsn)", "pipeline.dsn"),),
        ("tests/acceptance/test_cli.py::test_status_overview",)),
    Mutation(
        "mask-logs-text", "no password in logs",
        (Edit("clerk/logs.py", "return mask_url(super().format(record))",
              "return super().format(record)"),),
        ("tests/unit/test_logs.py::test_job_lines_carry_fields_and_never_a_password[text]",)),
    Mutation(
        "mask-logs-json", "no password in logs",
        (Edit("clerk/logs.py", "return mask_url(json.dumps(data, default=str))",
              "return json.dumps(data, default=str)"),),
        ("tests/unit/test_logs.py::test_job_lines_carry_fields_and_never_a_password[json]",)),
    Mutation(
        "mask-job-errors", "no password in job errors",
        (Edit("pgqueue/execution.py", 'mask_url("".join(traceback.format_exception(error)))',
              '"".join(traceback.format_exception(error))'),),
        ("tests/chaos/test_security.py::test_job_errors_do_not_keep_the_password",)),
    Mutation(
        # /health shows "reachable" or DatabaseUnavailable's message, which names the server
        # through describe(); /metrics carries no connection string at all.
        "mask-health-connect-error", "no password in /health and connection errors",
        (Edit("pgqueue/db.py", "return mask_url(f\"{host}:{port}/{params.get('dbname', '')}\")",
              "return conninfo"),),
        (f"{QUEUE}::test_database_down_at_start_names_host_and_hides_password",
         "tests/acceptance/test_clerkd.py::test_health_of_an_unreachable_database_hides_the_password")),
    # -- bad input ---------------------------------------------------------------------------
    Mutation(
        "fetch-scheme-check", "bad input fails alone, with a clear error (non-http links)",
        (Edit("clerk/fetch.py", "if parts.scheme.lower() not in ALLOWED_SCHEMES:", "if False:"),),
        ("tests/unit/test_fetch.py::test_only_http_and_https",)),
    Mutation(
        "ssrf-address-check", "no fetch reaches a loopback, private or link-local address by default",
        (Edit("clerk/network.py", "reason = self.policy.refusal(address, self.port)", "reason = None"),),
        ("tests/integration/test_fetch.py::test_download_refuses_loopback_by_default",
         f"{ATTACKS}::test_links_and_redirects_to_private_addresses_are_never_fetched")),
    Mutation(
        "site-credential-origin", "a site's password goes only to its own origin",
        (Edit("clerk/fetch.py", "if request.url and _origin(request.url) == self.origin:",
              "if request.url:"),),
        (f"{ATTACKS}::test_a_sites_password_is_used_but_never_shown_or_published",)),
    Mutation(
        "one-run-per-site-lock", "one run per site: the in-progress check and the insert are one step",
        (Edit("sql/clerk/queries.sql",
              "SELECT pg_advisory_xact_lock(hashtextextended('clerk.site:' || %(subdomain)s, 0));",
              "SELECT hashtextextended('clerk.site:' || %(subdomain)s, 0);"),),
        (f"{ATTACKS}::test_enqueue_that_stalls_between_check_and_insert_starts_no_second_run",)),
    Mutation(
        "escape-codes-stripped", "nothing a city site wrote can drive the terminal",
        (Edit("clerk/output.py", 'text = _CONTROL.sub("", _ESCAPE.sub("", text))', "text = text"),),
        ("tests/acceptance/test_status.py::test_escape_codes_from_a_city_site_do_not_reach_the_terminal",
         "tests/unit/test_logs.py::test_escape_codes_from_a_site_do_not_reach_a_text_log")),
    Mutation(
        "retry-reopens-run", "a retry finishes its run (its pages compile and deploy)",
        (Edit("clerk/pipeline.py",
              "            report.add(site, failed, self._retry_site(site, failed))",
              "            others.extend(row[\"id\"] for row in failed)"),),
        (f"{ATTACKS}::test_retry_of_failed_pages_finishes_the_run",)),
    Mutation(
        # Three layers keep a retry from starting a second run: the retry joins a live run,
        # enqueue_site joins one, and the fetch's dedupe key refuses a second queued fetch.
        "retry-joins-live-run", "a retry during a run starts no second run",
        (Edit("clerk/pipeline.py",
              "            if live:\n                return {\"joined\": True",
              "            if False:\n                return {\"joined\": True"),
         Edit("clerk/pipeline.py",
              "            if live:\n                return {\"site\": subdomain, \"joined\": True",
              "            if False:\n                return {\"site\": subdomain, \"joined\": True"),
         Edit("clerk/pipeline.py", "dedupe_key=f\"clerk:fetch:{subdomain}\",", "dedupe_key=None,")),
        (f"{ATTACKS}::test_retry_during_a_new_run_starts_no_second_run",)),
    Mutation(
        "distinct-document-names", "two documents of one meeting and date never overwrite each other",
        (Edit("clerk/pipeline.py",
              "        while taken.setdefault((ref.kind, meeting_slug(name), ref.date), url) != url:",
              "        while False:"),),
        (f"{ATTACKS}::test_documents_with_the_same_meeting_and_date_do_not_overwrite_each_other",)),
    Mutation(
        "pages-bounded", "work per site is bounded (pages per document and per run)",
        (Edit("clerk/pipeline.py", "        if pages > bound:\n", "        if False:\n"),
         Edit("clerk/pipeline.py", "                taken = numbers[:max(0, budget)]\n",
              "                taken = numbers\n")),
        (f"{ATTACKS}::test_pages_are_bounded_per_document_and_per_run",)),
    # -- issue 23, pgqueue side ---------------------------------------------------------------
    Mutation(
        "followup-range-check", "a follow-up out of its column's range is refused at enqueue",
        (Edit("pgqueue/tasks.py",
              "        if self.priority is not None:\n            check_priority(self.priority, what)",
              "        pass"),),
        (f"{QATTACKS}::test_a_followup_out_of_range_is_refused_at_enqueue",)),
    Mutation(
        "broken-fanin-recorded", "a fan-in that cannot insert its follow-ups fails its group, not a worker",
        (Edit(ROBUST_FOLLOWUPS, _FANIN_CATCH, _FANIN_CATCH.replace("OTHERS", "division_by_zero")),),
        (f"{QATTACKS}::test_a_broken_fanin_fails_its_group_visibly_and_rescue_goes_on",)),
    Mutation(
        "error-text-storable", "an error with a NUL or a lone surrogate is stored, the worker lives",
        (Edit("pgqueue/store.py", "errors = [storable(f[3]) for f in finals]",
              "errors = [f[3] for f in finals]"),
         Edit("pgqueue/execution.py", '    return storable(text[-MAX_ERROR_CHARS:]) or ""',
              '    return text[-MAX_ERROR_CHARS:] or ""')),
        (f"{QATTACKS}::test_a_nul_or_lone_surrogate_in_an_error_is_stored_sanitized",)),
    Mutation(
        "undecodable-args-fail-alone", "args too deep to decode fail that job alone",
        (Edit("pgqueue/db.py", "    set_json_loads(_loads_or_mark, conn)", "    pass"),),
        (f"{QATTACKS}::test_args_nested_too_deep_fail_that_job_alone",)),
    Mutation(
        "unknown-task-bounded", "an unknown task is given back a bounded number of times",
        (Edit(QUERIES, "  AND j.unknown_returns < %(max_returns)s\n", ""),),
        (f"{QATTACKS}::test_an_unknown_task_fails_after_a_bounded_number_of_returns",)),
    Mutation(
        "frozen-worker-waits-for-its-attempt", "a worker never runs a job twice at once",
        (Edit("pgqueue/slots.py", "if older is not None and older.outcome is None:", "if False:"),),
        (f"{QATTACKS}::test_a_frozen_worker_does_not_rerun_its_rescued_job",)),
    Mutation(
        "rescued-success-kept", "a frozen worker's success is kept while its rescued job waits",
        (Edit(QUERIES,
              "       OR j.attempt = o.attempt AND j.state = 'queued' AND o.state = 'succeeded'",
              "       OR false AND j.state = 'queued' AND o.state = 'succeeded'"),),
        (f"{QATTACKS}::test_a_frozen_workers_success_is_kept_while_its_rescued_job_waits",)),
    Mutation(
        "kill-process-group", "a timeout, cancel or warm stop kills the job's whole process group",
        (Edit("pgqueue/execution.py", "for kill in (os.killpg, os.kill):", "for kill in (os.kill,):"),),
        (f"{QATTACKS}::test_a_timeout_kills_the_jobs_whole_process_group",)),
    Mutation(
        "lease-connection-first", "no claim without a connection for the leases",
        (Edit("pgqueue/worker.py", "self.leases.open()", "None"),),
        (f"{QATTACKS}::test_leases_hold_when_connections_run_short",)),
    Mutation(
        "job-connections-shared", "a worker's connections do not grow with its slots",
        (Edit("pgqueue/store.py", "        if conn is None and connections.in_job_child():",
              "        if False:"),),
        (f"{CONNECTIONS}::test_a_worker_holds_as_many_connections_with_16_slots_as_with_1",)),
    Mutation(
        "job-connection-per-session", "a job holds its shared connection only for a session",
        (Edit("pgqueue/store.py", "        finally:\n            self.end_job()\n"
                                  "            if gate is not None:\n                gate.release()",
              "        finally:\n            pass"),),
        (f"{CONNECTIONS}::test_job_children_hold_a_shared_connection_only_during_their_sessions",)),
    Mutation(
        "clerkd-process-per-queue", "a clerkd's connections do not grow with its slots",
        (Edit("clerk/daemon.py", "{name: min(1, settings.workers_for(name)) for name in QUEUES}",
              "{name: settings.workers_for(name) for name in QUEUES}"),
         Edit("clerk/daemon.py", "        slots = max(1, self.slots.get(slot.pool, 1))\n",
              "        slots = 1\n")),
        ("tests/acceptance/test_clerkd_connections.py::"
         "test_sixteen_ocr_slots_run_within_40_connections_and_leave_room_for_the_cli",)),
    Mutation(
        "listen-direct", "behind a transaction pooler, NOTIFY still wakes workers",
        (Edit("pgqueue/notify.py", "role=LISTEN, direct=True", "role=LISTEN, direct=False"),),
        (f"{CONNECTIONS}::test_behind_pgbouncer_in_transaction_mode_listen_goes_direct",)),
    Mutation(
        "pooled-unprepared", "nothing is prepared through a transaction pooler",
        (Edit("pgqueue/store.py", 'options["prepare_threshold"] = None',
              'options["prepare_threshold"] = 5'),),
        (f"{CONNECTIONS}::test_behind_pgbouncer_in_transaction_mode_listen_goes_direct",)),
    Mutation(
        "maintenance-lock-direct", "the maintenance leader's session lock is on PostgreSQL itself",
        (Edit("pgqueue/maintenance.py", "role=MAINTENANCE, direct=True,",
              "role=MAINTENANCE, direct=False,"),),
        (f"{CONNECTIONS}::test_behind_pgbouncer_in_transaction_mode_listen_goes_direct",)),
    Mutation(
        "pool-refusal-fails-fast", "while PostgreSQL refuses, a session fails at once with why",
        (Edit("pgqueue/store.py", "        if self.refusing:\n            self.raise_if_refused()\n",
              ""),),
        (f"{POOL}::test_a_refusing_server_fails_each_session_at_once_with_its_reason_until_it_accepts",)),
    Mutation(
        "pool-never-connected-fails-fast", "a pool that never connected says why at once",
        (Edit("pgqueue/store.py",
              '    return 0 < stats.get("connections_num", 0) <= stats.get("connections_errors", 0)',
              "    return False"),),
        (f"{POOL}::test_a_refusing_server_fails_each_session_at_once_with_its_reason_until_it_accepts",
         f"{AIO}::test_a_refusing_server_is_an_error_with_its_reason")),
    Mutation(
        "pool-refusal-reason-async", "the async pool's timeout says PostgreSQL's reason too",
        (Edit("pgqueue/aio.py", "            except PoolTimeout:\n"
                                "                await asyncio.to_thread(self.store.raise_if_refused)\n",
              "            except PoolTimeout:\n"),),
        (f"{AIO}::test_a_refusing_server_is_an_error_with_its_reason",)),
    Mutation(
        "pool-busy-said", "a pool with every connection in use says busy, not unreachable",
        (Edit("pgqueue/store.py", "                if renewed or self._in_use >= self.pool_size:",
              "                if renewed:"),),
        (f"{POOL}::test_a_pool_with_every_connection_busy_says_so",)),
    Mutation(
        "retry-keeps-record", "a retry never deletes a failure record",
        (Edit(QUERIES,
              "USING inserted WHERE h.id = inserted.id",
              "USING inserted WHERE h.id = ANY(%(ids)s::bigint[])"),),
        (f"{QATTACKS}::test_retry_keeps_a_failed_job_whose_dedupe_key_is_taken",)),
    # -- processes, migrations, retention, compile -------------------------------------------
    Mutation(
        "pdeathsig", "a job process never outlives its worker",
        (Edit("pgqueue/execution.py",
              "ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)", "None"),),
        (f"{QUEUE}::test_a_job_process_dies_with_its_worker",)),
    Mutation(
        "migrate-advisory-lock", "concurrent upgrades apply each migration once",
        (Edit("pgqueue/migrate.py", 'conn.execute("SELECT pg_advisory_xact_lock(%s)", (self._lock_key(),))',
              'conn.execute("SELECT %s::bigint", (self._lock_key(),))'),),
        (f"{MIGRATE}::test_an_upgrade_waits_for_the_migration_lock",)),
    Mutation(
        "migrate-checksum", "an applied migration whose file changed is refused",
        (Edit("pgqueue/migrate.py", "        if stored != migration.checksum:\n",
              "        if False:\n"),),
        (f"{MIGRATE}::test_an_edited_applied_migration_is_refused",)),
    Mutation(
        "prune-age", "tables stay bounded, history kept for its retention",
        (Edit(QUERIES, "      AND finished_at < now() - %(older_than)s * interval '1 second'\n",
              "      AND finished_at < now()\n"),),
        (f"{GROUPS}::test_prune_deletes_old_history_in_batches",)),
    # -- platform sources -----------------------------------------------------------------
    Mutation(
        "platform-layout-change", "a platform reply of a new shape is an error, never 0 meetings",
        (Edit("clerk/sources/civicplus.py",
              "    if not parser.rows and not _NO_RESULTS.search(html):\n", "    if False:\n"),
         Edit("clerk/sources/legistar.py",
              '        if "EventDate" not in row or "EventBodyName" not in row:\n',
              "        if False:\n")),
        ("tests/integration/test_platform_sources.py::"
         "test_civicplus_no_meetings_is_a_result_and_a_changed_layout_is_an_error",
         "tests/integration/test_platform_sources.py::"
         "test_legistar_token_unknown_client_and_changed_api_are_one_line_errors")),
    Mutation(
        "legistar-paging", "every Legistar event is read, past the 1,000-row cap",
        (Edit("clerk/sources/legistar.py", "        if len(events) < PAGE_ROWS:\n",
              "        if True:\n"),),
        ("tests/integration/test_platform_sources.py::test_legistar_pages_past_the_1000_row_cap",
         "tests/acceptance/test_platform_pipeline.py::"
         "test_a_site_of_each_platform_becomes_a_searchable_database")),
    Mutation(
        "compile-fast-after-full", "a fast compile never replaces the full one of the same run",
        (Edit("clerk/compile.py", "if not entities and previous.get(\"entities\"):",
              "if False:"),),
        ("tests/integration/test_compile_marker.py",)),
    # -- periodic jobs and bulk site operations (issues 15, 21) ---------------------------
    Mutation(
        "periodic-advance", "one job per periodic slot: the tick advances the schedule",
        (Edit(QUERIES, "SET next_run_at = u.next_run_at, last_slot",
              "SET next_run_at = p.next_run_at, last_slot"),),
        (f"{PERIODIC}::test_three_workers_enqueue_one_job_per_slot",)),
    Mutation(
        "periodic-slot-once", "one job per slot with concurrent schedulers",
        (Edit(QUERIES, "ORDER BY p.next_run_at\nLIMIT %(limit)s\nFOR UPDATE SKIP LOCKED;",
              "ORDER BY p.next_run_at\nLIMIT %(limit)s;"),
         Edit(QUERIES, "WHERE p.name = u.name AND p.next_run_at = u.expected;",
              "WHERE p.name = u.name;"),
         Edit("pgqueue/periodic.py",
              "        return f\"{KEY_PREFIX}{self.name}:{_utc(slot).isoformat(timespec='seconds')}\"",
              "        return f\"{KEY_PREFIX}{self.name}:{_utc(slot).isoformat()}:{id(self)}\"")),
        (f"{PERIODIC}::test_concurrent_ticks_enqueue_each_slot_once",)),
    Mutation(
        "periodic-restart-keeps-slot", "a restart neither skips nor repeats a periodic slot",
        (Edit(QUERIES, "THEN p.next_run_at ELSE EXCLUDED.next_run_at END",
              "THEN EXCLUDED.next_run_at ELSE EXCLUDED.next_run_at END"),
         Edit(QUERIES, "WHERE (p.task, p.queue, p.args, p.priority,",
              "WHERE true OR (p.task, p.queue, p.args, p.priority,")),
        (f"{PERIODIC}::test_restarting_every_worker_midway_neither_repeats_nor_loses_a_slot",
         f"{PERIODIC}::test_redeclaring_keeps_the_next_slot_and_a_changed_schedule_moves_it")),
    Mutation(
        "periodic-missed-policy", "slots missed while down: one job (run_once) or none (skip)",
        (Edit("pgqueue/periodic.py", "        if due <= cutoff:  # missed", "        if False:  # missed"),),
        (f"{PERIODIC}::test_slots_missed_while_everything_was_down_follow_the_policy[run_once]",
         f"{PERIODIC}::test_slots_missed_while_everything_was_down_follow_the_policy[skip]")),
    Mutation(
        "site-import-unchanged", "a re-import changes nothing",
        (Edit("sql/clerk/queries.sql",
              "WHERE (s.name, s.source_url, s.source_kind, s.refresh)\n      IS DISTINCT FROM",
              "WHERE true OR (s.name, s.source_url, s.source_kind, s.refresh)\n      IS DISTINCT FROM"),),
        (f"{SITE_BULK}::test_import_of_1000_rows_with_3_bad_ones",)),
    Mutation(
        "bulk-enqueue-joins-live-run", "enqueue --all starts no second run of a site",
        (Edit("clerk/sites.py", "                if site not in live:\n",
              "                if True:\n"),),
        (f"{SITE_BULK}::test_enqueue_all_enqueues_each_site_once",)),
    # -- documents and page texts in PostgreSQL (issue 16) --------------------------------
    Mutation(
        "blob-verified-on-store", "a stored document is complete and checked",
        (Edit("clerk/blobs.py", "    if written != size or digest.hexdigest() != sha256:\n"
                                "        raise BlobCorrupt(f\"{path.name}: the file changed",
              "    if False:\n        raise BlobCorrupt(f\"{path.name}: the file changed"),),
        (f"{BLOBS}::test_bytes_that_are_not_what_was_expected_leave_nothing",)),
    Mutation(
        "blob-store-one-transaction", "a document half-stored when the database goes away leaves nothing",
        (Edit("clerk/blobs.py", "            seq += 1\n    if written != size",
              "            seq += 1\n            conn.commit()\n    if written != size"),),
        (f"{BLOBS}::test_the_database_going_away_mid_store_leaves_nothing",)),
    Mutation(
        "blob-gc-keeps-referenced", "garbage collection deletes only what no document refers to",
        (Edit("sql/clerk/blobs.sql",
              "WHERE NOT EXISTS (SELECT 1 FROM {schema}.documents AS d WHERE d.sha256 = b.sha256)",
              "WHERE true"),),
        (f"{BLOBS}::test_garbage_collection_keeps_what_a_document_refers_to",
         f"{STORAGE}::test_a_truncated_download_is_recorded_and_loses_nothing",
         f"{STORAGE}::test_a_removed_sites_documents_leave_the_database")),
    Mutation(
        "page-stale-version", "a page read from an older version of its document writes nothing",
        (Edit("sql/clerk/blobs.sql", "  AND d.sha256 = %(sha256)s\nON CONFLICT", "ON CONFLICT"),),
        (f"{BLOBS}::test_a_page_read_from_an_older_version_writes_nothing",)),
    Mutation(
        "cache-checked-rename", "a cache entry is checked against its sha256 before it is used",
        (Edit("clerk/blobs.py", "            if sha256_file(temp) != sha256:\n"
                                "                raise BlobCorrupt(f\"document {sha256[:12]}: the cached",
              "            if False:\n"
              "                raise BlobCorrupt(f\"document {sha256[:12]}: the cached"),),
        (f"{BLOBS}::test_cache_entries_arrive_whole_and_checked",)),
    Mutation(
        "cache-temp-then-rename", "a cache entry arrives whole (a temporary file, then a rename)",
        (Edit("clerk/blobs.py", "        return descriptor, Path(name)\n",
              "        os.close(descriptor)\n        os.unlink(name)\n"
              "        return os.open(self.path(sha256), os.O_WRONLY | os.O_CREAT), self.path(sha256)\n"),),
        (f"{BLOBS}::test_cache_entries_arrive_whole_and_checked",)),
    Mutation(
        "compile-extracts-missing", "any machine runs any stage: a full compile extracts what it lacks",
        (Edit("clerk/pipeline.py", "        if entities and not result.skipped and result.missing_entities:",
              "        if False:"),),
        (f"{STORAGE}::test_extraction_compile_and_deploy_each_on_another_host",)),
    Mutation(
        "deploy-compiles-here", "any machine runs any stage: a deploy compiles the run first",
        (Edit("clerk/pipeline.py", "            self.compile(site, entities=True, run=row[\"last_run_key\"])",
              "            pass"),),
        (f"{STORAGE}::test_extraction_compile_and_deploy_each_on_another_host",)),
    Mutation(
        "cache-job-link", "a cached document is never evicted from under the job reading it",
        (Edit("clerk/blobs.py", "                self._fill(sha256, loader)  # evicted only once",
              "                self.load(sha256, loader)  # evicted only once"),),
        (f"{STORAGE}::test_a_document_larger_than_the_cache_is_still_read",
         f"{BLOBS}::test_the_cache_evicts_oldest_first_and_never_from_under_a_reader")),
    Mutation(
        "result-stored", "a task's return value is kept with its finished job",
        (Edit(QUERIES, "           started_at, now(), final_result\n",
              "           started_at, now(), NULL\n"),),
        (f"{RESULTS}::test_a_return_value_is_kept_with_the_finished_job",
         f"{RESULTS}::test_a_groups_follow_up_reads_its_members_results")),
    Mutation(
        "result-waiters-notified", "Queue.wait is woken by the finish (LISTEN, never polling)",
        (Edit("pgqueue/store.py", '        self.run(conn, "notify_waiters")\n', ""),),
        (f"{RESULTS}::test_wait_is_woken_by_the_finish",)),
    Mutation(
        "result-size-bounded", "a result over MAX_RESULT_BYTES fails its job, not the worker",
        (Edit("pgqueue/execution.py", "    if size > MAX_RESULT_BYTES:", "    if False:"),),
        (f"{RESULTS}::test_results_that_cannot_be_kept_fail_their_job_not_the_worker",)),
    Mutation(
        "result-nul-refused", "a result jsonb cannot store fails its job, not its finish batch",
        (Edit("pgqueue/execution.py", "    if _JSON_NUL.search(text):", "    if False:"),),
        (f"{RESULTS}::test_results_that_cannot_be_kept_fail_their_job_not_the_worker",)),
    Mutation(
        "async-timeout-cancels",
        "an async job over its timeout has its coroutine cancelled and fails timed out",
        (Edit("pgqueue/aioloop.py", "    scope = asyncio.timeout_at(when)\n",
              "    scope = asyncio.timeout_at(None)\n"),),
        (f"{ASYNC_TASKS}::test_a_timeout_cancels_the_coroutine_and_fails_the_job",)),
    Mutation(
        "async-cancel-cancels", "a cancel request cancels a running async job's coroutine",
        (Edit("pgqueue/aioloop.py", "                    task.cancel(context.stop_reason)\n",
              "                    pass\n"),),
        (f"{ASYNC_TASKS}::test_cancel_stops_a_running_async_task",)),
    Mutation(
        "async-on-the-loop", "async def tasks run on the worker's event loop beside its sync slots",
        (Edit("pgqueue/slots.py",
              "if self.aio is not None and is_async_task(self.tasks.get(item.job.task)):",
              "if False:"),),
        (f"{ASYNC_TASKS}::test_sync_and_async_jobs_share_one_worker",)),
    Mutation(
        "async-retried", "a failed async job is retried as a sync one is",
        (Edit("pgqueue/aioloop.py", "    retryable = not isinstance(error, PermanentFailure) and "
              "isinstance(error, task.retry_on)\n", "    retryable = False\n"),),
        (f"{ASYNC_TASKS}::test_a_failing_async_task_is_retried",)),
    Mutation(
        "async-wait-listens", "AsyncQueue.wait_async is woken by the finish's NOTIFY",
        (Edit("pgqueue/aio.py", "sql.Identifier(results.finished_channel(self.schema))",
              "sql.Identifier(self.schema + \".unheard\")"),),
        (f"{AIO}::test_wait_async_is_woken_by_listen",)),
    Mutation(
        "async-copy-yields", "AsyncQueue.enqueue_many never blocks the event loop",
        (Edit("pgqueue/aio.py",
              "        async with self.session(conn) as db:\n"
              "            return await self._insert_rows(db, task, args_list,",
              "        with self.store.transaction() as db:  # the sync COPY: blocks the loop\n"
              "            return self.store.insert_rows(db, task, args_list,"),),
        (f"{AIO}::test_enqueue_many_by_copy_never_blocks_the_loop",)),
    Mutation(
        "counts-fold-adds", "the counters stay exact: the fold adds the ledger to them",
        (Edit(QUERIES, "    ON CONFLICT (queue, state) DO UPDATE SET jobs = c.jobs + EXCLUDED.jobs",
              "    ON CONFLICT (queue, state) DO UPDATE SET jobs = EXCLUDED.jobs"),),
        (f"{COUNTS}::test_counters_equal_a_real_count_after_a_random_concurrent_workload[21]",)),
    Mutation(
        "counts-prune-subtracts", "the counters stay exact: pruning takes its rows off them",
        (Edit(COUNTS_MIGRATION, "    SELECT queue, state, -count(*) FROM old_rows GROUP BY 1, 2;",
              "    SELECT queue, state, 0 FROM old_rows GROUP BY 1, 2;"),),
        (f"{COUNTS}::test_counters_equal_a_real_count_after_a_random_concurrent_workload[21]",)),
    Mutation(
        "depth-from-counters", "queue depth reads the counters, never the whole history",
        (Edit(COUNTS_MIGRATION, "        SELECT queue, state, jobs FROM {schema}.job_counts\n",
              "        SELECT queue, state, 1 FROM {schema}.job_history\n"),),
        (f"{COUNTS}::test_depth_and_metrics_read_no_history_at_a_million_rows",)),
    Mutation(
        "index-conditional", "a re-run asks for the index page with its validators",
        (Edit("clerk/sources/index.py", '        headers["If-None-Match"] = previous.etag\n',
              "        pass\n"),
         Edit("clerk/sources/index.py",
              '        headers["If-Modified-Since"] = previous.last_modified\n', "        pass\n")),
        (f"{RERUNS}::test_a_no_op_rerun_asks_conditionally_and_hashes_nothing[honours]",)),
    Mutation(
        "ignored-conditions-fallback",
        "a server that ignores conditions but sends the same validators is believed",
        (Edit("clerk/fetch.py",
              "    if (response.status_code == 200 and request.known_sha256 is not None\n",
              "    if (response.status_code == 999 and request.known_sha256 is not None\n"),),
        (f"{RERUNS}::test_a_no_op_rerun_asks_conditionally_and_hashes_nothing[ignores]",)),
    Mutation(
        "pause-claim", "a paused queue is claimed by no worker until resumed",
        (Edit(QUERIES, "    WHERE NOT EXISTS (SELECT FROM {schema}.paused_queues AS p "
                       "WHERE p.queue = q.name)\n", "    WHERE true\n"),),
        (f"{PAUSE}::test_a_paused_queue_is_not_claimed_by_another_process_until_resumed",
         f"{PAUSE}::test_a_paused_queue_is_skipped_by_the_single_queue_claim")),
    Mutation(
        "resume-wakes", "resuming a queue wakes its workers (NOTIFY)",
        (Edit(QUERIES, "SELECT queue, pg_notify({schema_name} || '.' || queue, '') FROM resumed;",
              "SELECT queue FROM resumed;"),),
        (f"{PAUSE}::test_a_paused_queue_is_not_claimed_by_another_process_until_resumed",)),
    Mutation(
        "fair-rank-assigned", "keys (tags) take turns among equal priorities",
        (Edit(WHO_RUNS_NEXT, "    NEW.fair_rank := greatest(coalesce(head, 0), coalesce(last, 0)) "
                             "+ 1.0 / coalesce(step, 1);", "    NEW.fair_rank := 0;"),),
        (f"{FAIR}::test_keys_take_turns_among_equal_priorities",
         f"{FAIR}::test_a_weight_gives_a_key_more_turns",
         f"{FAIR}::test_small_sites_finish_before_a_big_one_is_half_done")),
    Mutation(
        "fair-rank-claimed", "the claim walks jobs in fair order",
        (Edit(QUERIES, "        ORDER BY priority DESC, fair_rank, run_at, id\n        LIMIT %(limit)s\n",
              "        ORDER BY priority DESC, run_at, id\n        LIMIT %(limit)s\n"),),
        (f"{FAIR}::test_keys_take_turns_among_equal_priorities",)),
    Mutation(
        "limit-key-lock", "a key's limit is exact under racing claims on many machines",
        (Edit(WHO_RUNS_NEXT, "    SELECT * INTO held FROM {schema}.limit_keys k "
                             "WHERE k.task = p_task AND k.key = p_key\n    FOR UPDATE;",
              "    SELECT * INTO held FROM {schema}.limit_keys k "
              "WHERE k.task = p_task AND k.key = p_key;"),),
        (f"{LIMITS}::test_racing_claims_never_pass_a_limit",
         f"{LIMITS}::test_three_processes_never_run_more_than_the_limit_of_a_key")),
    Mutation(
        "limit-holder-freed", "a killed holder's slot frees when its lease is rescued",
        (Edit(WHO_RUNS_NEXT, "WHERE j.id = h.id AND j.state = 'running' AND j.attempt = h.attempt);",
              "WHERE j.id = h.id);"),),
        (f"{LIMITS}::test_a_killed_holders_slot_frees_when_its_lease_is_rescued",)),
    Mutation(
        "limit-wakes-waiter", "a holder's end wakes a job parked on its key",
        (Edit(WHO_RUNS_NEXT, "    UPDATE {schema}.jobs j SET run_at = now(), parked_until = NULL\n",
              "    UPDATE {schema}.jobs j SET run_at = j.run_at\n"),),
        (f"{LIMITS}::test_a_limit_parks_what_it_refuses_and_a_holders_end_wakes_one",)),
    Mutation(
        "rate-window", "at most N starts per period per key",
        (Edit(WHO_RUNS_NEXT, "WHERE s > clock - lim.per_seconds * interval '1 second' ORDER BY s);",
              "WHERE s > clock - 0.5 * lim.per_seconds * interval '1 second' ORDER BY s);"),),
        (f"{LIMITS}::test_one_start_per_second_per_key",)),
)
