//! Delivers the outbox: claim due events, POST them signed, log the attempt, schedule the
//! retry.
//!
//! Retries: after the n-th failed attempt the next comes `min(30 s × 2^(n−1), 1 h)` later,
//! scaled by a random factor in [0.5, 1] ("equal jitter", so receivers that fail together do
//! not retry together). An event is given up (`failed`) once the next attempt would fall more
//! than `max_age` after the event. A 2xx answer delivers it; anything else (another status, a
//! timeout, a refused connection) is a failure. Every time is read from the injected
//! [`Clock`](crate::clock::Clock), so tests move time instead of sleeping.

use std::time::{Duration, Instant};

use rand::Rng;
use tokio::task::JoinHandle;

use super::signature::{signature_header, SIGNATURE_HEADER};
use crate::clock::SharedClock;
use crate::store::{AttemptOutcome, DueEvent, Store, StoreError};

/// First retry delay.
const BASE_DELAY_MS: i64 = 30_000;
/// Longest retry delay.
const MAX_DELAY_MS: i64 = 3_600_000;
/// How long a claimed event is reserved for this dispatcher.
const LEASE_MS: i64 = 60_000;
/// Events claimed per round.
const BATCH: u64 = 32;
/// Most bytes of a receiver's answer kept in the delivery log.
const RESPONSE_KEPT: usize = 1024;

/// How the dispatcher behaves.
#[derive(Debug, Clone)]
pub struct DispatcherSettings {
    /// Give up on an event this long after it happened (`[webhooks] max_age_secs`).
    pub max_age_ms: i64,
    /// One attempt's time limit.
    pub timeout: Duration,
    /// How often the outbox is polled for due events.
    pub poll: Duration,
}

impl Default for DispatcherSettings {
    fn default() -> Self {
        DispatcherSettings {
            max_age_ms: 3 * 24 * 3_600_000,
            timeout: Duration::from_secs(10),
            poll: Duration::from_secs(1),
        }
    }
}

/// The delay before the attempt after `failures` failed ones, before jitter.
pub fn retry_delay_ms(failures: u32) -> i64 {
    let exponent = failures.saturating_sub(1).min(20);
    (BASE_DELAY_MS << exponent).min(MAX_DELAY_MS)
}

/// Delivers due webhooks; cheap to clone.
#[derive(Clone)]
pub struct Dispatcher {
    store: Store,
    clock: SharedClock,
    http: reqwest::Client,
    settings: DispatcherSettings,
}

impl Dispatcher {
    pub fn new(store: Store, clock: SharedClock, settings: DispatcherSettings) -> Dispatcher {
        let http = reqwest::Client::builder()
            .timeout(settings.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("Tollgate-Webhooks/", env!("CARGO_PKG_VERSION")))
            .build()
            .unwrap_or_default();
        Dispatcher {
            store,
            clock,
            http,
            settings,
        }
    }

    /// Polls the outbox every `poll` until aborted.
    pub fn spawn(self) -> JoinHandle<()> {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(self.settings.poll);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                if let Err(e) = self.deliver_due().await {
                    tracing::warn!(error = %e, "webhook delivery round failed");
                }
            }
        })
    }

    /// One round: claims the events due now and attempts each once, concurrently. Returns
    /// how many were attempted.
    pub async fn deliver_due(&self) -> Result<usize, StoreError> {
        let now = self.clock.now_ms();
        let due = self.store.claim_due_events(now, LEASE_MS, BATCH).await?;
        let count = due.len();
        let mut attempts = tokio::task::JoinSet::new();
        for event in due {
            let this = self.clone();
            attempts.spawn(async move {
                let outcome = this.attempt(&event).await;
                this.store.record_attempt(&event, &outcome).await
            });
        }
        while let Some(done) = attempts.join_next().await {
            match done {
                Ok(Err(e)) => tracing::warn!(error = %e, "cannot record a webhook attempt"),
                Err(e) => tracing::error!(error = %e, "webhook attempt task failed"),
                Ok(Ok(())) => {}
            }
        }
        Ok(count)
    }

    async fn attempt(&self, event: &DueEvent) -> AttemptOutcome {
        let attempted_at = self.clock.now_ms();
        let Some(url) = event.url.clone() else {
            // No URL any more: nothing to deliver to; keep the record and stop.
            return AttemptOutcome {
                url: String::new(),
                attempted_at,
                status_code: None,
                error: Some("the application server has no webhook_url".into()),
                response_body: None,
                duration_ms: 0,
                delivered: false,
                retry_at: None,
            };
        };
        let body = event.payload.clone().into_bytes();
        let mut request = self
            .http
            .post(&url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header("Tollgate-Event-Id", &event.id);
        if event.secrets.is_empty() {
            tracing::warn!(app_server = %event.app_server_id, "webhook sent unsigned: issue a webhook secret");
        } else {
            request = request.header(
                SIGNATURE_HEADER,
                signature_header(&event.secrets, attempted_at.div_euclid(1000), &body),
            );
        }
        let started = Instant::now();
        let (status_code, error, response_body) = match request.body(body).send().await {
            Ok(resp) => {
                let status = resp.status().as_u16();
                let text = resp.text().await.unwrap_or_default();
                let kept: String = text.chars().take(RESPONSE_KEPT).collect();
                (Some(status), None, Some(kept))
            }
            Err(e) => (None, Some(e.to_string()), None),
        };
        let delivered = status_code.is_some_and(|s| (200..300).contains(&s));
        let failures = event.attempts + 1;
        let jitter: f64 = rand::thread_rng().gen_range(0.5..=1.0);
        let next = attempted_at + (retry_delay_ms(failures) as f64 * jitter) as i64;
        let retry_at =
            (!delivered && next <= event.created_at + self.settings.max_age_ms).then_some(next);
        AttemptOutcome {
            url,
            attempted_at,
            status_code,
            error,
            response_body,
            duration_ms: i64::try_from(started.elapsed().as_millis()).unwrap_or(i64::MAX),
            delivered,
            retry_at,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::retry_delay_ms;

    #[test]
    fn backoff_doubles_up_to_an_hour() {
        assert_eq!(retry_delay_ms(1), 30_000);
        assert_eq!(retry_delay_ms(2), 60_000);
        assert_eq!(retry_delay_ms(3), 120_000);
        assert_eq!(retry_delay_ms(8), 3_600_000);
        assert_eq!(retry_delay_ms(100), 3_600_000);
    }
}
