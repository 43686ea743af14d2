-- Small objects inline in their file's row (schema version 6).
--
-- inline_object: the sealed object itself (the format's bytes, docs/FORMAT.md: header and
-- AES-256-GCM chunks, never plaintext) when it is no larger than `uploads.inline_max_bytes`
-- (at most 1 MiB, well under MEDIUMBLOB's 16 MiB and the default max_allowed_packet); NULL
-- when the object lives in the primary object store under object_key. The bytes go with the
-- row: a replace overwrites them, a delete removes them, a tenant delete takes them along.
-- InnoDB keeps a long value off the row's page (DYNAMIC row format), so listings, which
-- select `inline_object IS NOT NULL` and never the bytes, do not read it.
ALTER TABLE nodes ADD COLUMN inline_object MEDIUMBLOB NULL;
