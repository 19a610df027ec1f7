//! Waiting for what the relay does on its own time and announces to nobody: a row written by a
//! detached task after the message a test could await (the session writer's end of a call,
//! the charges of a 200 to BYE, recorded after that 200 is relayed). There is no event to
//! await for those, so [`until`] probes the observable result (the store, the REST API) until
//! it holds, and fails the test with the last state it saw once [`LIMIT`] has passed.

use std::future::Future;
use std::time::Duration;

/// The longest a test waits for a background write before it fails.
pub const LIMIT: Duration = Duration::from_secs(60);

/// The pause between two probes: a store query is a few milliseconds, so this keeps a waiting
/// test from hogging a shared machine without adding noticeable latency.
const BETWEEN_PROBES: Duration = Duration::from_millis(10);

/// Runs `probe` until it returns `Ok`, and returns that value. An `Err` carries a description
/// of what was seen instead; when [`LIMIT`] passes the test fails with `what` and the last one.
pub async fn until<T, F, Fut>(what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let deadline = tokio::time::Instant::now() + LIMIT;
    loop {
        match probe().await {
            Ok(value) => return value,
            Err(seen) => assert!(
                tokio::time::Instant::now() < deadline,
                "{what}: not within {LIMIT:?}; last seen: {seen}"
            ),
        }
        tokio::time::sleep(BETWEEN_PROBES).await;
    }
}
