-- 003: the CRM contract made self-describing, and a feed that never skips.
--
-- Writers take pg_advisory_xact_lock(<feed key>) right before inserting into
-- ingest.submissions or ingest.subject_events and hold it to COMMIT, so seq
-- values become visible in order: a consumer polling "seq > last" never sees a
-- row while a smaller seq is still uncommitted.

CREATE TABLE ingest.subject_events (
    event_seq   bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    contact_id  uuid NOT NULL,     -- no foreign key: the contact is usually gone
    event       text NOT NULL CHECK (event IN ('erased', 'marketing_opt_out')),
    recorded_at timestamptz NOT NULL DEFAULT now()
);

CREATE VIEW crm.subject_events AS
SELECT event_seq, contact_id, event, recorded_at FROM ingest.subject_events;

CREATE VIEW crm.contract_version AS SELECT 1 AS version;

GRANT SELECT ON crm.subject_events, crm.contract_version TO crm_reader;

COMMENT ON SCHEMA crm IS 'QualityDesk Ingest read contract for the CRM (docs/crm.md). Read with role crm_reader.';
COMMENT ON VIEW crm.contract_version IS 'Version of the crm views contract; a breaking change adds new views and bumps it.';
COMMENT ON COLUMN crm.contract_version.version IS 'Contract version number (1).';

COMMENT ON VIEW crm.contacts IS 'One row per person, de-duplicated by e-mail (case-insensitive), else phone.';
COMMENT ON COLUMN crm.contacts.contact_id IS 'Stable id of the person.';
COMMENT ON COLUMN crm.contacts.name IS 'Name as given (trimmed, NFC), or NULL.';
COMMENT ON COLUMN crm.contacts.email IS 'E-mail address (syntax-checked, domain lower-cased), or NULL.';
COMMENT ON COLUMN crm.contacts.phone IS 'Phone number in E.164, or NULL.';
COMMENT ON COLUMN crm.contacts.first_seen_at IS 'First submission received.';
COMMENT ON COLUMN crm.contacts.last_seen_at IS 'Latest submission received (retention counts from here).';
COMMENT ON COLUMN crm.contacts.marketing_allowed IS 'True only if direct-marketing consent is currently granted and the person has not objected (suppression list). Never assume otherwise.';

COMMENT ON VIEW crm.submissions IS 'Every form or chat submission. Poll with seq > last ORDER BY seq: seq is visible in commit order and never skips.';
COMMENT ON COLUMN crm.submissions.submission_id IS 'Id returned to the sender (201/200).';
COMMENT ON COLUMN crm.submissions.seq IS 'Feed cursor: strictly increasing in commit order.';
COMMENT ON COLUMN crm.submissions.contact_id IS 'The person (crm.contacts).';
COMMENT ON COLUMN crm.submissions.source IS 'Configured source name (ingest.toml [sources.<name>]).';
COMMENT ON COLUMN crm.submissions.channel IS 'form or chat.';
COMMENT ON COLUMN crm.submissions.message IS 'The person''s message (for chats: their first message), or NULL.';
COMMENT ON COLUMN crm.submissions.purposes IS 'Purposes of the privacy notice this submission may be used for.';
COMMENT ON COLUMN crm.submissions.received_at IS 'When the service received it.';

COMMENT ON VIEW crm.consents IS 'Current consent state per contact and purpose (latest event wins).';
COMMENT ON COLUMN crm.consents.contact_id IS 'The person (crm.contacts).';
COMMENT ON COLUMN crm.consents.purpose IS 'Purpose the consent is for (e.g. direct_marketing).';
COMMENT ON COLUMN crm.consents.granted IS 'Granted (true) or refused/withdrawn (false).';
COMMENT ON COLUMN crm.consents.consent_id IS 'Id of the exact consent wording shown (ingest.toml [consents.<id>]).';
COMMENT ON COLUMN crm.consents.recorded_at IS 'When this state was recorded.';

COMMENT ON VIEW crm.subject_events IS 'Erasures and marketing objections, for the CRM to delete or suppress its own copy. Poll with event_seq > last.';
COMMENT ON COLUMN crm.subject_events.event_seq IS 'Feed cursor: strictly increasing in commit order.';
COMMENT ON COLUMN crm.subject_events.contact_id IS 'The contact concerned (already erased when event = erased).';
COMMENT ON COLUMN crm.subject_events.event IS 'erased or marketing_opt_out.';
COMMENT ON COLUMN crm.subject_events.recorded_at IS 'When it happened.';
