//! How the shared row conversions ([`crate::rows`]) read a PostgreSQL row: integers of
//! any width, `TEXT[]` tags, and errors as [`LogError`].

use crier_core::LogError;
use tokio_postgres::types::Type;
use tokio_postgres::Row;

use super::backend;
use crate::rows::Columns;

impl Columns for Row {
    type Error = LogError;

    fn opt_text(&self, i: usize) -> Result<Option<String>, LogError> {
        self.try_get(i).map_err(backend)
    }

    /// `SMALLINT`, `INTEGER` and `BIGINT` columns alike.
    fn opt_int(&self, i: usize) -> Result<Option<i64>, LogError> {
        let width = self.columns().get(i).map(|c| c.type_().clone());
        match width {
            Some(Type::INT2) => self.try_get::<_, Option<i16>>(i).map(|v| v.map(i64::from)),
            Some(Type::INT4) => self.try_get::<_, Option<i32>>(i).map(|v| v.map(i64::from)),
            _ => self.try_get(i),
        }
        .map_err(backend)
    }

    fn bytes(&self, i: usize) -> Result<Vec<u8>, LogError> {
        self.try_get(i).map_err(backend)
    }

    /// A `TEXT[]` column.
    fn tags(&self, i: usize) -> Result<Vec<String>, LogError> {
        self.try_get(i).map_err(backend)
    }

    fn invalid(&self, _: usize, what: String) -> LogError {
        backend(std::io::Error::other(what))
    }
}
