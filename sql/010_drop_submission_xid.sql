-- 010: ingest.submissions.xid was written (by its default) and read nowhere: the crm feed
-- orders by seq under the feed lock (003). No view uses it; privileges are per table and
-- unchanged.
ALTER TABLE ingest.submissions DROP COLUMN xid;
