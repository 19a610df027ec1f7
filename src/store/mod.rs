//! Storage: sea-orm over SQLite or PostgreSQL, behind one [`Store`] handle.
//!
//! The rest of the crate sees plain record types ([`UserRecord`], [`SessionRecord`], …) and one
//! error type, [`StoreError`]; the sea-orm entities stay private to this module.
//!
//! - [`Store::connect`] opens the database named by a URL and applies pending migrations.
//! - Administration: users (stored as digest HA1 hashes, never passwords), application
//!   servers, services and the ordered application servers that deliver them.
//! - [`Store::load_directory`] reads everything the relay caches, in a handful of queries.
//! - Sessions are written by the group-commit [`SessionWriter`], read by
//!   [`Store::list_sessions`] / [`Store::get_session`], and closed honestly after a crash by
//!   [`Store::resume_sessions`].
//! - Registrar bindings: [`Store::save_binding`] and friends.
//! - Session-token signing keys: [`Store::signing_keys`], [`Store::ensure_signing_keys`],
//!   [`Store::rotate_signing_keys`] (the keys themselves are made in [`crate::tokens`]).
//! - For the REST API: application servers' API keys, kept as SHA-256 digests
//!   ([`Store::add_app_server_with_key`], [`Store::app_server_for_api_key`]); lookups by id;
//!   sessions a page at a time ([`Store::page_sessions`] with a [`SessionQuery`]).
//!
//! - Billing: tariff versions ([`Store::set_tariff`]), the append-only ledger (item charges
//!   in batches with their idempotency records, [`Store::apply_charges`]; adjustments; time
//!   charges written by the session writer), the webhook outbox and its delivery log.
//!
//! On SQLite every pooled connection runs in WAL mode with `synchronous=FULL`,
//! `busy_timeout=5000`, a 1 GiB `mmap_size` and foreign keys on; write transactions start with
//! `BEGIN IMMEDIATE` so two writers queue on the busy timeout instead of failing on a lock
//! upgrade.

mod api_keys;
mod api_queries;
mod bindings;
mod directory;
mod entities;
mod error;
mod idempotency;
mod keys;
mod ledger;
mod nonce_keys;
mod period;
mod session_changes;
mod session_writer;
mod sessions;
mod tariffs;
mod users;
mod webhooks;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;

use migration::{Migrator, MigratorTrait};
use sea_orm::sqlx::postgres::PgConnectOptions;
use sea_orm::sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};
use sea_orm::sqlx::{ConnectOptions as _, Connection as _};
use sea_orm::{
    AccessMode, ConnectOptions, Database, DatabaseBackend, DatabaseConnection, DatabaseTransaction,
    DbErr, IsolationLevel, RuntimeErr, SqliteTransactionMode, TransactionOptions, TransactionTrait,
};

pub use api_keys::API_KEY_PREFIX;
pub use api_queries::{AppServerChange, SessionQuery};
pub use bindings::Binding;
pub use directory::{
    AppServerRecord, Directory, DirectoryService, ForkMode, ServiceRecord, UserCredentials,
};
pub use error::StoreError;
pub use idempotency::{IdempotencyKey, Recorded, StoredResponse, IDEMPOTENCY_TTL_MS};
pub use keys::{KeyRotation, KeyStatus, NewSigningKey, SigningKeyRecord};
pub use ledger::{
    AdjustmentOutcome, ChargeOutcome, ChargeRequest, LedgerQuery, LedgerRecord, NewAdjustment,
    KIND_ADJUSTMENT, KIND_ITEM, KIND_TIME,
};
pub use nonce_keys::{NonceKeyRecord, KEPT_KEYS};
pub use period::{EntryRef, PeriodScope, PeriodVisitor};
pub use session_changes::{SessionChange, MAX_CHANGE_BODY};
pub use session_writer::{SessionEvent, SessionWriter, WriterTrouble};
pub use sessions::{
    EndReason, Party, Resumed, ResumedSession, SessionFilter, SessionRecord, SessionState,
};
pub use tariffs::TariffRecord;
pub use users::UserRecord;
pub use webhooks::{
    event_id, AttemptOutcome, DeliveryQuery, DeliveryRecord, DueEvent, EVENT_DELIVERED,
    EVENT_FAILED, EVENT_PENDING,
};

/// How long a query may wait for a pooled connection unless told otherwise
/// ([`Store::connect_with`]; the relay takes `[database] acquire_timeout_secs`). Tests under
/// tokio's paused clock, which jumps to the next timer whenever every task is idle (also while
/// SQLite works on its own thread), configure a long one.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

/// SQLite's `busy_timeout`: how long a writer waits for another connection's write lock.
const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_millis(5000);

/// How much of a SQLite database file each connection reads through a memory map (SQLite's
/// `mmap_size`). Without it every page a read misses in the connection's small page cache is a
/// `pread` (a 100 000-entry statement spent 40 % of its CPU in the kernel, copying pages); with
/// it, pages are read where the kernel's page cache holds them. Only reads use the map.
const SQLITE_MMAP_BYTES: u64 = 1 << 30;

/// Pooled connections to a file-backed SQLite database (WAL lets readers run beside the writer).
const SQLITE_FILE_CONNECTIONS: u32 = 4;

/// Pooled connections to PostgreSQL.
const POSTGRES_CONNECTIONS: u32 = 10;

/// How long after a session ends charges are still accepted when no one says otherwise
/// (`[billing] charge_grace_secs`).
pub const DEFAULT_CHARGE_GRACE_MS: i64 = 600_000;

/// A handle on the database; cheap to clone (it shares one connection pool).
#[derive(Clone, Debug)]
pub struct Store {
    db: DatabaseConnection,
    /// The ledger's rule for late charges: a session takes charges until this long after it
    /// ended (`[billing] charge_grace_secs`).
    charge_grace_ms: i64,
    /// Whole-period reads (statements, settlements) hold a pooled connection while their
    /// client reads; at most half the pool's connections at once, so the relay keeps the rest.
    period_reads: Arc<Semaphore>,
}

impl Store {
    /// Opens the database at `url` and applies pending migrations.
    ///
    /// Accepted URLs: `sqlite://path/to/file.db` (the file is created when missing unless the
    /// URL sets its own `mode=`), `sqlite::memory:`, and `postgres://…` / `postgresql://…`.
    pub async fn connect(url: &str) -> Result<Store, StoreError> {
        Self::connect_with(url, ACQUIRE_TIMEOUT).await
    }

    /// Like [`Store::connect`], with the time a query may wait for a pooled connection.
    pub async fn connect_with(url: &str, acquire_timeout: Duration) -> Result<Store, StoreError> {
        let mut opts = ConnectOptions::new(url.to_owned());
        opts.sqlx_logging(false).acquire_timeout(acquire_timeout);
        let pool_size: u32;

        if url.starts_with("sqlite:") {
            let in_memory = is_sqlite_memory_url(url);
            // A URL that says how to open the file (`?mode=rwc`, `?mode=ro`…) is obeyed as
            // sqlx parsed it; otherwise the file is created when missing.
            let says_mode = url_sets_param(url, "mode");
            let tune = move |o: SqliteConnectOptions| {
                let o = o
                    .foreign_keys(true)
                    .synchronous(SqliteSynchronous::Full)
                    .busy_timeout(SQLITE_BUSY_TIMEOUT)
                    .pragma("mmap_size", SQLITE_MMAP_BYTES.to_string());
                let o = if says_mode {
                    o
                } else {
                    o.create_if_missing(true)
                };
                // An in-memory database has no file to log ahead of.
                if in_memory {
                    o
                } else {
                    o.journal_mode(SqliteJournalMode::Wal)
                }
            };
            // The file is made here (mode 0600) when the URL lets it be created.
            let creates = !says_mode || url.contains("mode=rwc");
            if let Some(path) = sqlite_file(url).filter(|_| creates) {
                create_private(&path).map_err(|e| {
                    StoreError::internal(format!("cannot create {}: {e}", path.display()))
                })?;
            }
            if !in_memory {
                // Switching a new database file to WAL takes an exclusive lock that
                // busy_timeout does not wait for, so do it once, on one connection, before the
                // pool opens several at once. On a file already in WAL this is a no-op.
                let conn = tune(url.parse().map_err(sqlx_conn_err)?)
                    .connect()
                    .await
                    .map_err(sqlx_conn_err)?;
                conn.close().await.map_err(sqlx_conn_err)?;
            }
            opts.map_sqlx_sqlite_opts(tune);
            // One connection for an in-memory database: more would contend on shared-cache
            // table locks, which ignore busy_timeout. Connections are opened up front and kept:
            // no idle reaping, no pings (an embedded database has no network to lose).
            let size = if in_memory {
                1
            } else {
                SQLITE_FILE_CONNECTIONS
            };
            pool_size = size;
            opts.max_connections(size)
                .min_connections(size)
                .idle_timeout(None)
                .max_lifetime(None)
                .test_before_acquire(false);
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            // One direct connection first: an unreachable server fails now, instead of the
            // pool retrying a refused connection until its (long) acquire timeout.
            let conn = url
                .parse::<PgConnectOptions>()
                .map_err(sqlx_conn_err)?
                .connect()
                .await
                .map_err(sqlx_conn_err)?;
            conn.close().await.map_err(sqlx_conn_err)?;
            pool_size = POSTGRES_CONNECTIONS;
            opts.max_connections(POSTGRES_CONNECTIONS)
                .test_before_acquire_if_idle_for(Duration::from_secs(30));
        } else {
            return Err(StoreError::Invalid(format!(
                "unsupported database URL {url:?}: expected sqlite://…, sqlite::memory: or postgres://…"
            )));
        }

        let db = Database::connect(opts).await?;
        Migrator::up(&db, None).await?;
        Ok(Store {
            db,
            charge_grace_ms: DEFAULT_CHARGE_GRACE_MS,
            period_reads: Arc::new(Semaphore::new((pool_size as usize / 2).max(1))),
        })
    }

    /// This handle with another charge grace window (`[billing] charge_grace_secs`).
    pub fn with_charge_grace_ms(mut self, grace_ms: i64) -> Store {
        self.charge_grace_ms = grace_ms.max(0);
        self
    }

    /// The underlying sea-orm connection pool, for queries this module does not offer.
    pub fn connection(&self) -> &DatabaseConnection {
        &self.db
    }

    /// Starts a write transaction. On SQLite it takes the write lock at once (`BEGIN
    /// IMMEDIATE`), so a transaction that reads before it writes cannot fail on the upgrade.
    /// Whether the database takes writes now: a write transaction is begun and rolled back
    /// (on SQLite that takes the write lock, which a plain `SELECT 1` would not notice).
    pub(crate) async fn takes_writes(&self) -> bool {
        match self.begin_write().await {
            Ok(txn) => txn.rollback().await.is_ok(),
            Err(_) => false,
        }
    }

    async fn begin_write(&self) -> Result<DatabaseTransaction, DbErr> {
        self.db
            .begin_with_options(TransactionOptions {
                sqlite_transaction_mode: Some(SqliteTransactionMode::Immediate),
                ..Default::default()
            })
            .await
    }

    /// Starts a read-only transaction whose queries all see one snapshot (on PostgreSQL that
    /// needs REPEATABLE READ; a SQLite read transaction is a snapshot already).
    async fn begin_snapshot(&self) -> Result<DatabaseTransaction, DbErr> {
        match self.db.get_database_backend() {
            DatabaseBackend::Postgres => {
                self.db
                    .begin_with_config(
                        Some(IsolationLevel::RepeatableRead),
                        Some(AccessMode::ReadOnly),
                    )
                    .await
            }
            _ => self.db.begin().await,
        }
    }
}

/// The file of a SQLite URL (`sqlite://dir/t.db?…` → `dir/t.db`); `None` for another engine
/// or an in-memory database.
pub fn sqlite_file(url: &str) -> Option<std::path::PathBuf> {
    let rest = url.strip_prefix("sqlite:")?;
    let path = rest.trim_start_matches("//").split('?').next()?;
    (!path.is_empty() && !is_sqlite_memory_url(url)).then(|| std::path::PathBuf::from(path))
}

/// Creates the database file readable and writable by its owner only (mode 0600) when it does
/// not exist yet; SQLite gives its `-wal` and `-shm` files the same mode. An existing file is
/// left as the operator set it.
fn create_private(path: &std::path::Path) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    match options.open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

/// `sqlite::memory:`, `sqlite://:memory:` or any SQLite URL with `mode=memory`.
fn is_sqlite_memory_url(url: &str) -> bool {
    let path = url
        .trim_start_matches("sqlite:")
        .trim_start_matches("//")
        .split('?')
        .next()
        .unwrap_or_default();
    path == ":memory:"
        || url
            .split_once('?')
            .is_some_and(|(_, q)| q.split('&').any(|kv| kv == "mode=memory"))
}

/// A driver error while opening the database.
fn sqlx_conn_err(err: sea_orm::sqlx::Error) -> StoreError {
    StoreError::Db(DbErr::Conn(RuntimeErr::SqlxError(std::sync::Arc::new(err))))
}

/// Whether the URL's query string sets `name`.
fn url_sets_param(url: &str, name: &str) -> bool {
    url.split_once('?').is_some_and(|(_, query)| {
        query
            .split('&')
            .any(|kv| kv.split('=').next() == Some(name))
    })
}

/// Milliseconds since the Unix epoch, for administrative `created_at` stamps.
fn now_ms() -> i64 {
    use crate::clock::{Clock, SystemClock};
    SystemClock.now_ms()
}

/// A UUIDv7 (RFC 9562) for a row made at `now_ms`: the time in the first 48 bits, then 74
/// random bits. Ids made later sort later, so new rows land at the right edge of the
/// primary-key index instead of at random pages all over it: with random (v4) ids a batch of
/// 64 rows dirtied about 64 index pages, each one a WAL frame to write, fsync and checkpoint.
/// Used for the rows written on the hot path: sessions and ledger entries.
pub fn time_ordered_uuid(now_ms: i64) -> uuid::Uuid {
    let millis = u64::try_from(now_ms).unwrap_or(0);
    uuid::Builder::from_unix_timestamp_millis(millis, &rand::random()).into_uuid()
}

/// A fresh random id for a new row.
fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_files_are_read_from_urls() {
        use std::path::PathBuf;
        assert_eq!(
            sqlite_file("sqlite:///var/lib/t.db?mode=rwc"),
            Some(PathBuf::from("/var/lib/t.db"))
        );
        assert_eq!(sqlite_file("sqlite://t.db"), Some(PathBuf::from("t.db")));
        assert_eq!(sqlite_file("sqlite::memory:"), None);
        assert_eq!(sqlite_file("postgres://db/t"), None);
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn a_new_database_and_its_wal_are_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("t.db");
        let store = Store::connect(&format!("sqlite://{}", file.display()))
            .await
            .unwrap();
        store.nonce_keys(0, 1_000, 0).await.unwrap();
        for name in ["t.db", "t.db-wal", "t.db-shm"] {
            let path = dir.path().join(name);
            let mode = std::fs::metadata(&path)
                .unwrap_or_else(|e| panic!("{name}: {e}"))
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{name}");
        }
    }
}
