-- 006: least privilege. The service runs as a member of ingest_runtime, which holds only
-- the DML it needs: no DDL, no TRUNCATE, and no UPDATE or DELETE on the ledgers
-- (consent events, audit log), enforced by privileges and not only by triggers. Nothing
-- the service relies on can be taken by a role that merely connects (crm_reader).

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'ingest_runtime') THEN
        CREATE ROLE ingest_runtime NOLOGIN;
    END IF;
END $$;

-- The feed lock and the purge lease are rows only the service may lock: an advisory
-- lock can be taken by any role that connects (crm_reader stalled intake that way).
CREATE TABLE ingest.feed_lock (id boolean PRIMARY KEY DEFAULT true CHECK (id));
INSERT INTO ingest.feed_lock DEFAULT VALUES;

CREATE TABLE ingest.leases (
    name         text PRIMARY KEY,
    holder       text,
    until        timestamptz NOT NULL DEFAULT '-infinity',
    last_done_at timestamptz          -- when the leased job last ran to completion
);
INSERT INTO ingest.leases (name) VALUES ('purge');

-- Facts about the deployment the service checks at start (the pepper's fingerprint).
CREATE TABLE ingest.settings (
    name       text PRIMARY KEY,
    value      text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

-- A request's keyed hash is dropped some time after it was answered (docs/privacy.md).
ALTER TABLE ingest.subject_requests ALTER COLUMN subject_hash DROP NOT NULL;

GRANT USAGE ON SCHEMA ingest, crm TO ingest_runtime;
GRANT SELECT ON public.ingest_migrations TO ingest_runtime;  -- /readyz
GRANT SELECT ON ALL TABLES IN SCHEMA crm TO ingest_runtime;  -- exports read marketing_allowed
GRANT SELECT, INSERT, UPDATE, DELETE
   ON ingest.contacts, ingest.submissions, ingest.submission_purposes, ingest.pending_chats,
      ingest.suppressions
   TO ingest_runtime;
GRANT SELECT, INSERT, UPDATE ON ingest.deliveries, ingest.subject_requests TO ingest_runtime;
GRANT SELECT, INSERT ON ingest.consent_texts, ingest.subject_events, ingest.settings TO ingest_runtime;
-- The ledgers: append only. (Erasure unlinks consent events through their foreign keys,
-- which PostgreSQL runs with the table owner's rights.)
GRANT SELECT, INSERT ON ingest.consent_events, ingest.audit_log TO ingest_runtime;
GRANT SELECT, UPDATE ON ingest.chain_heads, ingest.feed_lock, ingest.leases TO ingest_runtime;

-- What every role inherits from PUBLIC in this database (CONNECT, TEMPORARY) is taken away
-- by `ingest migrate` on every run (ingest/migrations.py): database privileges are not
-- copied when a database is created from a template, so they cannot live in a migration.
REVOKE CREATE ON SCHEMA public FROM PUBLIC;

-- Large objects: any role may create them through these functions. Revoking EXECUTE on
-- pg_catalog functions takes a superuser: done here when the migration runs as one
-- (the embedded default, tests), else by the server's own set-up as a superuser
-- (deploy/k8s postgres-cluster.yaml postInitApplicationSQL, deploy/compose-initdb/10-roles.sh).
DO $$
BEGIN
    IF (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) THEN
        REVOKE EXECUTE ON FUNCTION
            lo_create(oid), lo_creat(integer), lo_from_bytea(oid, bytea), lo_put(oid, bigint, bytea),
            lowrite(integer, bytea), lo_open(oid, integer), lo_unlink(oid), lo_truncate(integer, integer),
            lo_truncate64(integer, bigint), lo_import(text), lo_import(text, oid)
          FROM PUBLIC;
    END IF;
END $$;
