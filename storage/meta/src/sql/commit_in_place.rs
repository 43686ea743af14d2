//! The commit of a file on the SQLite writer of `in_place.rs`: the two cases every upload
//! ends in, written with the statements and values of `namespace.rs`.
//!
//! - A new name (`expect_absent`): the insert that succeeds only if the folder exists and
//!   the name is free there.
//! - A replace of the version the upload read (`expect_node`): that row, by id, still in the
//!   same folder, at the same version, still a file; then its update.
//!
//! Anything else — the name taken after all, the row moved or changed, a rename racing the
//! upload — is rolled back and left to the pool's path (`Sql::commit_file`), which answers
//! every case (`Conflict`, `WrongKind`, create-or-replace). What the commit queues after its
//! row and the quota it checks are [`after_commit_steps`] and the same quota rule as there.

use rusqlite::{ErrorCode, OptionalExtension, Transaction, params_from_iter};

use super::Dialect;
use super::namespace::{
    INSERT_FILE_IF_FREE, NODE_BY_ID_PLAIN, QUOTA, REPLACE_CONTENT, UsageChange, after_commit_steps,
    checks_quota, insert_if_free_params, is_expected_file, replace_params, replaced,
};
use crate::in_place::{InPlaceRow, Written};
use crate::rows;
use crate::sqlite::SqliteDialect;
use crate::{CommitFile, CommitOutcome, FileContent, MetaError};

/// Whether `file` is one of the two cases committed here (the others go to the pool at once).
pub(crate) fn handles(file: &CommitFile) -> bool {
    file.expect_node.is_some() || file.expect_absent
}

/// Commits `file` in `tx` if it is one of the two common cases; `Elsewhere` otherwise.
pub(crate) fn commit_file(
    tx: &Transaction<'_>,
    file: &CommitFile,
) -> rusqlite::Result<Written<CommitOutcome>> {
    if file.expect_node.is_none() && file.expect_absent {
        let inserted = tx
            .prepare_cached(INSERT_FILE_IF_FREE)?
            .execute(params_from_iter(insert_if_free_params(file)));
        match inserted {
            Ok(1) => {}
            Ok(_) => return Ok(Written::Elsewhere),
            Err(e) if e.sqlite_error_code() == Some(ErrorCode::ConstraintViolation) => {
                return Ok(Written::Elsewhere);
            }
            Err(e) => return Err(e),
        }
        let outcome = CommitOutcome {
            node: file.new_node(),
            created: true,
        };
        return after_commit(tx, file, UsageChange::created(file), None, outcome);
    }
    let Some((id, version)) = file.expect_node else {
        return Ok(Written::Elsewhere);
    };
    let old = tx
        .prepare_cached(NODE_BY_ID_PLAIN)?
        .query_row((file.tenant_id, id), |row| Ok(rows::node(&InPlaceRow(row))))
        .optional()?;
    let old = match old {
        Some(Ok(node)) if is_expected_file(&node, file, version) => node,
        Some(Err(corrupt)) => return Ok(Written::Refuse(corrupt)),
        Some(Ok(_)) | None => return Ok(Written::Elsewhere),
    };
    let updated = tx
        .prepare_cached(REPLACE_CONTENT)?
        .execute(params_from_iter(replace_params(file, &old)))?;
    if updated != 1 {
        return Ok(Written::Elsewhere);
    }
    let (outcome, change, superseded) = replaced(old, file);
    after_commit(tx, file, change, superseded.as_ref(), outcome)
}

/// Counts the change in the usage, queues what the commit leaves to the background and checks
/// the quota: a commit that grows the tenant's usage beyond an enforced quota is refused (and
/// rolled back).
fn after_commit(
    tx: &Transaction<'_>,
    file: &CommitFile,
    change: UsageChange,
    superseded: Option<&FileContent>,
    outcome: CommitOutcome,
) -> rusqlite::Result<Written<CommitOutcome>> {
    for (sql, params) in after_commit_steps::<SqliteDialect>(file, change, superseded) {
        tx.prepare_cached(sql)?.execute(params_from_iter(params))?;
    }
    if !checks_quota(file, change.bytes) {
        return Ok(Written::Commit(outcome));
    }
    let quota: Option<Option<i64>> = tx
        .prepare_cached(QUOTA)?
        .query_row([file.tenant_id], |row| row.get(0))
        .optional()?;
    let Some(quota) = quota else {
        return Ok(Written::Refuse(MetaError::NotFound));
    };
    if let Some(quota) = quota {
        let used: i64 = tx
            .prepare_cached(SqliteDialect::USAGE)?
            .query_row([file.tenant_id], |row| row.get("bytes"))?;
        if used > quota {
            return Ok(Written::Refuse(MetaError::QuotaExceeded));
        }
    }
    Ok(Written::Commit(outcome))
}
