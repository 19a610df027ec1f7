//! Time as the billing and session code sees it.
//!
//! Every timestamp that ends up on a session or a bill comes from a [`Clock`], never from
//! scattered `SystemTime::now()` calls, so tests can set the time and check durations exactly.
//! SIP protocol timers (retransmissions, timeouts) use tokio's timer instead, which tests pause.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch.
pub type Millis = i64;

/// A source of wall-clock time in milliseconds.
pub trait Clock: Send + Sync + 'static {
    fn now_ms(&self) -> Millis;
}

/// The production clock: the operating system's wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> Millis {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as Millis)
            .unwrap_or(0)
    }
}

/// A clock that only moves when told to; for tests.
#[derive(Debug, Default)]
pub struct ManualClock(AtomicI64);

impl ManualClock {
    pub fn new(start_ms: Millis) -> Arc<Self> {
        Arc::new(Self(AtomicI64::new(start_ms)))
    }
    pub fn set(&self, ms: Millis) {
        self.0.store(ms, Ordering::SeqCst);
    }
    pub fn advance(&self, ms: Millis) {
        self.0.fetch_add(ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> Millis {
        self.0.load(Ordering::SeqCst)
    }
}

/// The clock handle passed around the application.
pub type SharedClock = Arc<dyn Clock>;

/// Timestamps as the REST API and webhooks show them: RFC 3339 strings in UTC with
/// milliseconds (`2026-12-01T21:54:13.123Z`), for `#[serde(with = "crate::clock::rfc3339")]`
/// on an `i64` of milliseconds since the epoch. Parsing accepts any RFC 3339 offset.
pub mod rfc3339 {
    use super::Millis;
    use serde::{Deserialize, Deserializer, Serializer};
    use time::format_description::well_known::Rfc3339;
    use time::OffsetDateTime;

    /// `ms` as RFC 3339 in UTC with millisecond precision.
    ///
    /// Instants from 1970 to 9999 (every timestamp the relay makes) are written directly:
    /// statements print one per charge, 100 000 and more, and the general formatter below
    /// was a sixth of a statement's serialisation. Anything else takes the general path.
    pub fn format(ms: Millis) -> String {
        match format_common_era(ms) {
            Some(text) => String::from_utf8_lossy(&text).into_owned(),
            None => format_general(ms),
        }
    }

    /// `0 <= ms` through the end of year 9999 (`None` otherwise): the civil date from the day
    /// number (Howard Hinnant's `civil_from_days`), then fixed-width digits, on the stack.
    fn format_common_era(ms: Millis) -> Option<[u8; 24]> {
        const LAST_MS_OF_9999: Millis = 253_402_300_799_999;
        if !(0..=LAST_MS_OF_9999).contains(&ms) {
            return None;
        }
        let days = ms.div_euclid(86_400_000);
        let of_day = ms.rem_euclid(86_400_000);
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z.rem_euclid(146_097);
        let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = doy - (153 * mp + 2) / 5 + 1;
        let month = if mp < 10 { mp + 3 } else { mp - 9 };
        let year = yoe + era * 400 + i64::from(month <= 2);
        let fields = [
            (year, 4, b'-'),
            (month, 2, b'-'),
            (day, 2, b'T'),
            (of_day / 3_600_000, 2, b':'),
            (of_day / 60_000 % 60, 2, b':'),
            (of_day / 1_000 % 60, 2, b'.'),
            (of_day % 1_000, 3, b'Z'),
        ];
        let mut out = [0u8; 24];
        let mut at = 0;
        for (value, width, after) in fields {
            for place in (0..width).rev() {
                out[at] = b'0' + (value / 10_i64.pow(place) % 10) as u8;
                at += 1;
            }
            out[at] = after;
            at += 1;
        }
        Some(out)
    }

    fn format_general(ms: Millis) -> String {
        let nanos = i128::from(ms) * 1_000_000;
        let at =
            OffsetDateTime::from_unix_timestamp_nanos(nanos).unwrap_or(OffsetDateTime::UNIX_EPOCH);
        let fmt = time::macros::format_description!(
            "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
        );
        at.format(&fmt).unwrap_or_default()
    }

    /// Milliseconds since the epoch of an RFC 3339 timestamp (any offset); sub-millisecond
    /// digits are dropped.
    pub fn parse(text: &str) -> Result<Millis, String> {
        let at = OffsetDateTime::parse(text.trim(), &Rfc3339).map_err(|e| {
            format!("{text:?} is not an RFC 3339 timestamp (e.g. 2026-12-01T09:30:00Z): {e}")
        })?;
        Millis::try_from(at.unix_timestamp_nanos().div_euclid(1_000_000))
            .map_err(|_| format!("{text:?} is out of range"))
    }

    pub fn serialize<S: Serializer>(ms: &Millis, s: S) -> Result<S::Ok, S::Error> {
        match format_common_era(*ms) {
            // Digits and ASCII punctuation only.
            Some(text) => s.serialize_str(std::str::from_utf8(&text).unwrap_or_default()),
            None => s.serialize_str(&format_general(*ms)),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Millis, D::Error> {
        let text = String::deserialize(d)?;
        parse(&text).map_err(serde::de::Error::custom)
    }

    /// The same for `Option<i64>` (`null` when absent).
    pub mod option {
        use super::Millis;
        use serde::{Deserialize, Deserializer, Serializer};

        pub fn serialize<S: Serializer>(ms: &Option<Millis>, s: S) -> Result<S::Ok, S::Error> {
            match ms {
                Some(ms) => s.serialize_str(&super::format(*ms)),
                None => s.serialize_none(),
            }
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Millis>, D::Error> {
            Option::<String>::deserialize(d)?
                .map(|t| super::parse(&t).map_err(serde::de::Error::custom))
                .transpose()
        }
    }

    #[cfg(test)]
    mod tests {
        #[test]
        fn round_trips_with_milliseconds_and_reads_offsets() {
            assert_eq!(super::format(0), "1970-01-01T00:00:00.000Z");
            let ms = 1_764_625_453_123;
            assert_eq!(super::format(ms), "2025-12-01T21:44:13.123Z");
            assert_eq!(super::parse(&super::format(ms)), Ok(ms));
            assert_eq!(
                super::parse("2025-12-01T22:44:13.123+01:00"),
                Ok(ms),
                "an offset is honoured"
            );
            assert!(super::parse("2025-12-01").is_err());
            assert!(super::parse("yesterday").is_err());
        }

        #[test]
        fn the_direct_formatter_writes_what_the_general_one_does() {
            let mut samples = vec![
                0,
                1,
                999,
                86_399_999,
                86_400_000,
                951_782_400_000, // 2000-02-29
                4_107_542_399_999,
                253_402_300_799_999, // the last millisecond of 9999
            ];
            let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
            for _ in 0..20_000 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                samples.push((x % 253_402_300_800_000) as i64);
            }
            for ms in samples {
                assert_eq!(super::format(ms), super::format_general(ms), "{ms}");
            }
            assert_eq!(super::format(-1), "1969-12-31T23:59:59.999Z");
        }
    }
}
