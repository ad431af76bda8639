"""PostgreSQL: a run's start and its end, each in one round trip (issue 15).

A start locks its thread (and, with a cap, its account), reads what it must know of them, then
inserts the prompt and the run: five round trips from the runner when sent one by one (BEGIN,
the lock, the state, the insert, COMMIT), ~2.6 ms on the time-to-first-token path. An end locks
the run's thread, updates the run, inserts its last messages and events: six. Each function here
does the same work in one call, committed on its own.

Each decides only the common case and leaves the others to the runner's own transaction (see
`SqlRunnerRepository.create_run` and `finish_run`, which keep the same rules for SQLite and for
what these leave): a start whose run must wait for its thread, an end while runs wait for it
(the next one is promoted in Python). Each statement in them takes a fresh snapshot (READ
COMMITTED, volatile functions), so what they read after the lock includes every commit before.

`agentry_start_run`'s outcome (`o_outcome`):
- `queued`: the prompt (when given) and the run were inserted; `o_thread_seq` is the run's place.
- `busy`: a run holds the thread and the strategy is reject (`o_holder`); nothing was written.
- `capped`: the account has `o_active` active runs, at least `p_max_active`; nothing written.
- `waits`: the strategy lets the run wait (a run holds the thread or others wait for it);
  nothing was written, the caller starts it in a transaction of its own.

`agentry_finish_run`'s outcome:
- `ended`: the run moved from one of `p_from` (at lease epoch `p_epoch`, unless NULL) to `p_to`;
  its messages (in array order, so in that order of positions) and events were stored.
- `refused`: the run is not in one of `p_from` (or not at that epoch); nothing was written.
- `waits`: runs wait for the thread; nothing was written, the caller ends the run and promotes
  the next in a transaction of its own.

Revision ID: 0008
Revises: 0007
"""

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

# The status lists are the ones the runner's partial indexes spell (adapters/sql.py:
# _HOLDING_SQL, _ACTIVE_SQL, _PENDING_SQL), so the planner uses those indexes here too.
START_RUN = """
CREATE OR REPLACE FUNCTION agentry_start_run(
    p_run_id text, p_thread_id text, p_account_id text, p_model text, p_now double precision,
    p_reasoning_effort text, p_strategy text, p_user_id text,
    p_max_active integer, p_lock_namespace integer, p_lock_key integer,
    p_message_id text, p_message_type text, p_message_json text, p_message_at double precision,
    OUT o_outcome text, OUT o_holder text, OUT o_active bigint, OUT o_thread_seq bigint
) LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    v_first bigint;
    v_top bigint;
    v_position bigint;
BEGIN
    PERFORM 1 FROM threads WHERE thread_id = p_thread_id FOR UPDATE;
    IF p_max_active > 0 THEN
        PERFORM pg_advisory_xact_lock(p_lock_namespace, p_lock_key);
        SELECT count(*) INTO o_active FROM agent_runs WHERE account_id = p_account_id
            AND status IN ('pending', 'queued', 'running', 'cancelling', 'requires_action');
    ELSE
        o_active := 0;
    END IF;
    SELECT run_id INTO o_holder FROM agent_runs WHERE thread_id = p_thread_id
        AND status IN ('queued', 'running', 'cancelling', 'requires_action') LIMIT 1;
    IF o_holder IS NOT NULL AND p_strategy = 'reject' THEN
        o_outcome := 'busy';
        RETURN;
    END IF;
    IF p_max_active > 0 AND o_active >= p_max_active THEN
        o_outcome := 'capped';
        RETURN;
    END IF;
    IF p_strategy <> 'reject' THEN
        SELECT min(queue_order) INTO v_first FROM agent_runs WHERE thread_id = p_thread_id
            AND status = 'pending';
        IF o_holder IS NOT NULL OR v_first IS NOT NULL THEN
            o_outcome := 'waits';
            RETURN;
        END IF;
    END IF;
    SELECT coalesce(max(thread_seq), 0) + 1 INTO v_top FROM agent_runs WHERE thread_id = p_thread_id;
    IF p_message_id IS NOT NULL THEN
        INSERT INTO messages (message_id, thread_id, account_id, type, content_json, created_at)
            VALUES (p_message_id, p_thread_id, p_account_id, p_message_type, p_message_json, p_message_at)
            RETURNING position INTO v_position;
    ELSE
        SELECT coalesce(max(position), 0) INTO v_position FROM messages WHERE thread_id = p_thread_id;
    END IF;
    INSERT INTO agent_runs (
        run_id, thread_id, account_id, status, model, error, finish_reason, created_at,
        reasoning_effort, phase_since, multitask_strategy, user_id, dispatched_at, thread_seq,
        start_position
    ) VALUES (
        p_run_id, p_thread_id, p_account_id, 'queued', p_model, '', '', p_now,
        p_reasoning_effort, p_now, p_strategy, p_user_id, p_now, v_top, v_position
    );
    o_outcome := 'queued';
    o_thread_seq := v_top;
END
$$
"""

FINISH_RUN = """
CREATE OR REPLACE FUNCTION agentry_finish_run(
    p_run_id text, p_from text[], p_to text, p_error text, p_finish_reason text,
    p_now double precision, p_epoch integer,
    m_ids text[], m_thread_ids text[], m_account_ids text[], m_types text[], m_contents text[],
    m_created double precision[],
    e_seqs bigint[], e_datas bytea[], e_terminals boolean[]
) RETURNS text LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    v_thread text;
BEGIN
    SELECT thread_id INTO v_thread FROM agent_runs WHERE run_id = p_run_id;
    IF v_thread IS NULL THEN
        RETURN 'refused';
    END IF;
    PERFORM 1 FROM threads WHERE thread_id = v_thread FOR UPDATE;
    IF EXISTS (SELECT 1 FROM agent_runs WHERE thread_id = v_thread AND status = 'pending') THEN
        RETURN 'waits';
    END IF;
    UPDATE agent_runs SET
        status = p_to, completed_at = p_now, error = p_error, finish_reason = p_finish_reason,
        worker_id = NULL, lease_expires_at = NULL, phase = 'finished', phase_detail = '',
        phase_since = p_now, last_event_at = p_now, pending_json = '', resolution_json = '',
        thread_seq = coalesce(thread_seq,
            (SELECT coalesce(max(other.thread_seq), 0) + 1 FROM agent_runs AS other
             WHERE other.thread_id = v_thread))
    WHERE run_id = p_run_id AND status = ANY(p_from) AND (p_epoch IS NULL OR lease_epoch = p_epoch);
    IF NOT FOUND THEN
        RETURN 'refused';
    END IF;
    FOR i IN 1 .. coalesce(array_length(m_ids, 1), 0) LOOP
        INSERT INTO messages (message_id, thread_id, account_id, type, content_json, created_at)
            VALUES (m_ids[i], m_thread_ids[i], m_account_ids[i], m_types[i], m_contents[i], m_created[i]);
    END LOOP;
    INSERT INTO run_events (run_id, seq, data, terminal, created_at)
        SELECT p_run_id, e.seq, e.data, e.terminal, p_now
        FROM unnest(e_seqs, e_datas, e_terminals) AS e(seq, data, terminal);
    RETURN 'ended';
END
$$
"""

DROP = (
    "DROP FUNCTION IF EXISTS agentry_start_run(text, text, text, text, double precision, text, text, text, "
    "integer, integer, integer, text, text, text, double precision)",
    "DROP FUNCTION IF EXISTS agentry_finish_run(text, text[], text, text, text, double precision, integer, "
    "text[], text[], text[], text[], text[], double precision[], bigint[], bytea[], boolean[])",
)


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(START_RUN)
        op.execute(FINISH_RUN)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for statement in DROP:
            op.execute(statement)
