-- 005: one canonical e-mail key, and every submission keeps what it said.
--
-- The key is computed in Python (ingest/pseudonyms.py canonical_email: NFKC and
-- Unicode case folding), never with SQL lower(), whose result depends on the
-- database's LC_CTYPE: "ÄIJÄ@" and "äijä@" are one person on every server.
ALTER TABLE ingest.contacts ADD COLUMN email_key text;
-- Rows written before this migration keep the key they were de-duplicated by.
UPDATE ingest.contacts SET email_key = lower(email) WHERE email IS NOT NULL;
ALTER TABLE ingest.contacts
    ADD CONSTRAINT contacts_email_key_with_email CHECK ((email IS NULL) = (email_key IS NULL));
DROP INDEX ingest.contacts_email_key;
CREATE UNIQUE INDEX contacts_email_key ON ingest.contacts (email_key) WHERE email_key IS NOT NULL;

-- What each submission itself said (normalised). A browser form cannot change a
-- known contact's name or phone: what it said stays on its own submission, and
-- rights requests match a submission by what it carried, not by what a later
-- stranger wrote next to the same address.
ALTER TABLE ingest.submissions
    ADD COLUMN name text CHECK (char_length(name) <= 200),
    ADD COLUMN email text CHECK (char_length(email) <= 254),
    ADD COLUMN phone text CHECK (phone ~ '^\+[1-9][0-9]{6,14}$');
CREATE INDEX submissions_phone_idx ON ingest.submissions (phone) WHERE phone IS NOT NULL;

-- Every chat piece's delivery id is recorded, also one that only waits for contact
-- details (no submission yet), so its replay after an erasure stores nothing again.
ALTER TABLE ingest.deliveries ALTER COLUMN submission_id DROP NOT NULL;

-- The CRM sees what each submission said (columns are only ever added to a view).
CREATE OR REPLACE VIEW crm.submissions AS
SELECT s.submission_id, s.seq, s.contact_id, s.source, s.channel, s.message,
       ARRAY(SELECT p.purpose FROM ingest.submission_purposes p
              WHERE p.submission_id = s.submission_id ORDER BY p.purpose) AS purposes,
       s.received_at, s.name, s.email, s.phone
  FROM ingest.submissions s;
COMMENT ON COLUMN crm.submissions.name IS 'The name this submission gave (NULL before migration 005 or when none was given).';
COMMENT ON COLUMN crm.submissions.email IS 'The e-mail address this submission gave, as normalised.';
COMMENT ON COLUMN crm.submissions.phone IS 'The phone number this submission gave, in E.164. A browser form never changes crm.contacts.phone of a known contact: it is here.';
