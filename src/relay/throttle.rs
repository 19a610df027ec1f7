//! Authentication failure throttling, per source address ([`SourceThrottle`]) and per user
//! name ([`UserThrottle`]).
//!
//! An ordinary digest flow has one challenge that is not a failure: the first request
//! carries no credentials and gets a 401/407. Only a request whose credentials are *wrong*
//! (bad response, unknown user) counts, via [`AuthThrottle::record_failure`]. After
//! `max_failures` failures inside `window_ms` the key is blocked for `block_ms`; while
//! blocked the relay answers 503 with the `Retry-After` that [`AuthThrottle::is_blocked`]
//! returns, without checking credentials at all. (Which failures count is the
//! authenticator's decision: only those carrying a nonce issued to that very source.)
//!
//! Source keys: an IPv4 address, or the /64 prefix of an IPv6 address (one host usually owns
//! a whole /64, so counting single IPv6 addresses would be useless). IPv4-mapped IPv6
//! addresses count as their IPv4 address. User keys: a keyed 64-bit hash of the user name,
//! so a long name costs no more memory than a short one.
//!
//! Memory is bounded: entries that are neither blocked nor inside a live window are swept at
//! most once per `window_ms` (and at least once a minute), and the table never holds more
//! than `max_entries`. When it is full of live entries, the unblocked entries with the fewest
//! failures are evicted first; blocked entries are kept, so a flood of new addresses cannot
//! unblock an attacker. If every entry is blocked, a new address is simply not tracked.
//!
//! Trade-off: [`AuthThrottle::record_success`] forgives earlier failures (a user behind a NAT
//! who mistyped once is not punished for later mistakes of neighbours), but never lifts an
//! active block.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, RandomState};
use std::net::{IpAddr, Ipv6Addr};

/// The default cap on tracked sources.
pub const DEFAULT_MAX_ENTRIES: usize = 100_000;

/// Share of the table evicted at once when it is full, so the eviction scan is amortised.
const EVICT_FRACTION: usize = 10;

/// What a [`SourceThrottle`] counts by: an IPv4 address or an IPv6 /64.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SourceKey {
    V4(u32),
    V6Prefix(u64),
}

impl From<IpAddr> for SourceKey {
    fn from(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(v4) => SourceKey::V4(u32::from(v4)),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => SourceKey::V4(u32::from(v4)),
                None => SourceKey::V6Prefix(prefix64(&v6)),
            },
        }
    }
}

/// What a [`UserThrottle`] counts by: a keyed hash of the user name (see
/// [`UserThrottle::user_key`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct UserKey(u64);

/// Failures per source address.
pub type SourceThrottle = AuthThrottle<SourceKey>;

/// Failures per user name.
pub type UserThrottle = AuthThrottle<UserKey>;

fn prefix64(v6: &Ipv6Addr) -> u64 {
    (u128::from(*v6) >> 64) as u64
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    window_start_ms: i64,
    failures: u32,
    /// Blocked while `now < blocked_until_ms`.
    blocked_until_ms: i64,
}

impl Entry {
    fn blocked(&self, now_ms: i64) -> bool {
        now_ms < self.blocked_until_ms
    }
}

/// Counts digest failures per key and blocks noisy keys for a while.
#[derive(Debug)]
pub struct AuthThrottle<K> {
    max_failures: u32,
    window_ms: i64,
    block_ms: i64,
    max_entries: usize,
    entries: HashMap<K, Entry>,
    last_sweep_ms: i64,
}

impl UserThrottle {
    /// The key of `user` under `hasher` (one random hasher per authenticator, so nobody can
    /// aim collisions at a user).
    pub fn user_key(hasher: &RandomState, user: &str) -> UserKey {
        UserKey(hasher.hash_one(user))
    }
}

impl<K: Copy + Eq + Hash + Ord> AuthThrottle<K> {
    /// Blocks a source for `block_ms` after `max_failures` failures within `window_ms`.
    pub fn new(max_failures: u32, window_ms: i64, block_ms: i64) -> Self {
        Self::with_max_entries(max_failures, window_ms, block_ms, DEFAULT_MAX_ENTRIES)
    }

    /// Like [`AuthThrottle::new`] with an explicit cap on tracked sources.
    pub fn with_max_entries(
        max_failures: u32,
        window_ms: i64,
        block_ms: i64,
        max_entries: usize,
    ) -> Self {
        Self {
            max_failures: max_failures.max(1),
            window_ms: window_ms.max(1),
            block_ms: block_ms.max(0),
            max_entries: max_entries.max(1),
            entries: HashMap::new(),
            last_sweep_ms: i64::MIN,
        }
    }

    /// `Some(retry_after_seconds)` (at least 1) while `ip` is blocked.
    pub fn is_blocked(&self, key: impl Into<K>, now_ms: i64) -> Option<u64> {
        let entry = self.entries.get(&key.into())?;
        if entry.blocked(now_ms) {
            let left_ms = entry.blocked_until_ms - now_ms;
            Some(((left_ms + 999) / 1000).max(1) as u64)
        } else {
            None
        }
    }

    /// Counts one wrong credential for `key` (not a missing one).
    pub fn record_failure(&mut self, key: impl Into<K>, now_ms: i64) {
        self.maybe_sweep(now_ms);
        let key = key.into();
        if !self.entries.contains_key(&key) && !self.make_room(now_ms) {
            return;
        }
        let window_ms = self.window_ms;
        let entry = self.entries.entry(key).or_insert(Entry {
            window_start_ms: now_ms,
            failures: 0,
            blocked_until_ms: i64::MIN,
        });
        if entry.blocked(now_ms) {
            // Already blocked: the relay should not have checked credentials at all.
            return;
        }
        if now_ms.saturating_sub(entry.window_start_ms) >= window_ms {
            entry.window_start_ms = now_ms;
            entry.failures = 0;
        }
        entry.failures += 1;
        if entry.failures >= self.max_failures {
            entry.blocked_until_ms = now_ms.saturating_add(self.block_ms);
            // After the block the source starts from a clean window.
            entry.failures = 0;
            entry.window_start_ms = entry.blocked_until_ms;
        }
    }

    /// Forgives earlier failures of `key`; an active block stays.
    pub fn record_success(&mut self, key: impl Into<K>) {
        let key = key.into();
        if let Some(entry) = self.entries.get_mut(&key) {
            if entry.blocked_until_ms == i64::MIN {
                self.entries.remove(&key);
            } else {
                entry.failures = 0;
            }
        }
    }

    /// How many sources are tracked (for metrics and tests).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no source is tracked.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn maybe_sweep(&mut self, now_ms: i64) {
        let every = self.window_ms.min(60_000);
        if now_ms.saturating_sub(self.last_sweep_ms) >= every {
            self.sweep(now_ms);
        }
    }

    fn sweep(&mut self, now_ms: i64) {
        self.last_sweep_ms = now_ms;
        let window_ms = self.window_ms;
        self.entries.retain(|_, e| {
            e.blocked(now_ms) || now_ms.saturating_sub(e.window_start_ms) < window_ms
        });
    }

    /// Ensures there is room for one more entry; `false` if none can be made.
    fn make_room(&mut self, now_ms: i64) -> bool {
        if self.entries.len() < self.max_entries {
            return true;
        }
        self.sweep(now_ms);
        if self.entries.len() < self.max_entries {
            return true;
        }
        // Evict the least suspicious unblocked entries, a slice of the table at once.
        let mut candidates: Vec<(u32, i64, K)> = self
            .entries
            .iter()
            .filter(|(_, e)| !e.blocked(now_ms))
            .map(|(k, e)| (e.failures, e.window_start_ms, *k))
            .collect();
        if candidates.is_empty() {
            return false;
        }
        let n = (self.max_entries / EVICT_FRACTION)
            .max(1)
            .min(candidates.len());
        candidates.select_nth_unstable(n - 1);
        for (_, _, k) in &candidates[..n] {
            self.entries.remove(k);
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn v4(n: u32) -> IpAddr {
        IpAddr::V4(Ipv4Addr::from(n))
    }

    #[test]
    fn blocks_after_max_failures_in_window_then_releases() {
        let ip = v4(0x0a00_0001);
        let mut t = SourceThrottle::new(3, 60_000, 300_000);
        t.record_failure(ip, 0);
        t.record_failure(ip, 1_000);
        assert_eq!(t.is_blocked(ip, 1_000), None);
        t.record_failure(ip, 2_000);
        assert_eq!(t.is_blocked(ip, 2_000), Some(300));
        assert_eq!(t.is_blocked(ip, 2_001), Some(300));
        assert_eq!(t.is_blocked(ip, 301_001), Some(1));
        assert_eq!(t.is_blocked(ip, 302_000), None);
        // Another address is unaffected.
        assert_eq!(t.is_blocked(v4(0x0a00_0002), 2_000), None);
        // After the block a fresh window starts.
        t.record_failure(ip, 302_000);
        assert_eq!(t.is_blocked(ip, 302_000), None);
    }

    #[test]
    fn failures_outside_the_window_do_not_add_up() {
        let ip = v4(1);
        let mut t = SourceThrottle::new(3, 10_000, 60_000);
        for i in 0..10 {
            t.record_failure(ip, i * 6_000);
            assert_eq!(t.is_blocked(ip, i * 6_000), None, "round {i}");
        }
    }

    #[test]
    fn success_forgives_failures_but_not_a_block() {
        let ip = v4(7);
        let mut t = SourceThrottle::new(2, 60_000, 60_000);
        t.record_failure(ip, 0);
        t.record_success(ip);
        t.record_failure(ip, 1);
        assert_eq!(t.is_blocked(ip, 1), None);
        t.record_failure(ip, 2);
        assert!(t.is_blocked(ip, 2).is_some());
        t.record_success(ip);
        assert!(t.is_blocked(ip, 3).is_some());
        // Failures while blocked do not extend the block.
        t.record_failure(ip, 30_000);
        assert_eq!(t.is_blocked(ip, 60_001), Some(1));
        assert_eq!(t.is_blocked(ip, 60_002), None);
    }

    #[test]
    fn ipv6_counts_per_64_prefix_and_mapped_v4_as_v4() {
        let mut t = SourceThrottle::new(2, 60_000, 60_000);
        let a: Ipv6Addr = "2001:db8:1:2::1".parse().unwrap();
        let b: Ipv6Addr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let other: Ipv6Addr = "2001:db8:1:3::1".parse().unwrap();
        t.record_failure(IpAddr::V6(a), 0);
        t.record_failure(IpAddr::V6(b), 0);
        assert!(t.is_blocked(IpAddr::V6(a), 0).is_some());
        assert!(t.is_blocked(IpAddr::V6(b), 0).is_some());
        assert!(t.is_blocked(IpAddr::V6(other), 0).is_none());

        let mapped: Ipv6Addr = "::ffff:192.0.2.1".parse().unwrap();
        t.record_failure(IpAddr::V6(mapped), 0);
        t.record_failure("192.0.2.1".parse::<IpAddr>().unwrap(), 0);
        assert!(t
            .is_blocked("192.0.2.1".parse::<IpAddr>().unwrap(), 0)
            .is_some());
        assert!(t
            .is_blocked("192.0.2.2".parse::<IpAddr>().unwrap(), 0)
            .is_none());
    }

    #[test]
    fn stale_entries_are_swept() {
        let mut t = SourceThrottle::new(5, 1_000, 1_000);
        for i in 0..1_000 {
            t.record_failure(v4(i), 0);
        }
        assert_eq!(t.len(), 1_000);
        t.record_failure(v4(5_000), 10_000);
        assert_eq!(t.len(), 1);
        t.record_success(v4(5_000));
        assert!(t.is_empty());
    }

    #[test]
    fn memory_is_bounded_and_blocked_sources_survive_a_flood() {
        let mut t = SourceThrottle::with_max_entries(2, 600_000, 600_000, 100);
        let attacker = v4(0xdead_beef);
        t.record_failure(attacker, 0);
        t.record_failure(attacker, 0);
        assert!(t.is_blocked(attacker, 0).is_some());
        for i in 0..10_000 {
            t.record_failure(v4(i), 1 + i as i64);
            assert!(t.len() <= 100);
        }
        assert!(t.is_blocked(attacker, 20_000).is_some());

        // A table full of blocked sources refuses to track more rather than growing.
        let mut t = SourceThrottle::with_max_entries(1, 600_000, 600_000, 10);
        for i in 0..10 {
            t.record_failure(v4(i), 0);
        }
        t.record_failure(v4(99), 0);
        assert_eq!(t.len(), 10);
        assert!(t.is_blocked(v4(99), 0).is_none());
        assert!((0..10).all(|i| t.is_blocked(v4(i), 0).is_some()));
    }

    #[test]
    fn users_count_apart_by_name() {
        let hasher = RandomState::new();
        let alice = UserThrottle::user_key(&hasher, "alice");
        let bob = UserThrottle::user_key(&hasher, "bob");
        let mut t = UserThrottle::new(2, 60_000, 60_000);
        t.record_failure(alice, 0);
        t.record_failure(alice, 1);
        assert!(t.is_blocked(alice, 1).is_some());
        assert!(t.is_blocked(bob, 1).is_none());
        assert_eq!(alice, UserThrottle::user_key(&hasher, "alice"));
    }

    #[test]
    fn is_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<SourceThrottle>();
        assert_send_sync::<UserThrottle>();
    }
}
