-- 007: confirmation links are single-use, and an objection outlives the links issued before it.

-- When each suppression was last objected to: every objection (unsubscribe link, admin
-- opt-out) moves it forward, and a confirmation link issued before it can no longer lift
-- it. Rows from before this migration were last objected to when they were created.
ALTER TABLE ingest.suppressions ADD COLUMN last_objected_at timestamptz NOT NULL DEFAULT now();
UPDATE ingest.suppressions SET last_objected_at = created_at;

-- Confirmation links already used, by the SHA-256 of the link's signature (nothing that
-- names the person), kept until the link would have expired anyway; purge drops them then.
CREATE TABLE ingest.used_links (
    digest     bytea PRIMARY KEY CHECK (octet_length(digest) = 32),
    expires_at timestamptz NOT NULL,
    used_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX used_links_expires_idx ON ingest.used_links (expires_at);

GRANT SELECT, INSERT, DELETE ON ingest.used_links TO ingest_runtime;
