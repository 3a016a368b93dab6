-- The W3C `traceparent` a submission carried: every attempt's span
-- continues that trace (see the SQLite migration 9).
ALTER TABLE jobs ADD COLUMN traceparent TEXT;
