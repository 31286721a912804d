-- 008: the ledgers' chains are keyed (HMAC) with a secret the database never sees.
--
-- 004 chained both ledgers with plain SHA-256 computed in triggers: whoever owns the
-- tables could disable the triggers, edit rows and recompute every hash. From here on
-- the service computes each row's hash in Python, as HMAC-SHA256 under a key derived
-- from INGEST_PEPPER (ingest/store/ledger.py), over the previous hash, the row's
-- position and its immutable fields. Each row gets a contiguous position in its chain
-- (chain_pos), so a missing or repeated row shows as a gap.
--
-- Rows written before this migration keep their SHA-256 hashes: they are the chain's
-- legacy prefix (positions below chain_heads.keyed_from), verified as before, and the
-- first keyed row links to the last legacy head. Their positions follow the links from
-- 'genesis' (ids were drawn before the head was locked, so id order is not chain order);
-- rows no link reaches (consent events older than 004, which never had a hash, or rows
-- already cut out of the chain) come after them in id order, and `audit verify` reports
-- the first of them.

ALTER TABLE ingest.consent_events ADD COLUMN chain_pos bigint;
ALTER TABLE ingest.audit_log ADD COLUMN chain_pos bigint;

ALTER TABLE ingest.chain_heads
    ADD COLUMN position   bigint NOT NULL DEFAULT 0,     -- the last row's chain_pos (0: empty)
    ADD COLUMN keyed_from bigint NOT NULL DEFAULT 1,     -- positions from here on are HMAC
    ADD COLUMN head_mac   text,                          -- HMAC of (chain, position, head, keyed_from)
    ADD COLUMN updated_at timestamptz NOT NULL DEFAULT now();

-- The triggers of 004 go: the hash is computed where the key is.
DROP TRIGGER consent_events_chain ON ingest.consent_events;
DROP TRIGGER audit_log_chain ON ingest.audit_log;
DROP FUNCTION ingest.consent_events_chain();
DROP FUNCTION ingest.audit_log_chain();
DROP FUNCTION ingest.consent_event_digest(ingest.consent_events);
DROP FUNCTION ingest.audit_digest(ingest.audit_log);

-- Legacy positions, following the links (a temporary index keeps the walk linear).
CREATE INDEX consent_events_prev_hash_walk ON ingest.consent_events (prev_hash);
CREATE INDEX audit_log_prev_hash_walk ON ingest.audit_log (prev_hash);
ALTER TABLE ingest.audit_log DISABLE TRIGGER audit_log_immutable;

DO $$
DECLARE
    previous text := 'genesis';
    n bigint := 0;
    next_id bigint;
    next_hash text;
BEGIN
    LOOP
        SELECT event_id, row_hash INTO next_id, next_hash FROM ingest.consent_events
         WHERE prev_hash = previous AND chain_pos IS NULL ORDER BY event_id LIMIT 1;
        EXIT WHEN NOT FOUND;
        n := n + 1;
        UPDATE ingest.consent_events SET chain_pos = n WHERE event_id = next_id;
        previous := next_hash;
    END LOOP;
    UPDATE ingest.consent_events e SET chain_pos = n + r.k
      FROM (SELECT event_id, row_number() OVER (ORDER BY event_id) AS k
              FROM ingest.consent_events WHERE chain_pos IS NULL) r
     WHERE e.event_id = r.event_id;
    UPDATE ingest.chain_heads
       SET position = (SELECT coalesce(max(chain_pos), 0) FROM ingest.consent_events),
           keyed_from = (SELECT coalesce(max(chain_pos), 0) + 1 FROM ingest.consent_events)
     WHERE chain = 'consent_events';
END $$;

DO $$
DECLARE
    previous text := 'genesis';
    n bigint := 0;
    next_id bigint;
    next_hash text;
BEGIN
    LOOP
        SELECT audit_id, row_hash INTO next_id, next_hash FROM ingest.audit_log
         WHERE prev_hash = previous AND chain_pos IS NULL ORDER BY audit_id LIMIT 1;
        EXIT WHEN NOT FOUND;
        n := n + 1;
        UPDATE ingest.audit_log SET chain_pos = n WHERE audit_id = next_id;
        previous := next_hash;
    END LOOP;
    UPDATE ingest.audit_log a SET chain_pos = n + r.k
      FROM (SELECT audit_id, row_number() OVER (ORDER BY audit_id) AS k
              FROM ingest.audit_log WHERE chain_pos IS NULL) r
     WHERE a.audit_id = r.audit_id;
    UPDATE ingest.chain_heads
       SET position = (SELECT coalesce(max(chain_pos), 0) FROM ingest.audit_log),
           keyed_from = (SELECT coalesce(max(chain_pos), 0) + 1 FROM ingest.audit_log)
     WHERE chain = 'audit_log';
END $$;

ALTER TABLE ingest.audit_log ENABLE TRIGGER audit_log_immutable;
DROP INDEX ingest.consent_events_prev_hash_walk;
DROP INDEX ingest.audit_log_prev_hash_walk;

-- Every new row has a position (a service older than this migration, which would write
-- unchained rows, fails here rather than leave a hole), and no position twice.
ALTER TABLE ingest.consent_events ALTER COLUMN chain_pos SET NOT NULL;
ALTER TABLE ingest.audit_log ALTER COLUMN chain_pos SET NOT NULL;
CREATE UNIQUE INDEX consent_events_chain_pos_key ON ingest.consent_events (chain_pos);
CREATE UNIQUE INDEX audit_log_chain_pos_key ON ingest.audit_log (chain_pos);

-- The append-only guard also protects the position.
CREATE OR REPLACE FUNCTION ingest.consent_events_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        RAISE EXCEPTION 'consent events are append-only' USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF (NEW.event_id, NEW.consent_id, NEW.purpose, NEW.granted, NEW.text_sha256,
        NEW.source, NEW.notice_version, NEW.recorded_at, NEW.prev_hash, NEW.row_hash, NEW.chain_pos)
       IS DISTINCT FROM
       (OLD.event_id, OLD.consent_id, OLD.purpose, OLD.granted, OLD.text_sha256,
        OLD.source, OLD.notice_version, OLD.recorded_at, OLD.prev_hash, OLD.row_hash, OLD.chain_pos)
       OR (NEW.contact_id IS NOT NULL AND NEW.contact_id IS DISTINCT FROM OLD.contact_id)
       OR (NEW.submission_id IS NOT NULL AND NEW.submission_id IS DISTINCT FROM OLD.submission_id)
    THEN
        RAISE EXCEPTION 'consent events are append-only' USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN NEW;
END $$;

-- The service draws the rows' ids itself (under the head's lock), so that the hash
-- covers the id the row is stored with.
GRANT USAGE ON SEQUENCE ingest.consent_events_event_id_seq, ingest.audit_log_audit_id_seq
   TO ingest_runtime;
