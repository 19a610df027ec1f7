//! Whole periods of the ledger, for statements and settlements: read in one snapshot and
//! handed to a [`PeriodVisitor`] entry by entry, each borrowed from the row it was read from.
//! A statement of 100 000 entries is written out while it is read, with no copy of every row
//! in between and no second copy of the whole answer (decision 0013).
//!
//! Both engines are read on a blocking thread, since a visitor may block (on a slow HTTP
//! client, say). SQLite is read through rusqlite on one of the pool's own connections, whose
//! raw handle sqlx lends while it keeps its own worker away from it: sqlx's SQLite driver
//! copies every value of every row and hands rows over one at a time, four times slower for
//! this read. PostgreSQL is read as sqlx's row stream, each row borrowed as it comes.

use futures_util::TryStreamExt;
use rusqlite::types::Type;
use sea_orm::sqlx::postgres::PgRow;
use sea_orm::sqlx::{self, Row};
use sea_orm::{DbBackend, DbErr, RuntimeErr};
use tokio::runtime::Handle;

use super::ledger::LedgerRecord;
use super::sessions::SessionState;
use super::{Store, StoreError};
use crate::billing::money::Money;
use crate::billing::statement::StatementSession;

/// Whose period is read.
#[derive(Debug, Clone, Copy)]
pub enum PeriodScope<'a> {
    /// A user's: the sessions that ended in the period, then the ledger entries.
    User(&'a str),
    /// An application server's: the ledger entries that name it.
    AppServer(&'a str),
}

/// One ledger entry, borrowed from its row.
#[derive(Debug, Clone, Copy)]
pub struct EntryRef<'a> {
    pub id: &'a str,
    pub kind: &'a str,
    pub source: &'a str,
    pub user_id: &'a str,
    pub app_server_id: Option<&'a str>,
    pub session_id: Option<&'a str>,
    pub service_id: Option<&'a str>,
    pub description: &'a str,
    pub unit_amount: Option<i64>,
    pub quantity: Option<i64>,
    pub amount: i64,
    pub currency: &'a str,
    /// The stored JSON object, as text.
    pub metadata: Option<&'a str>,
    pub created_at: i64,
}

impl EntryRef<'_> {
    /// The entry as an owned record.
    pub fn to_record(&self) -> LedgerRecord {
        LedgerRecord {
            id: self.id.to_owned(),
            kind: self.kind.to_owned(),
            source: self.source.to_owned(),
            user_id: self.user_id.to_owned(),
            app_server_id: self.app_server_id.map(str::to_owned),
            session_id: self.session_id.map(str::to_owned),
            service_id: self.service_id.map(str::to_owned),
            description: self.description.to_owned(),
            unit_amount: self.unit_amount,
            quantity: self.quantity,
            amount: self.amount,
            currency: self.currency.to_owned(),
            metadata: self.metadata.and_then(|t| serde_json::from_str(t).ok()),
            created_at: self.created_at,
        }
    }
}

/// What reads a period. Its calls run on a blocking thread; an error stops the read.
pub trait PeriodVisitor: Send + 'static {
    /// The sessions that ended in the period, oldest end first, each with its time charge;
    /// called once before the first entry, and only for [`PeriodScope::User`].
    fn sessions(&mut self, sessions: Vec<StatementSession>) -> Result<(), StoreError>;
    /// One entry booked in the period; entries come in `(created_at, id)` order.
    fn entry(&mut self, entry: &EntryRef<'_>) -> Result<(), StoreError>;
    /// After the last entry, still on the blocking thread.
    fn end(&mut self) -> Result<(), StoreError> {
        Ok(())
    }
}

/// Columns of an entry, in [`EntryRef`]'s order.
const ENTRY_COLUMNS: &str = "id, kind, source, user_id, app_server_id, session_id, service_id, \
                             description, unit_amount, quantity, amount, currency, metadata, \
                             created_at";

impl Store {
    /// Reads `scope`'s period `[from, to)` into `visitor`, in one snapshot, and gives it back.
    pub async fn read_period<V: PeriodVisitor>(
        &self,
        scope: PeriodScope<'_>,
        from: i64,
        to: i64,
        visitor: V,
    ) -> Result<V, StoreError> {
        let (column, id) = match scope {
            PeriodScope::User(id) => ("user_id", id),
            PeriodScope::AppServer(id) => ("app_server_id", id),
        };
        let query = PeriodQuery {
            sessions_sql: matches!(scope, PeriodScope::User(_)).then(|| {
                format!(
                    "SELECT s.id, s.service_id, s.service, s.app_server_id, s.app_server, \
                     s.confirmed_at, s.ended_at, s.duration_ms, l.currency, l.amount \
                     FROM sessions s LEFT JOIN ledger_entries l ON l.id = 'tc_' || s.id \
                     WHERE s.{column} = $1 AND s.state = '{}' AND s.ended_at >= $2 \
                     AND s.ended_at < $3 ORDER BY s.ended_at, s.id",
                    SessionState::Terminated.as_str()
                )
            }),
            entries_sql: format!(
                "SELECT {ENTRY_COLUMNS} FROM ledger_entries WHERE {column} = $1 \
                 AND created_at >= $2 AND created_at < $3 ORDER BY created_at, id"
            ),
            id: id.to_owned(),
            from,
            to,
        };
        let permit = self
            .period_reads
            .clone()
            .acquire_owned()
            .await
            .map_err(|e| StoreError::internal(e.to_string()))?;
        let rt = Handle::current();
        let read = match self.db.get_database_backend() {
            DbBackend::Postgres => {
                let pool = self.db.get_postgres_connection_pool().clone();
                tokio::task::spawn_blocking(move || {
                    let _permit = permit;
                    query.read_postgres(&rt, &pool, visitor)
                })
            }
            _ => {
                let pool = self.db.get_sqlite_connection_pool().clone();
                tokio::task::spawn_blocking(move || {
                    let _permit = permit;
                    query.read_sqlite(&rt, &pool, visitor)
                })
            }
        };
        read.await
            .map_err(|e| StoreError::internal(format!("reading a period: {e}")))?
    }
}

/// The two statements of a period read, with `$1` = id, `$2` = from, `$3` = to (SQLite
/// reads `$1` as a named parameter, which binds by position all the same).
struct PeriodQuery {
    sessions_sql: Option<String>,
    entries_sql: String,
    id: String,
    from: i64,
    to: i64,
}

impl PeriodQuery {
    fn read_sqlite<V: PeriodVisitor>(
        self,
        rt: &Handle,
        pool: &sqlx::SqlitePool,
        mut visitor: V,
    ) -> Result<V, StoreError> {
        let mut pooled = rt.block_on(pool.acquire()).map_err(sqlx_err)?;
        let mut locked = rt.block_on(pooled.lock_handle()).map_err(sqlx_err)?;
        // SAFETY: `locked` keeps sqlx's worker off this handle until it is dropped, after
        // `db`; a connection made from a handle it did not open, rusqlite never closes.
        let db = unsafe { rusqlite::Connection::from_handle(locked.as_raw_handle().as_ptr()) }
            .map_err(lite_err)?;
        // One read transaction is one snapshot; dropping it rolls back.
        let snapshot = db.unchecked_transaction().map_err(lite_err)?;
        let params = rusqlite::params![self.id, self.from, self.to];
        if let Some(sql) = &self.sessions_sql {
            let mut select = snapshot.prepare(sql).map_err(lite_err)?;
            let sessions = select
                .query_map(params, |row| {
                    Ok(StatementSession {
                        id: row.get(0)?,
                        service_id: row.get(1)?,
                        service: row.get(2)?,
                        app_server_id: row.get(3)?,
                        app_server: row.get(4)?,
                        confirmed_at: row.get(5)?,
                        ended_at: row.get(6)?,
                        duration_ms: row.get(7)?,
                        time_charge: time_charge(row.get(8)?, row.get(9)?),
                    })
                })
                .map_err(lite_err)?
                .collect::<Result<Vec<_>, _>>()
                .map_err(lite_err)?;
            visitor.sessions(sessions)?;
        }
        let mut select = snapshot.prepare(&self.entries_sql).map_err(lite_err)?;
        let mut rows = select.query(params).map_err(lite_err)?;
        while let Some(row) = rows.next().map_err(lite_err)? {
            visitor.entry(&sqlite_entry(row).map_err(lite_err)?)?;
        }
        drop(rows);
        drop(select);
        drop(snapshot);
        drop(db);
        drop(locked);
        visitor.end()?;
        Ok(visitor)
    }

    fn read_postgres<V: PeriodVisitor>(
        self,
        rt: &Handle,
        pool: &sqlx::PgPool,
        mut visitor: V,
    ) -> Result<V, StoreError> {
        let mut snapshot = rt.block_on(pool.begin()).map_err(sqlx_err)?;
        rt.block_on(
            sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                .execute(&mut *snapshot),
        )
        .map_err(sqlx_err)?;
        if let Some(sql) = &self.sessions_sql {
            let rows = rt
                .block_on(
                    // Built from fixed text and a column the scope names.
                    sqlx::query(sqlx::AssertSqlSafe(sql.as_str()))
                        .bind(&self.id)
                        .bind(self.from)
                        .bind(self.to)
                        .fetch_all(&mut *snapshot),
                )
                .map_err(sqlx_err)?;
            let sessions = rows
                .iter()
                .map(|row| {
                    Ok(StatementSession {
                        id: row.try_get(0)?,
                        service_id: row.try_get(1)?,
                        service: row.try_get(2)?,
                        app_server_id: row.try_get(3)?,
                        app_server: row.try_get(4)?,
                        confirmed_at: row.try_get(5)?,
                        ended_at: row.try_get(6)?,
                        duration_ms: row.try_get(7)?,
                        time_charge: time_charge(row.try_get(8)?, row.try_get(9)?),
                    })
                })
                .collect::<Result<Vec<_>, sqlx::Error>>()
                .map_err(sqlx_err)?;
            visitor.sessions(sessions)?;
        }
        let mut rows = sqlx::query(sqlx::AssertSqlSafe(self.entries_sql.as_str()))
            .bind(&self.id)
            .bind(self.from)
            .bind(self.to)
            .fetch(&mut *snapshot);
        while let Some(row) = rt.block_on(rows.try_next()).map_err(sqlx_err)? {
            let entry = postgres_entry(&row).map_err(sqlx_err)?;
            visitor.entry(&entry)?;
        }
        drop(rows);
        rt.block_on(snapshot.rollback()).map_err(sqlx_err)?;
        visitor.end()?;
        Ok(visitor)
    }
}

/// An entry from a SQLite row of `ENTRY_COLUMNS`.
fn sqlite_entry<'r>(row: &'r rusqlite::Row<'_>) -> rusqlite::Result<EntryRef<'r>> {
    let text = |i: usize| -> rusqlite::Result<&'r str> {
        row.get_ref(i)?
            .as_str()
            .map_err(|e| rusqlite::Error::FromSqlConversionFailure(i, Type::Text, Box::new(e)))
    };
    let text_or_null = |i: usize| -> rusqlite::Result<Option<&'r str>> {
        row.get_ref(i)?
            .as_str_or_null()
            .map_err(|e| rusqlite::Error::FromSqlConversionFailure(i, Type::Text, Box::new(e)))
    };
    Ok(EntryRef {
        id: text(0)?,
        kind: text(1)?,
        source: text(2)?,
        user_id: text(3)?,
        app_server_id: text_or_null(4)?,
        session_id: text_or_null(5)?,
        service_id: text_or_null(6)?,
        description: text(7)?,
        unit_amount: row.get(8)?,
        quantity: row.get(9)?,
        amount: row.get(10)?,
        currency: text(11)?,
        metadata: text_or_null(12)?,
        created_at: row.get(13)?,
    })
}

/// An entry from a PostgreSQL row of `ENTRY_COLUMNS`. The columns' types are the schema's,
/// so they are decoded without sqlx's per-value type check (a tenth of a statement's CPU).
fn postgres_entry(row: &PgRow) -> Result<EntryRef<'_>, sqlx::Error> {
    Ok(EntryRef {
        id: row.try_get_unchecked(0)?,
        kind: row.try_get_unchecked(1)?,
        source: row.try_get_unchecked(2)?,
        user_id: row.try_get_unchecked(3)?,
        app_server_id: row.try_get_unchecked(4)?,
        session_id: row.try_get_unchecked(5)?,
        service_id: row.try_get_unchecked(6)?,
        description: row.try_get_unchecked(7)?,
        unit_amount: row.try_get_unchecked(8)?,
        quantity: row.try_get_unchecked::<Option<i32>, _>(9)?.map(i64::from),
        amount: row.try_get_unchecked(10)?,
        currency: row.try_get_unchecked(11)?,
        metadata: row.try_get_unchecked(12)?,
        created_at: row.try_get_unchecked(13)?,
    })
}

/// The time charge a LEFT JOIN found, if it found one.
fn time_charge(currency: Option<String>, amount: Option<i64>) -> Option<Money> {
    Some(Money {
        currency: currency?,
        amount: amount?,
    })
}

fn sqlx_err(e: sqlx::Error) -> StoreError {
    StoreError::Db(DbErr::Query(RuntimeErr::SqlxError(std::sync::Arc::new(e))))
}

fn lite_err(e: rusqlite::Error) -> StoreError {
    StoreError::Db(DbErr::Query(RuntimeErr::Internal(format!("sqlite: {e}"))))
}
