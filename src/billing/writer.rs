//! The charge writer: REST charge requests through one group-commit queue.
//!
//! Each `POST /v1/sessions/{id}/charges` becomes a [`ChargeRequest`] on a bounded queue and
//! waits for its outcome. One task takes whatever is queued (up to [`MAX_BATCH`]) and writes
//! it with [`Store::apply_charges`] in one transaction — so 64 concurrent clients cost a
//! handful of fsyncs a second, not 64 × their rate, and every acknowledged charge is durable.
//! When a batch's transaction fails, its requests are retried one by one, so one bad request
//! cannot take the others down. A full queue answers [`BillingError::Busy`] at once.
//!
//! **Waiting for the clients just answered.** Clients that keep one request in flight (a shop
//! with a pool of connections, the benchmark's 64) send their next charge a moment after their
//! answer. Without a pause they always miss the batch that starts right then and wait for the
//! whole next commit, so the clients split into two halves taking turns and each commit (each
//! fsync) carries half of them. After a commit that answered `n` requests the writer therefore
//! waits until `n` more have come in, but never longer than a quarter of that commit's
//! duration nor [`MAX_LINGER`]: on a disk whose fsync takes 20 ms this doubles the charges per
//! fsync; when commits take a fraction of a millisecond the pause is a few microseconds. A
//! lone client that comes straight back ends the wait as it arrives.

use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::BillingError;
use crate::clock::SharedClock;
use crate::store::{ChargeOutcome, ChargeRequest, Store};

/// Requests waiting at most; more are refused (503) rather than queued without bound.
pub const QUEUE_CAPACITY: usize = 4096;
/// Most requests in one transaction.
pub const MAX_BATCH: usize = 256;
/// Longest wait for the clients of the previous batch (see the module documentation).
pub const MAX_LINGER: Duration = Duration::from_millis(2);

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

/// Takes more requests into `batch` until it holds `expected` or `deadline` has passed (see
/// the module documentation).
async fn gather<T>(
    rx: &mut mpsc::Receiver<T>,
    batch: &mut Vec<T>,
    expected: usize,
    deadline: Instant,
) {
    let expected = expected.min(MAX_BATCH);
    while batch.len() < expected {
        let room = MAX_BATCH - batch.len();
        match tokio::time::timeout_at(deadline, rx.recv_many(batch, room)).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
    }
}

async fn run(store: Store, clock: SharedClock, mut rx: mpsc::Receiver<(ChargeRequest, Answer)>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    // Requests the next batch may expect (those already waiting when the last one was
    // answered, and the clients it answered), and how long to wait for them.
    let mut expected = 0;
    let mut deadline = Instant::now();
    while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
        gather(&mut rx, &mut batch, expected, deadline).await;
        let (requests, answers): (Vec<_>, Vec<_>) = batch.drain(..).unzip();
        let requests_len = requests.len();
        let started = Instant::now();
        let now = clock.now_ms();
        let written = store.apply_charges(now, &requests).await;
        let linger = (started.elapsed() / 4).min(MAX_LINGER);
        match written {
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
        expected = rx.len() + requests_len;
        deadline = Instant::now() + linger;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_batch_waits_for_the_clients_it_expects_and_no_longer() {
        let (tx, mut rx) = mpsc::channel(16);
        let mut batch = Vec::new();

        // Everything expected is already there: no wait.
        for i in 0..3 {
            tx.send(i).await.unwrap();
        }
        let start = Instant::now();
        rx.recv_many(&mut batch, MAX_BATCH).await;
        gather(&mut rx, &mut batch, 3, start + MAX_LINGER).await;
        assert_eq!((batch.len(), start.elapsed()), (3, Duration::ZERO));

        // Two clients come back 1 ms later: they join the batch, which then goes.
        batch.clear();
        tx.send(10).await.unwrap();
        let late = tx.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(1)).await;
            late.send(11).await.unwrap();
            late.send(12).await.unwrap();
        });
        let start = Instant::now();
        rx.recv_many(&mut batch, MAX_BATCH).await;
        gather(&mut rx, &mut batch, 3, start + MAX_LINGER).await;
        assert_eq!(batch, vec![10, 11, 12]);
        assert_eq!(start.elapsed(), Duration::from_millis(1));

        // Fewer come back than expected: the batch goes at the deadline.
        batch.clear();
        tx.send(20).await.unwrap();
        let start = Instant::now();
        rx.recv_many(&mut batch, MAX_BATCH).await;
        gather(&mut rx, &mut batch, 5, start + MAX_LINGER).await;
        assert_eq!((batch.len(), start.elapsed()), (1, MAX_LINGER));
    }
}
