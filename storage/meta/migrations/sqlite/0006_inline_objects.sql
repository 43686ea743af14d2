-- Small objects inline in their file's row (schema version 6).
--
-- inline_object: the sealed object itself (the format's bytes, docs/FORMAT.md: header and
-- AES-256-GCM chunks, never plaintext) when it is no larger than `uploads.inline_max_bytes`;
-- NULL when the object lives in the primary object store under object_key. The bytes go with
-- the row: a replace overwrites them, a delete removes them, a tenant delete takes them along.
-- object_key is still assigned and unique: the replica's copy is stored under it.
-- Node queries select `inline_object IS NOT NULL`, never the bytes; only a read of the file,
-- the replicator and fsck fetch them, by object_key.
ALTER TABLE nodes ADD COLUMN inline_object BLOB NULL;
