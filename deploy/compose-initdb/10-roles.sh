#!/bin/sh
# Run once by the postgres image on an empty data directory, as the superuser: the
# roles of docs' least-privilege model and the database, owned by ingest_owner. The
# migrations (`ingest migrate`, as ingest_owner) grant the table privileges.
# Passwords are read from the compose secrets and passed as psql variables (:'name'
# quotes them), so no character in them needs escaping.
for name in ingest_owner_password ingest_app_password crm_app_password; do
    if [ ! -s "/run/secrets/$name" ]; then
        echo "10-roles.sh: /run/secrets/$name is missing or empty (deploy/compose.secrets/README.md)" >&2
        exit 1
    fi
done

psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
    -v owner_pw="$(cat /run/secrets/ingest_owner_password)" \
    -v app_pw="$(cat /run/secrets/ingest_app_password)" \
    -v crm_pw="$(cat /run/secrets/crm_app_password)" <<'SQL' || exit 1
CREATE ROLE ingest_owner LOGIN PASSWORD :'owner_pw';
CREATE ROLE ingest_runtime NOLOGIN;
CREATE ROLE ingest_app LOGIN PASSWORD :'app_pw' IN ROLE ingest_runtime;
CREATE ROLE crm_reader NOLOGIN;
CREATE ROLE crm_app LOGIN PASSWORD :'crm_pw' IN ROLE crm_reader;
CREATE DATABASE customers OWNER ingest_owner;
SQL

# What the owner cannot do itself (sql/006_least_privilege.sql does it only as a superuser).
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname customers <<'SQL' || exit 1
REVOKE EXECUTE ON FUNCTION
    lo_create(oid), lo_creat(integer), lo_from_bytea(oid, bytea), lo_put(oid, bigint, bytea),
    lowrite(integer, bytea), lo_open(oid, integer), lo_unlink(oid), lo_truncate(integer, integer),
    lo_truncate64(integer, bigint), lo_import(text), lo_import(text, oid)
  FROM PUBLIC;
SQL
