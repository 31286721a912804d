-- pgbench: the moonshot's yardstick, two inserts in one transaction (a contact and
-- its submission), with the server's defaults (synchronous_commit on). bench/run.py
-- creates the tables in a fresh database and runs: pgbench -n -M prepared -c 64 -j 2.
\set n random(1, 2000000000)
BEGIN;
INSERT INTO contacts (email_hash, name, email, phone)
  VALUES (md5(:n::text), 'Bench Person', 'bench-' || :n || '@example.fi', '+358401234567');
INSERT INTO submissions (contact_email_hash, message)
  VALUES (md5(:n::text), 'Benchmark message, please call me.');
END;
