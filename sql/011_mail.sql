-- 011: mail to the person (double opt-in, consent receipts, self-service access).
--
-- The outbox: a mail to send is a row written in the same transaction as what caused
-- it (a submission, a confirmation, an access request), so nothing is mailed for what
-- did not commit and nothing committed goes unmailed. A sender claims due rows with
-- FOR UPDATE SKIP LOCKED and a lease (ingest/mail/mailer.py); once the mail is handed
-- over, or given up, the row keeps no personal data (recipient and details NULL) and is
-- forgotten after a while. The Message-ID is fixed when the row is written, so a mail
-- re-sent after a crash between handing over and recording it is recognisably the same.
-- A row about a known contact goes with the contact (erasure, retention).
CREATE TABLE ingest.outbox (
    mail_id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind            text NOT NULL CHECK (kind IN ('confirm', 'receipt', 'access')),
    state           text NOT NULL DEFAULT 'queued' CHECK (state IN ('queued', 'sent', 'failed')),
    contact_id      uuid REFERENCES ingest.contacts ON DELETE CASCADE,
    recipient       text CHECK (char_length(recipient) <= 254),
    language        text NOT NULL CHECK (language IN ('fi', 'sv', 'en')),
    details         jsonb,
    message_id      text NOT NULL UNIQUE CHECK (message_id ~ '^<[A-Za-z0-9._-]+@[A-Za-z0-9.-]+>$'),
    created_at      timestamptz NOT NULL DEFAULT now(),
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    attempts        integer NOT NULL DEFAULT 0,
    leased_until    timestamptz,
    last_error      text CHECK (last_error ~ '^[A-Za-z0-9_.: -]{1,120}$'),
    done_at         timestamptz,
    -- Personal data only while the mail waits.
    CHECK ((state = 'queued') = (recipient IS NOT NULL AND details IS NOT NULL)),
    CHECK ((state = 'queued') = (done_at IS NULL))
);
CREATE INDEX outbox_due_idx ON ingest.outbox (next_attempt_at) WHERE state = 'queued';
CREATE INDEX outbox_contact_idx ON ingest.outbox (contact_id);

-- Double opt-in: a grant waiting for the person to confirm it by the mailed link. Only
-- the confirmation records it (a consent event with the same text hash); until then the
-- CRM sees no grant. Expired rows are purged; a row goes with its contact.
CREATE TABLE ingest.pending_consents (
    pending_id     bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    contact_id     uuid NOT NULL REFERENCES ingest.contacts ON DELETE CASCADE,
    submission_id  uuid REFERENCES ingest.submissions ON DELETE SET NULL,
    email_hash     bytea NOT NULL,
    consent_id     text NOT NULL REFERENCES ingest.consent_texts,
    purpose        text NOT NULL,
    text_sha256    text NOT NULL CHECK (text_sha256 ~ '^[0-9a-f]{64}$'),
    source         text NOT NULL,
    notice_version text NOT NULL,
    requested_at   timestamptz NOT NULL,
    expires_at     timestamptz NOT NULL CHECK (expires_at > requested_at)
);
CREATE INDEX pending_consents_email_idx ON ingest.pending_consents (email_hash, consent_id);
CREATE INDEX pending_consents_contact_idx ON ingest.pending_consents (contact_id);
CREATE INDEX pending_consents_expiry_idx ON ingest.pending_consents (expires_at);

GRANT SELECT, INSERT, UPDATE, DELETE ON ingest.outbox TO ingest_runtime;
GRANT SELECT, INSERT, DELETE ON ingest.pending_consents TO ingest_runtime;

-- The self-service steps are audited like every other right (no identifier in the row).
ALTER TABLE ingest.audit_log
    DROP CONSTRAINT audit_log_action_check,
    ADD CONSTRAINT audit_log_action_check CHECK (action IN (
        'export', 'erase', 'opt-out', 'purge', 'confirm-opt-in', 'unsubscribe', 'request',
        'access-link-requested', 'access-link-opened'));
