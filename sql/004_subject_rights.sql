-- 004: data subject rights: audit log, tamper-evident hash chains, requests with
-- deadlines. No personal data in any of these tables.

-- The head of each hash chain; updating it row-locks the chain, so concurrent
-- inserts link up one after another.
CREATE TABLE ingest.chain_heads (
    chain text PRIMARY KEY,
    head  text NOT NULL
);
INSERT INTO ingest.chain_heads (chain, head) VALUES ('consent_events', 'genesis'), ('audit_log', 'genesis');

ALTER TABLE ingest.consent_events ADD COLUMN prev_hash text, ADD COLUMN row_hash text;

-- What a consent event's hash covers: everything but the personal links, which
-- erasure sets to NULL.
CREATE FUNCTION ingest.consent_event_digest(e ingest.consent_events) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT encode(sha256(convert_to(concat_ws('|',
        e.prev_hash, e.event_id::text, e.consent_id, e.purpose, e.granted::text, e.text_sha256,
        e.source, coalesce(e.notice_version, ''),
        to_char(e.recorded_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US')), 'UTF8')), 'hex')
$$;

CREATE FUNCTION ingest.consent_events_chain() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    SELECT head INTO NEW.prev_hash FROM ingest.chain_heads WHERE chain = 'consent_events' FOR UPDATE;
    NEW.row_hash := ingest.consent_event_digest(NEW);
    UPDATE ingest.chain_heads SET head = NEW.row_hash WHERE chain = 'consent_events';
    RETURN NEW;
END $$;
CREATE TRIGGER consent_events_chain BEFORE INSERT ON ingest.consent_events
    FOR EACH ROW EXECUTE FUNCTION ingest.consent_events_chain();

-- The append-only guard now also protects the chain columns.
CREATE OR REPLACE FUNCTION ingest.consent_events_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        RAISE EXCEPTION 'consent events are append-only' USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF (NEW.event_id, NEW.consent_id, NEW.purpose, NEW.granted, NEW.text_sha256,
        NEW.source, NEW.notice_version, NEW.recorded_at, NEW.prev_hash, NEW.row_hash)
       IS DISTINCT FROM
       (OLD.event_id, OLD.consent_id, OLD.purpose, OLD.granted, OLD.text_sha256,
        OLD.source, OLD.notice_version, OLD.recorded_at, OLD.prev_hash, OLD.row_hash)
       OR (NEW.contact_id IS NOT NULL AND NEW.contact_id IS DISTINCT FROM OLD.contact_id)
       OR (NEW.submission_id IS NOT NULL AND NEW.submission_id IS DISTINCT FROM OLD.submission_id)
    THEN
        RAISE EXCEPTION 'consent events are append-only' USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN NEW;
END $$;

CREATE TABLE ingest.audit_log (
    audit_id    bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at          timestamptz NOT NULL DEFAULT now(),
    actor       text NOT NULL,          -- admin token name, or "cli"
    action      text NOT NULL CHECK (action IN ('export', 'erase', 'opt-out', 'purge', 'confirm-opt-in',
                                                'unsubscribe', 'request')),
    details     jsonb NOT NULL DEFAULT '{}',  -- counts and kinds, never personal data
    prev_hash   text,
    row_hash    text
);

CREATE FUNCTION ingest.audit_digest(a ingest.audit_log) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT encode(sha256(convert_to(concat_ws('|',
        a.prev_hash, a.audit_id::text, a.actor, a.action, a.details::text,
        to_char(a.at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US')), 'UTF8')), 'hex')
$$;

CREATE FUNCTION ingest.audit_log_chain() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    SELECT head INTO NEW.prev_hash FROM ingest.chain_heads WHERE chain = 'audit_log' FOR UPDATE;
    NEW.row_hash := ingest.audit_digest(NEW);
    UPDATE ingest.chain_heads SET head = NEW.row_hash WHERE chain = 'audit_log';
    RETURN NEW;
END $$;
CREATE TRIGGER audit_log_chain BEFORE INSERT ON ingest.audit_log
    FOR EACH ROW EXECUTE FUNCTION ingest.audit_log_chain();

CREATE FUNCTION ingest.audit_log_immutable() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the audit log is append-only' USING ERRCODE = 'insufficient_privilege';
END $$;
CREATE TRIGGER audit_log_immutable BEFORE UPDATE OR DELETE ON ingest.audit_log
    FOR EACH ROW EXECUTE FUNCTION ingest.audit_log_immutable();
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON ingest.audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION ingest.audit_log_immutable();
CREATE TRIGGER consent_events_no_truncate BEFORE TRUNCATE ON ingest.consent_events
    FOR EACH STATEMENT EXECUTE FUNCTION ingest.audit_log_immutable();

-- Access/erasure/objection requests and their one-month deadline (Art. 12(3)).
-- The person is identified only by a keyed hash of the normalised e-mail/phone.
CREATE TABLE ingest.subject_requests (
    request_id   bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind         text NOT NULL CHECK (kind IN ('access', 'erasure', 'objection')),
    subject_hash bytea NOT NULL,
    received_at  timestamptz NOT NULL DEFAULT now(),
    due_at       timestamptz NOT NULL,
    completed_at timestamptz,
    actor        text NOT NULL
);
CREATE INDEX subject_requests_open_idx ON ingest.subject_requests (due_at) WHERE completed_at IS NULL;
