-- Downloads in progress, published by each node (schema version 5).
--
-- open_readers: the objects a node's downloads have held open for more than a few seconds,
-- rewritten by that node every few seconds (its whole set at once). The garbage collector
-- keeps a replaced or removed object while a fresh row names it; rows of a node that stopped
-- rewriting them (crashed, cut off) go stale and stop counting. Object keys are random ids:
-- no name, no user.
CREATE TABLE open_readers (
    node_name  TEXT    NOT NULL,
    object_key TEXT    NOT NULL,
    seen_ms    INTEGER NOT NULL,
    PRIMARY KEY (node_name, object_key)
) STRICT;

CREATE INDEX open_readers_object ON open_readers (object_key, seen_ms);
