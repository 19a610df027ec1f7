//! The group-commit session writer: the relay's hot path to disk.
//!
//! The relay reports what happens to a session as [`SessionEvent`]s. [`SessionWriter::record`]
//! queues an event and returns at once (it never awaits); [`SessionWriter::record_durably`]
//! also hands back a receiver that resolves once the event is committed — the relay awaits it
//! before relaying the ACK that starts the billing clock.
//!
//! One task owns the writing:
//! ```text
//!  record()/record_durably() ──► bounded queue ──► writer task
//!                                                      │ take the first event, wait 5 ms, take
//!                                                      │ whatever else is queued (up to 1024)
//!                                                      │ BEGIN (IMMEDIATE on SQLite)
//!                                                      │   one multi-row INSERT for the Created
//!                                                      │   one UPDATE … FROM (VALUES …) per
//!                                                      │   kind of event, in lifecycle order
//!                                                      │   (Confirmed records the tariff version
//!                                                      │   in force, by a subquery)
//!                                                      │   Terminated: one SELECT, then one
//!                                                      │   INSERT of time charges into the ledger
//!                                                      │   and one of webhook outbox rows;
//!                                                      │   Confirmed: one SELECT + INSERT of
//!                                                      │   outbox rows (servers with a webhook)
//!                                                      │ COMMIT
//!                                                      ▼ answer every waiter of the batch
//! ```
//! A session's time charge is thus written in the transaction that terminates it, priced with
//! the tariff version recorded when it was confirmed; a session without a tariff (or never
//! confirmed) gets none. Batches grow with load, so these are a fixed number of statements per
//! batch, never a round trip per session.
//!
//! One commit (one fsync) per batch rather than per event is what lets SQLite keep up with
//! thousands of calls a second. Inserting the batch's `Created` events first is equivalent to
//! applying them in order, because a session's `Created` precedes its other events.
//!
//! The node's [`SessionEvent::Checkpoint`] moves `last_activity_at` of all its confirmed
//! sessions with one statement, after the batch's own updates: the proof of life a crash
//! bills to.
//!
//! Back-pressure: the queue is bounded ([`SessionWriter::spawn_with`]). [`SessionWriter::trouble`]
//! says when the node should refuse new sessions: the database is unreachable, or the queue is
//! more than half full. When a batch cannot reach the database, its durable waiters are
//! answered with the error at once; a confirmation is dropped (its ACK is not relayed), every
//! other event — a session's end above all — is kept, in order, and written first once a probe
//! (every second) finds the database back.
//!
//! When the database refuses one of a batch's statements (bad data in one event), the writer
//! retries the batch's events one by one, so one poisoned event cannot take the rest down with
//! it; when the transaction cannot begin or commit, or the database cannot be reached, the
//! whole batch is answered with the error. Failures
//! are logged with `tracing::error!`; the task never panics. It ends, after writing everything
//! queued, when the last [`SessionWriter`] clone is dropped.

use sea_orm::{
    ActiveValue::Set, ConnectionTrait, DatabaseTransaction, DbBackend, DbErr, EntityTrait,
    RuntimeErr, SqlxError, Statement, Value,
};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use super::entities::{session_changes as change_rows, sessions};
use super::session_changes::{change_row, SessionChange};
use super::sessions::{EndReason, SessionState};
use super::{Party, Store};

/// How long the writer waits after the first event of a batch for more to join it.
const GATHER: std::time::Duration = std::time::Duration::from_millis(5);

/// Most events written in one transaction.
const MAX_BATCH: usize = 1024;

/// Most rows in one multi-row INSERT (well under SQLite's and PostgreSQL's bind limits).
const INSERT_CHUNK: usize = 256;

/// Something that happened to a session. Timestamps are milliseconds since the epoch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionEvent {
    /// The relay forwarded an INVITE: a new session in state `trying`.
    Created {
        id: String,
        call_id: String,
        /// The authenticated user's name, and id.
        caller: String,
        user_id: String,
        /// `name@domain`, and the service's id.
        service: String,
        service_id: String,
        /// The application server's name, and id.
        app_server: String,
        app_server_id: String,
        node: String,
        at: i64,
    },
    /// The 2xx was ACKed: state `confirmed`; the billing clock starts at `at`. `dialog` is
    /// what a restarted relay needs to carry on with it (JSON), if it can.
    Confirmed {
        id: String,
        at: i64,
        status: u16,
        dialog: Option<String>,
    },
    /// The node's heartbeat: every session it holds confirmed was alive at `at` (one
    /// statement for all of them).
    Checkpoint { node: String, at: i64 },
    /// Last proof of life (an in-dialog request); a restart bills up to here.
    Activity { id: String, at: i64 },
    /// The session ended (its BYE answered, or the relay closed it): state `terminated`.
    Terminated {
        id: String,
        at: i64,
        duration_ms: i64,
        ended_by: Party,
        reason: EndReason,
    },
    /// The INVITE got a non-2xx final response: state `failed`.
    Failed { id: String, at: i64, status: u16 },
    /// The caller cancelled the INVITE: state `cancelled`.
    Cancelled { id: String, at: i64, status: u16 },
    /// A mid-session change (re-INVITE, UPDATE) was answered: one more row on the session.
    Changed(SessionChange),
}

/// Answers a `record_durably` caller: `Ok` once committed, or why not.
type Waiter = oneshot::Sender<Result<(), String>>;

struct Queued {
    event: SessionEvent,
    done: Option<Waiter>,
}

/// The queue's length when [`SessionWriter::spawn`] is not told otherwise.
pub const DEFAULT_QUEUE: usize = 50_000;

/// How often a writer that lost its database asks whether it is back.
const PROBE_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// A cheap, cloneable handle on the writer task.
#[derive(Clone, Debug)]
pub struct SessionWriter {
    tx: mpsc::Sender<Queued>,
    health: Arc<Health>,
}

/// What the writer knows about its database, shared with every handle.
#[derive(Debug)]
struct Health {
    /// The last transaction (or probe) reached the database.
    store_up: AtomicBool,
    /// The queue's capacity; past half of it the writer is behind.
    capacity: usize,
}

/// Why the writer cannot take a new session now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriterTrouble {
    /// The database cannot be reached; the writer keeps what it holds and retries.
    StoreDown,
    /// More than half of the queue is waiting for the database.
    Behind,
}

impl std::fmt::Display for WriterTrouble {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            WriterTrouble::StoreDown => "the session store is unavailable",
            WriterTrouble::Behind => "the session store is behind",
        })
    }
}

impl SessionWriter {
    /// Starts the writer task on the current tokio runtime, with a queue of [`DEFAULT_QUEUE`].
    pub fn spawn(store: Store) -> (SessionWriter, JoinHandle<()>) {
        Self::spawn_with(store, DEFAULT_QUEUE)
    }

    /// Starts the writer task with a queue of `capacity` events.
    pub fn spawn_with(store: Store, capacity: usize) -> (SessionWriter, JoinHandle<()>) {
        let capacity = capacity.max(2);
        let (tx, rx) = mpsc::channel(capacity);
        let health = Arc::new(Health {
            store_up: AtomicBool::new(true),
            capacity,
        });
        let writer = SessionWriter {
            tx,
            health: health.clone(),
        };
        (writer, tokio::spawn(run(store, rx, health)))
    }

    /// Queues `ev` to be written with the next batch. Never blocks; when the queue is full the
    /// event is refused and logged.
    pub fn record(&self, ev: SessionEvent) {
        self.enqueue(ev, None);
    }

    /// Queues `ev`; the receiver resolves once the transaction holding it has committed
    /// (`Ok`), or with the reason it was not written.
    pub fn record_durably(&self, ev: SessionEvent) -> oneshot::Receiver<Result<(), String>> {
        let (done, rx) = oneshot::channel();
        self.enqueue(ev, Some(done));
        rx
    }

    /// `Ok` while a new session can be taken: the database is reachable and the queue is
    /// less than half full.
    pub fn trouble(&self) -> Option<WriterTrouble> {
        if !self.health.store_up.load(Ordering::Acquire) {
            Some(WriterTrouble::StoreDown)
        } else if self.tx.capacity() < self.health.capacity / 2 {
            Some(WriterTrouble::Behind)
        } else {
            None
        }
    }

    fn enqueue(&self, event: SessionEvent, done: Option<Waiter>) {
        match self.tx.try_send(Queued { event, done }) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(lost)) => {
                tracing::error!(event = ?lost.event, "session writer queue full; event not recorded");
                answer(lost.done, Err("session writer queue full".to_owned()));
            }
            Err(mpsc::error::TrySendError::Closed(lost)) => {
                tracing::error!(event = ?lost.event, "session writer has stopped; event not recorded");
                answer(lost.done, Err("session writer has stopped".to_owned()));
            }
        }
    }
}

async fn run(store: Store, mut rx: mpsc::Receiver<Queued>, health: Arc<Health>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    // Events a lost database could not take, kept (in order, bounded by the queue) to be
    // written first when it is back. Their waiters have been answered already.
    let mut kept: Vec<Queued> = Vec::new();
    loop {
        if !health.store_up.load(Ordering::Acquire) {
            // Ask the database, not the queue, whether the writer may go on.
            let received = tokio::time::timeout(PROBE_EVERY, rx.recv_many(&mut batch, MAX_BATCH));
            let closed = matches!(received.await, Ok(0));
            if store.takes_writes().await {
                tracing::info!("the session store is back");
                health.store_up.store(true, Ordering::Release);
            } else if closed {
                tracing::error!(
                    events = kept.len(),
                    "the writer stops with the session store unavailable; these events are lost"
                );
                return;
            } else {
                // Nothing can be written: durable waiters learn it now; the rest is kept.
                for queued in batch.drain(..) {
                    let Some(queued) = settle_for_later(queued, "the session store is unavailable")
                    else {
                        continue;
                    };
                    if kept.len() < health.capacity {
                        kept.push(queued);
                    } else {
                        tracing::error!(event = ?queued.event, "session event dropped: the store is down and the backlog is full");
                    }
                }
                continue;
            }
        } else if kept.is_empty() && rx.recv_many(&mut batch, MAX_BATCH).await == 0 {
            return;
        }
        // Let the events of the next moment join this transaction: a commit costs about the
        // same CPU for one event or fifty, and the price is at most GATHER of extra latency
        // for an ACK waiting on its confirmation.
        tokio::time::sleep(GATHER).await;
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(queued) => batch.push(queued),
                Err(_) => break,
            }
        }
        if !kept.is_empty() {
            let mut first = std::mem::take(&mut kept);
            first.append(&mut batch);
            batch = first;
        }
        if let Some(lost) = write_batch(&store, &mut batch).await {
            tracing::error!(
                "the session store is unavailable; new sessions are refused until it is back"
            );
            health.store_up.store(false, Ordering::Release);
            kept = lost;
        }
    }
}

/// Writes and drains `batch`, answering every waiter in it. When the database could not be
/// reached, returns the batch's events (their waiters answered) to be written again later.
async fn write_batch(store: &Store, batch: &mut Vec<Queued>) -> Option<Vec<Queued>> {
    let events: Vec<&SessionEvent> = batch.iter().map(|q| &q.event).collect();
    match apply(store, &events).await {
        Ok(outcomes) => {
            for (queued, outcome) in batch.drain(..).zip(outcomes) {
                answer(queued.done, outcome);
            }
            None
        }
        Err(BatchFailure::Rejected(err)) if batch.len() > 1 => {
            tracing::error!(
                error = %err,
                events = batch.len(),
                "session batch rejected; writing its events one by one"
            );
            for queued in batch.drain(..) {
                let outcome = match apply(store, &[&queued.event]).await {
                    Ok(mut outcomes) => outcomes.pop().unwrap_or(Ok(())),
                    Err(BatchFailure::Rejected(err) | BatchFailure::Failed(err)) => {
                        tracing::error!(error = %err, event = ?queued.event, "session event not recorded");
                        Err(err.to_string())
                    }
                };
                answer(queued.done, outcome);
            }
            None
        }
        Err(BatchFailure::Rejected(err)) => {
            tracing::error!(error = %err, event = ?batch[0].event, "session event not recorded");
            for queued in batch.drain(..) {
                answer(queued.done, Err(err.to_string()));
            }
            None
        }
        Err(BatchFailure::Failed(err)) => {
            tracing::error!(error = %err, events = batch.len(), "session batch not recorded");
            let reason = err.to_string();
            // A waiter learns now that its event is not on disk (an ACK is then not relayed,
            // and its event is not written later either); the others are kept.
            let mut kept = Vec::new();
            for queued in batch.drain(..) {
                if let Some(queued) = settle_for_later(queued, &reason) {
                    kept.push(queued);
                }
            }
            Some(kept)
        }
    }
}

/// An event the database could not take now: its waiter learns so at once. A confirmation is
/// then dropped (its ACK is not relayed: the session never started); anything else — an end
/// above all — is handed back to be written once the database is back.
fn settle_for_later(mut queued: Queued, reason: &str) -> Option<Queued> {
    answer(queued.done.take(), Err(reason.to_owned()));
    (!matches!(queued.event, SessionEvent::Confirmed { .. })).then_some(queued)
}

fn answer(done: Option<Waiter>, outcome: Result<(), String>) {
    if let Some(done) = done {
        // The caller may have stopped waiting; that is its business.
        let _ = done.send(outcome);
    }
}

/// Why a batch wrote nothing.
enum BatchFailure {
    /// The database refused one of the batch's statements: an event may carry bad data, so
    /// writing the events one by one can save the others.
    Rejected(DbErr),
    /// The transaction could not start or commit, or the database could not be reached:
    /// retrying event by event would fail the same way.
    Failed(DbErr),
}

impl BatchFailure {
    /// A store helper's failure: a refused statement, or anything else that failed.
    fn of_store(err: super::StoreError) -> Self {
        match err {
            super::StoreError::Db(e) => BatchFailure::of_statement(e),
            other => BatchFailure::Failed(DbErr::Custom(other.to_string())),
        }
    }

    fn of_statement(err: DbErr) -> Self {
        let refused = match &err {
            DbErr::Exec(RuntimeErr::SqlxError(e)) | DbErr::Query(RuntimeErr::SqlxError(e)) => {
                matches!(**e, SqlxError::Database(_) | SqlxError::Encode(_))
            }
            _ => false,
        };
        if refused {
            BatchFailure::Rejected(err)
        } else {
            BatchFailure::Failed(err)
        }
    }
}

/// Applies `events` in one transaction. `Err` means nothing was written; otherwise one
/// outcome per event (an update that matched no session is reported, not fatal).
async fn apply(
    store: &Store,
    events: &[&SessionEvent],
) -> Result<Vec<Result<(), String>>, BatchFailure> {
    let txn = store.begin_write().await.map_err(BatchFailure::Failed)?;

    let created: Vec<sessions::ActiveModel> = events
        .iter()
        .filter_map(|ev| match ev {
            SessionEvent::Created {
                id,
                call_id,
                caller,
                user_id,
                service,
                service_id,
                app_server,
                app_server_id,
                node,
                at,
            } => Some(sessions::ActiveModel {
                id: Set(id.clone()),
                call_id: Set(call_id.clone()),
                caller: Set(caller.clone()),
                service: Set(service.clone()),
                app_server: Set(app_server.clone()),
                state: Set(SessionState::Trying.as_str().to_owned()),
                final_status: Set(None),
                created_at: Set(*at),
                confirmed_at: Set(None),
                ended_at: Set(None),
                duration_ms: Set(None),
                ended_by: Set(None),
                end_reason: Set(None),
                last_activity_at: Set(None),
                node: Set(node.clone()),
                user_id: Set(Some(user_id.clone())),
                service_id: Set(Some(service_id.clone())),
                app_server_id: Set(Some(app_server_id.clone())),
                tariff_id: Set(None),
                dialog: Set(None),
            }),
            _ => None,
        })
        .collect();
    for chunk in owned_chunks(created) {
        sessions::Entity::insert_many(chunk)
            .exec_without_returning(&txn)
            .await
            .map_err(BatchFailure::of_statement)?;
    }
    let changes: Vec<change_rows::ActiveModel> = events
        .iter()
        .filter_map(|ev| match ev {
            SessionEvent::Changed(change) => Some(change_row(change)),
            _ => None,
        })
        .collect();
    for chunk in owned_chunks(changes) {
        change_rows::Entity::insert_many(chunk)
            .exec_without_returning(&txn)
            .await
            .map_err(BatchFailure::of_statement)?;
    }

    // The other events, grouped by kind in lifecycle order (a session's Confirmed precedes its
    // Activity, which precedes its Terminated; Failed and Cancelled end a session that was
    // never confirmed), one statement per group chunk. A chunk that matches fewer rows than it
    // has events (an unknown id, or the same session twice) is redone event by event, which
    // tells which event missed.
    let mut outcomes: Vec<Result<(), String>> = vec![Ok(()); events.len()];
    let backend = txn.get_database_backend();
    for kind in UpdateKind::ALL {
        let group: Vec<usize> = (0..events.len())
            .filter(|i| UpdateKind::of(events[*i]) == Some(kind))
            .collect();
        for chunk in chunks_of_fixed_sizes(&group) {
            let statement = kind.statement(backend, chunk.iter().map(|i| events[*i]));
            let matched = txn
                .execute_raw(statement)
                .await
                .map_err(BatchFailure::of_statement)?
                .rows_affected();
            if matched == chunk.len() as u64 {
                continue;
            }
            for i in chunk {
                outcomes[*i] = update_one(&txn, events[*i]).await?;
            }
        }
    }

    // The node's heartbeat, after the batch's own ends (which it must not bill past).
    for ev in events {
        if let SessionEvent::Checkpoint { node, at } = ev {
            checkpoint(&txn, node, *at)
                .await
                .map_err(BatchFailure::of_statement)?;
        }
    }

    // Billing and webhooks of what this batch confirmed and terminated.
    let ids_of = |kind: UpdateKind| -> Vec<&str> {
        events
            .iter()
            .zip(&outcomes)
            .filter(|(ev, outcome)| UpdateKind::of(ev) == Some(kind) && outcome.is_ok())
            .filter_map(|(ev, _)| ev.session_id())
            .collect()
    };
    let confirmed = ids_of(UpdateKind::Confirmed);
    if !confirmed.is_empty() {
        super::ledger::announce_confirmed(&txn, &confirmed)
            .await
            .map_err(BatchFailure::of_store)?;
    }
    let terminated = ids_of(UpdateKind::Terminated);
    if !terminated.is_empty() {
        super::ledger::bill_sessions(&txn, &terminated)
            .await
            .map_err(BatchFailure::of_store)?;
    }

    txn.commit().await.map_err(BatchFailure::Failed)?;
    Ok(outcomes)
}

/// `rows` in chunks of at most `INSERT_CHUNK`, moved out rather than cloned.
fn owned_chunks<T>(rows: Vec<T>) -> impl Iterator<Item = Vec<T>> {
    let mut rows = rows.into_iter();
    std::iter::from_fn(move || {
        let chunk: Vec<T> = rows.by_ref().take(INSERT_CHUNK).collect();
        (!chunk.is_empty()).then_some(chunk)
    })
}

/// Records that the confirmed sessions of `node` were alive at `at`, and the node's heartbeat:
/// two statements, however many sessions.
async fn checkpoint(txn: &DatabaseTransaction, node: &str, at: i64) -> Result<(), DbErr> {
    let backend = txn.get_database_backend();
    let (p1, p2, p3) = match backend {
        DbBackend::Postgres => ("$1", "$2", "$3"),
        _ => ("?", "?", "?"),
    };
    txn.execute_raw(Statement::from_sql_and_values(
        backend,
        format!(
            "UPDATE sessions SET last_activity_at = {p1} WHERE node = {p2} AND state = '{}' \
             AND (last_activity_at IS NULL OR last_activity_at < {p3})",
            SessionState::Confirmed.as_str()
        ),
        [at.into(), node.into(), at.into()],
    ))
    .await?;
    txn.execute_raw(Statement::from_sql_and_values(
        backend,
        format!(
            "INSERT INTO nodes (id, heartbeat_at) VALUES ({p1}, {p2}) \
             ON CONFLICT (id) DO UPDATE SET heartbeat_at = excluded.heartbeat_at"
        ),
        [node.into(), at.into()],
    ))
    .await?;
    Ok(())
}

/// Applies one update event on its own (the batch statement with one row); reports an
/// event for an unknown session.
async fn update_one(
    txn: &DatabaseTransaction,
    ev: &SessionEvent,
) -> Result<Result<(), String>, BatchFailure> {
    let Some(kind) = UpdateKind::of(ev) else {
        return Ok(Ok(()));
    };
    let statement = kind.statement(txn.get_database_backend(), std::iter::once(ev));
    let matched = txn
        .execute_raw(statement)
        .await
        .map_err(BatchFailure::of_statement)?
        .rows_affected();
    let id = ev.session_id().unwrap_or_default();
    Ok(if matched == 0 {
        tracing::warn!(session = %id, event = ?ev, "session event for an unknown session");
        Err(format!("no session {id}"))
    } else {
        Ok(())
    })
}

impl SessionEvent {
    /// The session the event is about (none for a node's checkpoint).
    pub fn session_id(&self) -> Option<&str> {
        match self {
            SessionEvent::Created { id, .. }
            | SessionEvent::Confirmed { id, .. }
            | SessionEvent::Activity { id, .. }
            | SessionEvent::Terminated { id, .. }
            | SessionEvent::Failed { id, .. }
            | SessionEvent::Cancelled { id, .. } => Some(id),
            SessionEvent::Changed(change) => Some(&change.session_id),
            SessionEvent::Checkpoint { .. } => None,
        }
    }
}

/// The kinds of update event, in the order a batch applies them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum UpdateKind {
    Confirmed,
    Activity,
    Terminated,
    Failed,
    Cancelled,
}

impl UpdateKind {
    const ALL: [UpdateKind; 5] = [
        UpdateKind::Confirmed,
        UpdateKind::Activity,
        UpdateKind::Terminated,
        UpdateKind::Failed,
        UpdateKind::Cancelled,
    ];

    fn of(ev: &SessionEvent) -> Option<UpdateKind> {
        Some(match ev {
            SessionEvent::Created { .. }
            | SessionEvent::Changed(_)
            | SessionEvent::Checkpoint { .. } => return None,
            SessionEvent::Confirmed { .. } => UpdateKind::Confirmed,
            SessionEvent::Activity { .. } => UpdateKind::Activity,
            SessionEvent::Terminated { .. } => UpdateKind::Terminated,
            SessionEvent::Failed { .. } => UpdateKind::Failed,
            SessionEvent::Cancelled { .. } => UpdateKind::Cancelled,
        })
    }

    /// `SET` clauses over the `VALUES` columns (`column1` is always the session id).
    fn assignments(self) -> String {
        match self {
            // The tariff version in force at confirmation: the newest not after it.
            UpdateKind::Confirmed => format!(
                "state = '{}', confirmed_at = v.column2, last_activity_at = v.column2, \
                 final_status = v.column3, dialog = v.column4, tariff_id = (SELECT t.id FROM tariffs t \
                 WHERE t.service_id = sessions.service_id AND t.effective_from <= v.column2 \
                 ORDER BY t.effective_from DESC, t.created_at DESC, t.id DESC LIMIT 1)",
                SessionState::Confirmed.as_str()
            ),
            UpdateKind::Activity => "last_activity_at = v.column2".into(),
            UpdateKind::Terminated => format!(
                "state = '{}', ended_at = v.column2, duration_ms = v.column3, \
                 ended_by = v.column4, end_reason = v.column5, dialog = NULL",
                SessionState::Terminated.as_str()
            ),
            UpdateKind::Failed => format!(
                "state = '{}', ended_at = v.column2, final_status = v.column3",
                SessionState::Failed.as_str()
            ),
            UpdateKind::Cancelled => format!(
                "state = '{}', ended_at = v.column2, final_status = v.column3",
                SessionState::Cancelled.as_str()
            ),
        }
    }

    /// The values of one event, in `VALUES` column order.
    fn row(ev: &SessionEvent) -> Vec<Value> {
        match ev {
            SessionEvent::Created { .. }
            | SessionEvent::Changed(_)
            | SessionEvent::Checkpoint { .. } => Vec::new(),
            SessionEvent::Confirmed {
                id,
                at,
                status,
                dialog,
            } => vec![
                id.as_str().into(),
                (*at).into(),
                i32::from(*status).into(),
                dialog.clone().into(),
            ],
            SessionEvent::Failed { id, at, status }
            | SessionEvent::Cancelled { id, at, status } => {
                vec![id.as_str().into(), (*at).into(), i32::from(*status).into()]
            }
            SessionEvent::Activity { id, at } => vec![id.as_str().into(), (*at).into()],
            SessionEvent::Terminated {
                id,
                at,
                duration_ms,
                ended_by,
                reason,
            } => vec![
                id.as_str().into(),
                (*at).into(),
                (*duration_ms).into(),
                ended_by.as_str().into(),
                reason.as_str().into(),
            ],
        }
    }

    /// `UPDATE sessions SET … FROM (VALUES (…), …) AS v WHERE sessions.id = v.column1`: one
    /// statement for many sessions, on SQLite (3.33+) and PostgreSQL alike.
    fn statement<'a>(
        self,
        backend: DbBackend,
        events: impl Iterator<Item = &'a SessionEvent>,
    ) -> Statement {
        let mut values: Vec<Value> = Vec::new();
        let mut rows = Vec::new();
        for ev in events {
            let row = Self::row(ev);
            let placeholders: Vec<String> = (0..row.len())
                .map(|k| match backend {
                    DbBackend::Postgres => format!("${}", values.len() + k + 1),
                    _ => "?".to_string(),
                })
                .collect();
            rows.push(format!("({})", placeholders.join(", ")));
            values.extend(row);
        }
        let sql = format!(
            "UPDATE sessions SET {} FROM (VALUES {}) AS v WHERE sessions.id = v.column1",
            self.assignments(),
            rows.join(", ")
        );
        Statement::from_sql_and_values(backend, sql, values)
    }
}

/// Splits `items` into chunks of 64, 16, 4 and 1, so a few statement shapes cover every batch
/// size and stay in the connection's prepared-statement cache.
fn chunks_of_fixed_sizes(items: &[usize]) -> Vec<&[usize]> {
    let mut chunks = Vec::new();
    let mut rest = items;
    for size in [64, 16, 4, 1] {
        while rest.len() >= size {
            let (chunk, tail) = rest.split_at(size);
            chunks.push(chunk);
            rest = tail;
        }
    }
    chunks
}
