//! How SQLite rows hand their columns to the shared decoders in `crate::rows`.

use sqlx::Row;
use sqlx::sqlite::SqliteRow;

use super::sqlite_error;
use crate::MetaResult;
pub(super) use crate::rows::*;

fn get<'r, T>(row: &'r SqliteRow, column: &str) -> MetaResult<T>
where
    T: sqlx::Decode<'r, sqlx::Sqlite> + sqlx::Type<sqlx::Sqlite>,
{
    row.try_get(column).map_err(sqlite_error)
}

impl Columns for SqliteRow {
    fn int(&self, name: &'static str) -> MetaResult<i64> {
        get(self, name)
    }
    fn opt_int(&self, name: &'static str) -> MetaResult<Option<i64>> {
        get(self, name)
    }
    fn flag(&self, name: &'static str) -> MetaResult<bool> {
        get(self, name)
    }
    fn blob(&self, name: &'static str) -> MetaResult<Vec<u8>> {
        get(self, name)
    }
    fn ident(&self, name: &'static str) -> MetaResult<String> {
        get(self, name)
    }
    fn opt_text(&self, name: &'static str) -> MetaResult<Option<String>> {
        get(self, name)
    }
}
