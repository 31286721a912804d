-- 002: chats whose identity arrives in pieces (Crisp, LiveChat) wait here until an
-- e-mail or phone is known. Private (not in crm), expiring on its own.
CREATE TABLE ingest.pending_chats (
    source        text NOT NULL,
    session_key   text NOT NULL CHECK (char_length(session_key) <= 200),
    -- normalised name/email/phone/message gathered so far; emptied once committed
    fields        jsonb NOT NULL DEFAULT '{}',
    -- set once the chat became a submission: later pieces update that contact
    submission_id uuid,
    created_at    timestamptz NOT NULL DEFAULT now(),
    expires_at    timestamptz NOT NULL,
    PRIMARY KEY (source, session_key)
);
CREATE INDEX pending_chats_expires_idx ON ingest.pending_chats (expires_at);
CREATE INDEX pending_chats_email_idx ON ingest.pending_chats (lower(fields->>'email'));
CREATE INDEX pending_chats_phone_idx ON ingest.pending_chats ((fields->>'phone'));
