//! How MySQL rows hand their columns to the shared decoders in `crate::rows`.

use sqlx::Row;
use sqlx::mysql::MySqlRow;

use super::mysql_error;
use crate::MetaResult;
pub(super) use crate::rows::*;

fn get<'r, T>(row: &'r MySqlRow, column: &str) -> MetaResult<T>
where
    T: sqlx::Decode<'r, sqlx::MySql> + sqlx::Type<sqlx::MySql>,
{
    row.try_get(column).map_err(mysql_error)
}

impl Columns for MySqlRow {
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
    /// Identifiers are stored as VARBINARY (compared byte for byte), which sqlx will not
    /// decode as a string, so they are read as bytes and checked here.
    fn ident(&self, name: &'static str) -> MetaResult<String> {
        let bytes: Vec<u8> = get(self, name)?;
        String::from_utf8(bytes).map_err(|_| corrupt(name))
    }
    fn opt_text(&self, name: &'static str) -> MetaResult<Option<String>> {
        get(self, name)
    }
}
