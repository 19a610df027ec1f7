//! The one error type of the storage layer, worded for the operator who typed the command.

use sea_orm::{DbErr, SqlErr};

/// What went wrong in a store operation.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The named thing does not exist, e.g. "no application server named shop9".
    #[error("{0}")]
    NotFound(String),
    /// The thing already exists, e.g. "user alice already exists".
    #[error("{0}")]
    Conflict(String),
    /// The input is malformed, e.g. "user name must not contain ':'".
    #[error("{0}")]
    Invalid(String),
    /// The database failed or could not be reached.
    #[error("database error: {0}")]
    Db(#[from] DbErr),
}

impl StoreError {
    /// A failure on our side that is not the database's own error (a record that does not
    /// read back): reported like a database error, never shown to clients.
    pub fn internal(message: impl Into<String>) -> Self {
        StoreError::Db(DbErr::Custom(message.into()))
    }

    /// Maps a UNIQUE (or primary key) violation to [`StoreError::Conflict`] with `message`;
    /// every other database error stays [`StoreError::Db`].
    pub(crate) fn conflict_on_unique(err: DbErr, message: impl FnOnce() -> String) -> Self {
        match err.sql_err() {
            Some(SqlErr::UniqueConstraintViolation(_)) => StoreError::Conflict(message()),
            _ => StoreError::Db(err),
        }
    }
}
