-- Downloads in progress, published by each node (schema version 5).
--
-- open_readers: the objects a node's downloads have held open for more than a few seconds,
-- rewritten by that node every few seconds (its whole set at once). The garbage collector
-- keeps a replaced or removed object while a fresh row names it; rows of a node that stopped
-- rewriting them (crashed, cut off) go stale and stop counting. Object keys are random ids:
-- no name, no user.
CREATE TABLE open_readers (
    node_name  VARBINARY(255) NOT NULL,
    object_key VARBINARY(128) NOT NULL,
    seen_ms    BIGINT         NOT NULL,
    PRIMARY KEY (node_name, object_key),
    INDEX open_readers_object (object_key, seen_ms)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;
