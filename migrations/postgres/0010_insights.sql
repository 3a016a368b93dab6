-- Channel insights: hourly counts per channel, added to by every node and
-- summed by readers (src/pacing/insights.rs). `metric` is `attempts` or
-- `successes` (keyed by attempt number), `errors` (keyed by error kind or
-- `status:NNN`) or `latency` (keyed by latency bucket). `hour` is the
-- hour's start in milliseconds.
CREATE TABLE insight_counts (
    channel TEXT COLLATE "C" NOT NULL,
    hour    BIGINT NOT NULL,
    metric  TEXT COLLATE "C" NOT NULL CHECK (metric = 'attempts' OR metric = 'successes'
                OR metric = 'errors' OR metric = 'latency'),
    key     TEXT COLLATE "C" NOT NULL,
    count   BIGINT NOT NULL,
    PRIMARY KEY (channel, hour, metric, key)
);

CREATE INDEX insight_counts_by_hour ON insight_counts (hour);

-- Failed attempts per channel and second, added to by every node, summed
-- over a channel's `slow_down.per` to know whether it is past its
-- `errors` (src/pacing/errors.rs). `second` in milliseconds; kept a day.
CREATE TABLE channel_errors (
    channel TEXT COLLATE "C" NOT NULL,
    second  BIGINT NOT NULL,
    count   BIGINT NOT NULL,
    PRIMARY KEY (channel, second)
);
