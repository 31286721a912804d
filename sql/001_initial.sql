-- 001: the customer database: contacts, submissions, purposes, consent, deliveries,
-- suppression; the crm read contract (views + crm_reader role).
-- Private tables live in schema "ingest"; the CRM sees only schema "crm".

CREATE SCHEMA ingest;
REVOKE ALL ON SCHEMA ingest FROM PUBLIC;

CREATE TABLE ingest.contacts (
    contact_id    uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name          text CHECK (char_length(name) <= 200),
    email         text CHECK (char_length(email) <= 254),
    phone         text CHECK (phone ~ '^\+[1-9][0-9]{6,14}$'),
    -- keyed hashes (HMAC with the pepper) of email/phone: joined with suppressions
    email_hash    bytea,
    phone_hash    bytea,
    first_seen_at timestamptz NOT NULL DEFAULT now(),
    last_seen_at  timestamptz NOT NULL DEFAULT now(),
    CHECK (email IS NOT NULL OR phone IS NOT NULL)
);
-- De-duplication: by e-mail (case-insensitively: nobody has two mailboxes
-- Maija@ and maija@); contacts known only by phone, by phone.
CREATE UNIQUE INDEX contacts_email_key ON ingest.contacts (lower(email)) WHERE email IS NOT NULL;
CREATE UNIQUE INDEX contacts_phone_only_key ON ingest.contacts (phone) WHERE email IS NULL;
CREATE INDEX contacts_phone_idx ON ingest.contacts (phone);
CREATE INDEX contacts_last_seen_idx ON ingest.contacts (last_seen_at);

CREATE TABLE ingest.submissions (
    submission_id  uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    seq            bigint GENERATED ALWAYS AS IDENTITY UNIQUE,
    contact_id     uuid NOT NULL REFERENCES ingest.contacts ON DELETE CASCADE,
    source         text NOT NULL,
    channel        text NOT NULL CHECK (channel IN ('form', 'chat')),
    message        text CHECK (char_length(message) <= 5000),
    notice_version text NOT NULL,
    received_at    timestamptz NOT NULL,
    committed_at   timestamptz NOT NULL DEFAULT now(),
    -- the writing transaction: the crm feed shows a row only once every older
    -- transaction has finished, so a poller never skips a late commit
    xid            xid8 NOT NULL DEFAULT pg_current_xact_id()
);
CREATE INDEX submissions_contact_idx ON ingest.submissions (contact_id);

CREATE TABLE ingest.submission_purposes (
    submission_id  uuid NOT NULL REFERENCES ingest.submissions ON DELETE CASCADE,
    purpose        text NOT NULL,
    lawful_basis   text NOT NULL,
    retention_days integer NOT NULL CHECK (retention_days > 0),
    PRIMARY KEY (submission_id, purpose)
);

-- The exact words people were shown, content-addressed: new words need a new id.
CREATE TABLE ingest.consent_texts (
    consent_id    text PRIMARY KEY,
    purpose       text NOT NULL,
    text          text NOT NULL,
    text_sha256   text NOT NULL CHECK (text_sha256 ~ '^[0-9a-f]{64}$'),
    first_seen_at timestamptz NOT NULL DEFAULT now()
);

-- Append-only. Erasure unlinks the person (contact_id/submission_id -> NULL);
-- nothing else about an event ever changes.
CREATE TABLE ingest.consent_events (
    event_id      bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    contact_id    uuid REFERENCES ingest.contacts ON DELETE SET NULL,
    submission_id uuid REFERENCES ingest.submissions ON DELETE SET NULL,
    consent_id    text NOT NULL REFERENCES ingest.consent_texts,
    purpose       text NOT NULL,
    granted       boolean NOT NULL,
    text_sha256   text NOT NULL,
    source        text NOT NULL,
    notice_version text,
    recorded_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX consent_events_contact_idx ON ingest.consent_events (contact_id, purpose, event_id);

CREATE FUNCTION ingest.consent_events_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        RAISE EXCEPTION 'consent events are append-only' USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF (NEW.event_id, NEW.consent_id, NEW.purpose, NEW.granted, NEW.text_sha256,
        NEW.source, NEW.notice_version, NEW.recorded_at)
       IS DISTINCT FROM
       (OLD.event_id, OLD.consent_id, OLD.purpose, OLD.granted, OLD.text_sha256,
        OLD.source, OLD.notice_version, OLD.recorded_at)
       OR (NEW.contact_id IS NOT NULL AND NEW.contact_id IS DISTINCT FROM OLD.contact_id)
       OR (NEW.submission_id IS NOT NULL AND NEW.submission_id IS DISTINCT FROM OLD.submission_id)
    THEN
        RAISE EXCEPTION 'consent events are append-only' USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER consent_events_append_only
    BEFORE UPDATE OR DELETE ON ingest.consent_events
    FOR EACH ROW EXECUTE FUNCTION ingest.consent_events_append_only();

-- Idempotency: one row per (source, delivery id). No personal data, and no
-- foreign key: it outlives erasure so an old redelivery cannot bring data back.
CREATE TABLE ingest.deliveries (
    source        text NOT NULL,
    delivery_id   text NOT NULL CHECK (char_length(delivery_id) <= 200),
    submission_id uuid NOT NULL,
    received_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (source, delivery_id)
);

-- Direct-marketing objections, keyed by HMAC(pepper, normalised email/phone).
CREATE TABLE ingest.suppressions (
    key_hash   bytea PRIMARY KEY,
    kind       text NOT NULL CHECK (kind IN ('email', 'phone')),
    created_at timestamptz NOT NULL DEFAULT now()
);

-- ---------------------------------------------------------------------------
-- The CRM read contract (docs/crm.md). Views run with their owner's rights, so
-- crm_reader needs no access to schema ingest.
CREATE SCHEMA crm;

CREATE VIEW crm.consents AS
SELECT DISTINCT ON (e.contact_id, e.purpose)
       e.contact_id, e.purpose, e.granted, e.consent_id, e.recorded_at
  FROM ingest.consent_events e
 WHERE e.contact_id IS NOT NULL
 ORDER BY e.contact_id, e.purpose, e.event_id DESC;

CREATE VIEW crm.contacts AS
SELECT c.contact_id, c.name, c.email, c.phone, c.first_seen_at, c.last_seen_at,
       COALESCE((SELECT k.granted FROM crm.consents k
                  WHERE k.contact_id = c.contact_id AND k.purpose = 'direct_marketing'), false)
       AND NOT EXISTS (SELECT 1 FROM ingest.suppressions s
                        WHERE s.key_hash = c.email_hash OR s.key_hash = c.phone_hash)
       AS marketing_allowed
  FROM ingest.contacts c;

CREATE VIEW crm.submissions AS
SELECT s.submission_id, s.seq, s.contact_id, s.source, s.channel, s.message,
       ARRAY(SELECT p.purpose FROM ingest.submission_purposes p
              WHERE p.submission_id = s.submission_id ORDER BY p.purpose) AS purposes,
       s.received_at
  FROM ingest.submissions s;

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'crm_reader') THEN
        CREATE ROLE crm_reader NOLOGIN;
    END IF;
END $$;
REVOKE ALL ON SCHEMA crm FROM PUBLIC;
GRANT USAGE ON SCHEMA crm TO crm_reader;
GRANT SELECT ON crm.contacts, crm.submissions, crm.consents TO crm_reader;
