//! Token buckets: the REST API's rate limit.
//!
//! Each client owns a bucket of `burst` tokens that refills at `per_second` tokens a second.
//! A request takes one token; with none left it is refused with 429 and a `Retry-After` of
//! the whole seconds until the next token. Time comes from the relay's
//! [`Clock`](crate::clock::Clock) in milliseconds, so tests control it.
//!
//! Authenticated clients (an API key's principal) and anonymous sources (an IP address; a
//! presented key that turned out unknown counts as anonymous) have separate tables, so a
//! flood of anonymous addresses can never evict or starve a shop's bucket. The caller checks
//! an anonymous source's budget with [`RateLimiter::peek_anonymous`] *before* looking a
//! presented key up in the database, so an exhausted source costs no query.
//!
//! Memory is bounded: at most `max_clients` buckets per table. When a table is full, the
//! least recently used buckets that have refilled completely (clients idle long enough to be
//! indistinguishable from new ones) are dropped, found through an index by last use, never by
//! scanning the table; if the oldest has not refilled, a new client shares one overflow
//! bucket until room returns.

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::Mutex;

use crate::clock::Millis;

/// The default cap on tracked clients per table.
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

impl RateLimit {
    fn enabled(&self) -> bool {
        self.per_second > 0.0 && self.per_second.is_finite()
    }
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    updated_ms: Millis,
}

/// One table of buckets with its index by last use.
#[derive(Debug, Default)]
struct Table {
    buckets: HashMap<String, Bucket>,
    by_use: BTreeSet<(Millis, String)>,
}

impl Table {
    /// Takes one token (`consume`) or only looks whether one is there.
    fn take(
        &mut self,
        limit: RateLimit,
        max_clients: usize,
        client: &str,
        now_ms: Millis,
        consume: bool,
    ) -> Result<(), u64> {
        let burst = f64::from(limit.burst.max(1));
        let rate_per_ms = limit.per_second / 1000.0;
        let refilled = |b: &Bucket| {
            let elapsed = now_ms.saturating_sub(b.updated_ms).max(0) as f64;
            b.tokens + elapsed * rate_per_ms >= burst
        };
        if !self.buckets.contains_key(client) && !consume {
            return Ok(()); // a new client has a full bucket
        }
        let key = if self.buckets.contains_key(client) || self.buckets.len() < max_clients {
            client
        } else {
            // Forget the least recently used clients whose buckets have refilled.
            while let Some((_, oldest)) = self.by_use.first() {
                if !self.buckets.get(oldest).is_some_and(refilled) {
                    break;
                }
                let (_, oldest) = self.by_use.pop_first().expect("not empty");
                self.buckets.remove(&oldest);
                if self.buckets.len() < max_clients {
                    break;
                }
            }
            if self.buckets.len() < max_clients {
                client
            } else {
                OVERFLOW
            }
        };
        let bucket = self.buckets.entry(key.to_owned()).or_insert(Bucket {
            tokens: burst,
            updated_ms: now_ms,
        });
        let before = bucket.updated_ms;
        let elapsed = now_ms.saturating_sub(bucket.updated_ms).max(0) as f64;
        let tokens = (bucket.tokens + elapsed * rate_per_ms).min(burst);
        let verdict = if tokens >= 1.0 {
            Ok(())
        } else {
            let wait_ms = (1.0 - tokens) / rate_per_ms;
            Err(((wait_ms / 1000.0).ceil() as u64).max(1))
        };
        if consume {
            bucket.tokens = if verdict.is_ok() {
                tokens - 1.0
            } else {
                tokens
            };
            bucket.updated_ms = before.max(now_ms);
            let after = bucket.updated_ms;
            self.by_use.remove(&(before, key.to_owned()));
            self.by_use.insert((after, key.to_owned()));
        }
        verdict
    }
}

/// Who a request is charged to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Client<'a> {
    /// An authenticated principal (its bucket name).
    Key(&'a str),
    /// A caller without a valid key, by source address.
    Anonymous(IpAddr),
}

/// Token buckets for authenticated keys and for anonymous sources, apart.
#[derive(Debug)]
pub struct RateLimiter {
    limit: RateLimit,
    max_clients: usize,
    keyed: Mutex<Table>,
    anonymous: Mutex<Table>,
}

impl RateLimiter {
    pub fn new(limit: RateLimit) -> RateLimiter {
        RateLimiter::with_capacity(limit, DEFAULT_MAX_CLIENTS)
    }

    pub fn with_capacity(limit: RateLimit, max_clients: usize) -> RateLimiter {
        RateLimiter {
            limit,
            max_clients: max_clients.max(1),
            keyed: Mutex::new(Table::default()),
            anonymous: Mutex::new(Table::default()),
        }
    }

    fn table(&self, client: Client<'_>) -> (&Mutex<Table>, String) {
        match client {
            Client::Key(name) => (&self.keyed, name.to_owned()),
            Client::Anonymous(ip) => (&self.anonymous, ip.to_string()),
        }
    }

    /// Takes one token from `client`'s bucket at `now_ms`. `Err` carries the whole seconds
    /// (at least 1) until a token will be there.
    pub fn check(&self, client: Client<'_>, now_ms: Millis) -> Result<(), u64> {
        if !self.limit.enabled() {
            return Ok(());
        }
        let (table, name) = self.table(client);
        let mut table = table.lock().unwrap_or_else(|p| p.into_inner());
        table.take(self.limit, self.max_clients, &name, now_ms, true)
    }

    /// Whether the anonymous source `ip` has a token left, without taking it.
    pub fn peek_anonymous(&self, ip: IpAddr, now_ms: Millis) -> Result<(), u64> {
        if !self.limit.enabled() {
            return Ok(());
        }
        let (table, name) = self.table(Client::Anonymous(ip));
        let mut table = table.lock().unwrap_or_else(|p| p.into_inner());
        table.take(self.limit, self.max_clients, &name, now_ms, false)
    }

    /// How many clients are tracked, both tables together (for tests).
    pub fn tracked(&self) -> usize {
        [&self.keyed, &self.anonymous]
            .iter()
            .map(|t| t.lock().map(|t| t.buckets.len()).unwrap_or_default())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(per_second: f64, burst: u32) -> RateLimiter {
        RateLimiter::new(RateLimit { per_second, burst })
    }

    fn ip(n: u32) -> IpAddr {
        IpAddr::from(n.to_be_bytes())
    }

    #[test]
    fn a_burst_then_the_sustained_rate() {
        let l = limiter(2.0, 3);
        for _ in 0..3 {
            assert_eq!(l.check(Client::Key("a"), 0), Ok(()));
        }
        assert_eq!(l.check(Client::Key("a"), 0), Err(1));
        // Another client has its own bucket.
        assert_eq!(l.check(Client::Key("b"), 0), Ok(()));
        // Half a second later one token (2/s) is back.
        assert_eq!(l.check(Client::Key("a"), 500), Ok(()));
        assert_eq!(l.check(Client::Key("a"), 500), Err(1));
    }

    #[test]
    fn retry_after_counts_whole_seconds() {
        let l = limiter(0.1, 1);
        assert_eq!(l.check(Client::Key("a"), 0), Ok(()));
        assert_eq!(l.check(Client::Key("a"), 0), Err(10));
        assert_eq!(l.check(Client::Key("a"), 5_000), Err(5));
        assert_eq!(l.check(Client::Key("a"), 10_000), Ok(()));
    }

    #[test]
    fn zero_rate_disables_the_limit() {
        let l = limiter(0.0, 1);
        for _ in 0..100 {
            assert_eq!(l.check(Client::Key("a"), 0), Ok(()));
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
        assert_eq!(l.check(Client::Key("a"), 0), Ok(()));
        assert_eq!(l.check(Client::Key("b"), 0), Ok(()));
        // Full of busy clients: newcomers share the overflow bucket.
        assert_eq!(l.check(Client::Key("c"), 0), Ok(()));
        assert_eq!(l.check(Client::Key("d"), 0), Err(1));
        assert!(l.tracked() <= 3);
        // Once a and b have refilled they are forgotten and d gets a bucket of its own.
        assert_eq!(l.check(Client::Key("d"), 5_000), Ok(()));
        assert!(l.tracked() <= 3);
    }

    #[test]
    fn an_anonymous_flood_cannot_touch_a_shops_bucket() {
        let l = RateLimiter::with_capacity(
            RateLimit {
                per_second: 1.0,
                burst: 2,
            },
            10,
        );
        assert_eq!(l.check(Client::Key("app_server:shop"), 0), Ok(()));
        for n in 0..10_000 {
            let _ = l.check(Client::Anonymous(ip(n)), 1);
        }
        // The shop still has its own second token, and its bucket was never evicted.
        assert_eq!(l.check(Client::Key("app_server:shop"), 2), Ok(()));
        assert_eq!(l.check(Client::Key("app_server:shop"), 3), Err(1));
        assert!(l.tracked() <= 10 + 1 + 1);
    }

    #[test]
    fn peeking_takes_nothing() {
        let l = limiter(0.01, 2);
        let source = ip(7);
        assert_eq!(l.peek_anonymous(source, 0), Ok(()));
        assert_eq!(l.tracked(), 0, "a peek at a new source stores nothing");
        assert_eq!(l.check(Client::Anonymous(source), 0), Ok(()));
        assert_eq!(l.peek_anonymous(source, 0), Ok(()));
        assert_eq!(l.check(Client::Anonymous(source), 0), Ok(()));
        assert!(l.peek_anonymous(source, 0).is_err());
        assert!(l.peek_anonymous(source, 0).is_err());
    }
}
