//! The charge writer: REST charge requests through one group-commit queue.
//!
//! Each `POST /v1/sessions/{id}/charges` becomes a [`ChargeRequest`] on a bounded queue and
//! waits for its outcome. One task takes whatever is queued (up to [`MAX_BATCH`]) and writes
//! it with [`Store::apply_charges`] in one transaction — so 64 concurrent clients cost a
//! handful of fsyncs a second, not 64 × their rate, and every acknowledged charge is durable.
//! When a batch's transaction fails, its requests are retried one by one, so one bad request
//! cannot take the others down. A full queue answers [`BillingError::Busy`] at once.

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use super::BillingError;
use crate::clock::SharedClock;
use crate::store::{ChargeOutcome, ChargeRequest, Store};

/// Requests waiting at most; more are refused (503) rather than queued without bound.
pub const QUEUE_CAPACITY: usize = 4096;
/// Most requests in one transaction.
pub const MAX_BATCH: usize = 256;

type Answer = oneshot::Sender<Result<ChargeOutcome, BillingError>>;

/// A cheap, cloneable handle on the writer task.
#[derive(Clone, Debug)]
pub struct ChargeWriter {
    tx: mpsc::Sender<(ChargeRequest, Answer)>,
}

impl ChargeWriter {
    /// Starts the writer task on the current runtime; it ends when the last handle drops.
    pub fn spawn(store: Store, clock: SharedClock) -> (ChargeWriter, JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(QUEUE_CAPACITY);
        (ChargeWriter { tx }, tokio::spawn(run(store, clock, rx)))
    }

    /// Queues `request` and waits until it is committed (or refused).
    pub async fn submit(&self, request: ChargeRequest) -> Result<ChargeOutcome, BillingError> {
        let (done, answer) = oneshot::channel();
        self.tx.try_send((request, done)).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => {
                BillingError::Busy("too many charges are waiting; retry shortly".into())
            }
            mpsc::error::TrySendError::Closed(_) => {
                BillingError::Busy("the charge writer has stopped".into())
            }
        })?;
        answer
            .await
            .unwrap_or_else(|_| Err(BillingError::Busy("the charge writer has stopped".into())))
    }
}

async fn run(store: Store, clock: SharedClock, mut rx: mpsc::Receiver<(ChargeRequest, Answer)>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let (requests, answers): (Vec<_>, Vec<_>) = batch.drain(..).unzip();
        let now = clock.now_ms();
        match store.apply_charges(now, &requests).await {
            Ok(outcomes) => {
                for (answer, outcome) in answers.into_iter().zip(outcomes) {
                    let _ = answer.send(outcome);
                }
            }
            Err(err) if requests.len() > 1 => {
                tracing::warn!(error = %err, requests = requests.len(), "charge batch failed; writing one by one");
                for (request, answer) in requests.into_iter().zip(answers) {
                    let outcome = match store.apply_charges(now, &[request]).await {
                        Ok(mut one) => one.pop().unwrap_or_else(|| {
                            Err(BillingError::Busy("the ledger answered nothing".into()))
                        }),
                        Err(e) => Err(BillingError::Store(e)),
                    };
                    let _ = answer.send(outcome);
                }
            }
            Err(err) => {
                if let Some(answer) = answers.into_iter().next() {
                    let _ = answer.send(Err(BillingError::Store(err)));
                }
            }
        }
    }
}
