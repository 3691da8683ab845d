-- How PostgreSQL stores the large message bodies (issue 6, benchmark).
--
-- A request's body is a 12-lead ECG of up to ~120 KiB, written once into `review_requests` and
-- once into `outbox` for the lane message. With PostgreSQL's default (pglz), compressing those
-- values was the largest single cost of the whole relay in the drain benchmark: 7.3 ms of
-- database CPU per request insert and 1.1 ms per outbox insert (pg_stat_statements), for little
-- gain on sampled waveforms. Measured in one run: lz4 brought the two to 1.5 ms and 0.2 ms.
--
-- * `review_requests.body` is kept for years: lz4 still compresses what compresses (JSON-like
--   claim checks, FHIR), at a fraction of pglz's CPU. PostgreSQL 14 and later built with lz4
--   (Debian's and Ubuntu's packages, the official `postgres` image) support it.
-- * `outbox.body` lives for milliseconds, until the relay has published the row: it is not
--   compressed at all (`external`: out of line, uncompressed).
--
-- Only values written from now on are affected; nothing is rewritten.
alter table review_requests alter column body set compression lz4;
alter table outbox alter column body set storage external;
