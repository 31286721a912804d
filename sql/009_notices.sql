-- 009: the notice a person was shown for a purpose processed on legitimate interest.
--
-- A HubSpot Forms v3 body carries `legalConsentOptions.legitimateInterest` (`value`,
-- `subscriptionTypeId`, `legalBasis`, `text`): not consent, so not a consent event, but
-- the information given (GDPR Art. 13, 21) that the controller must be able to show.
-- One row per submission and notice, with the exact words and the basis they name.
-- Erased with the submission (and so with the contact, and by the retention purge):
-- unlike a consent, nothing has to be proven about processing that ended with the data,
-- and the words are the person's record, not a ledger entry (docs/privacy.md).
CREATE TABLE ingest.submission_notices (
    notice_id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    submission_id        uuid NOT NULL REFERENCES ingest.submissions ON DELETE CASCADE,
    purpose              text NOT NULL,
    lawful_basis         text NOT NULL CHECK (lawful_basis = 'legitimate_interest'),
    -- HubSpot's own name for the basis (`LEAD`, `CUSTOMER`), as sent
    provider_basis       text CHECK (provider_basis ~ '^[A-Za-z0-9_]{1,64}$'),
    subscription_type_id text CHECK (subscription_type_id ~ '^[0-9]{1,20}$'),
    applies              boolean NOT NULL,
    text                 text NOT NULL CHECK (char_length(text) BETWEEN 1 AND 10000),
    text_sha256          text NOT NULL CHECK (text_sha256 ~ '^[0-9a-f]{64}$'),
    shown_at             timestamptz NOT NULL
);
CREATE INDEX submission_notices_submission_idx ON ingest.submission_notices (submission_id);

-- The service adds and reads notices; erasure removes them through the foreign key,
-- which PostgreSQL runs with the table owner's rights (as for consent events in 006).
GRANT SELECT, INSERT ON ingest.submission_notices TO ingest_runtime;
