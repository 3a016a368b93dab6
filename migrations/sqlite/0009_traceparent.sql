-- The W3C `traceparent` a submission carried (`[telemetry] otlp_endpoint`):
-- every attempt's span continues that trace, on whichever node and however
-- late it runs. NULL for jobs submitted without one. A new last column:
-- `RETURNING *` rows are read by position (store/sqlite/writer.rs).
ALTER TABLE jobs ADD COLUMN traceparent TEXT;
