-- Pacing that adapts.
--
-- `quick_tries`: the tries a channel's `quick_retry` sent again at once
-- within the attempt (the answer recorded is the last one's).
-- BIGINT as every integer the stores read (store/rows.rs).
ALTER TABLE attempts ADD COLUMN quick_tries BIGINT NOT NULL DEFAULT 0;
