//! A token bucket per client: the REST API's rate limit.
//!
//! Each client (an API key's principal, or the IP address of an anonymous caller; see
//! [`super::auth`]) owns a bucket of `burst` tokens that refills at `per_second` tokens a
//! second. A request takes one token; with none left it is refused with 429 and a
//! `Retry-After` of the whole seconds until the next token. Time comes from the relay's
//! [`Clock`](crate::clock::Clock) in milliseconds, so tests control it.
//!
//! Memory is bounded: at most `max_clients` buckets. When the table is full, buckets that have
//! refilled completely (clients idle long enough to be indistinguishable from new ones) are
//! dropped; if none has, a new client shares one overflow bucket until room returns, so a flood
//! of new identities can slow itself down but cannot grow the table or evict busy clients.
//!
//! A `Mutex<HashMap>` is enough here: the critical section is a lookup and a few float
//! operations, far cheaper than the database work behind every request.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::clock::Millis;

/// The default cap on tracked clients.
pub const DEFAULT_MAX_CLIENTS: usize = 100_000;

/// The bucket new clients share while the table is full of busy ones.
const OVERFLOW: &str = "\u{0}overflow";

/// How a client's request budget refills.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    /// Sustained requests per second (tokens added per second). 0 disables the limit.
    pub per_second: f64,
    /// Bucket size: requests a quiet client may send at once.
    pub burst: u32,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    updated_ms: Millis,
}

/// Per-client token buckets.
#[derive(Debug)]
pub struct RateLimiter {
    limit: RateLimit,
    max_clients: usize,
    buckets: Mutex<HashMap<String, Bucket>>,
}

impl RateLimiter {
    pub fn new(limit: RateLimit) -> RateLimiter {
        RateLimiter::with_capacity(limit, DEFAULT_MAX_CLIENTS)
    }

    pub fn with_capacity(limit: RateLimit, max_clients: usize) -> RateLimiter {
        RateLimiter {
            limit,
            max_clients: max_clients.max(1),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    fn enabled(&self) -> bool {
        self.limit.per_second > 0.0 && self.limit.per_second.is_finite()
    }

    /// Takes one token from `client`'s bucket at `now_ms`. `Err` carries the whole seconds
    /// (at least 1) until a token will be there.
    pub fn check(&self, client: &str, now_ms: Millis) -> Result<(), u64> {
        if !self.enabled() {
            return Ok(());
        }
        let burst = f64::from(self.limit.burst.max(1));
        let rate_per_ms = self.limit.per_second / 1000.0;
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let full = Bucket {
            tokens: burst,
            updated_ms: now_ms,
        };
        let key = if buckets.contains_key(client) || buckets.len() < self.max_clients {
            client
        } else {
            // Forget clients whose buckets have refilled: they are as good as new.
            buckets.retain(|_, b| {
                let elapsed = now_ms.saturating_sub(b.updated_ms).max(0) as f64;
                b.tokens + elapsed * rate_per_ms < burst
            });
            if buckets.len() < self.max_clients {
                client
            } else {
                OVERFLOW
            }
        };
        let bucket = buckets.entry(key.to_owned()).or_insert(full);
        let elapsed = now_ms.saturating_sub(bucket.updated_ms).max(0) as f64;
        bucket.tokens = (bucket.tokens + elapsed * rate_per_ms).min(burst);
        bucket.updated_ms = bucket.updated_ms.max(now_ms);
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            let wait_ms = (1.0 - bucket.tokens) / rate_per_ms;
            Err(((wait_ms / 1000.0).ceil() as u64).max(1))
        }
    }

    /// How many clients are tracked (for tests).
    pub fn tracked(&self) -> usize {
        self.buckets.lock().map(|b| b.len()).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(per_second: f64, burst: u32) -> RateLimiter {
        RateLimiter::new(RateLimit { per_second, burst })
    }

    #[test]
    fn a_burst_then_the_sustained_rate() {
        let l = limiter(2.0, 3);
        for _ in 0..3 {
            assert_eq!(l.check("a", 0), Ok(()));
        }
        assert_eq!(l.check("a", 0), Err(1));
        // Another client has its own bucket.
        assert_eq!(l.check("b", 0), Ok(()));
        // Half a second later one token (2/s) is back.
        assert_eq!(l.check("a", 500), Ok(()));
        assert_eq!(l.check("a", 500), Err(1));
    }

    #[test]
    fn retry_after_counts_whole_seconds() {
        let l = limiter(0.1, 1);
        assert_eq!(l.check("a", 0), Ok(()));
        assert_eq!(l.check("a", 0), Err(10));
        assert_eq!(l.check("a", 5_000), Err(5));
        assert_eq!(l.check("a", 10_000), Ok(()));
    }

    #[test]
    fn zero_rate_disables_the_limit() {
        let l = limiter(0.0, 1);
        for _ in 0..100 {
            assert_eq!(l.check("a", 0), Ok(()));
        }
    }

    #[test]
    fn the_table_is_bounded() {
        let l = RateLimiter::with_capacity(
            RateLimit {
                per_second: 1.0,
                burst: 1,
            },
            2,
        );
        assert_eq!(l.check("a", 0), Ok(()));
        assert_eq!(l.check("b", 0), Ok(()));
        // Full of busy clients: newcomers share the overflow bucket.
        assert_eq!(l.check("c", 0), Ok(()));
        assert_eq!(l.check("d", 0), Err(1));
        assert!(l.tracked() <= 3);
        // Once a and b have refilled they are forgotten and d gets a bucket of its own.
        assert_eq!(l.check("d", 5_000), Ok(()));
        assert!(l.tracked() <= 3);
    }
}
