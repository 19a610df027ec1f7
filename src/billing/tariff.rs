//! Time tariffs and their arithmetic.
//!
//! A terminated session of `duration_ms` under a tariff costs
//! ```text
//! billable_secs = ceil(max(0, duration_ms − free_secs·1000) / (increment_secs·1000)) × increment_secs
//! amount        = setup_amount + ceil(per_minute_amount × billable_secs / 60)
//! ```
//! in integer minor units. Tariffs are versioned per service: a new version applies to
//! sessions confirmed at or after its `effective_from`; a session keeps the version recorded
//! at its confirmation.

use serde::{Deserialize, Serialize};

use super::money::{check_currency, MAX_UNIT_AMOUNT};

/// Largest billing increment: one hour.
pub const MAX_INCREMENT_SECS: i32 = 3600;
/// Largest free allowance: one day.
pub const MAX_FREE_SECS: i32 = 86_400;

/// The priced part of a tariff version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tariff {
    pub currency: String,
    pub setup_amount: i64,
    pub per_minute_amount: i64,
    pub increment_secs: i32,
    pub free_secs: i32,
}

impl Tariff {
    /// Checks every field; `Err((field, message))` names the first bad one.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        check_currency(&self.currency).map_err(|m| ("currency", m))?;
        let amount = |name: &'static str, v: i64| {
            if (0..=MAX_UNIT_AMOUNT).contains(&v) {
                Ok(())
            } else {
                Err((
                    name,
                    format!("{name} must be between 0 and {MAX_UNIT_AMOUNT}"),
                ))
            }
        };
        amount("setup_amount", self.setup_amount)?;
        amount("per_minute_amount", self.per_minute_amount)?;
        if !(1..=MAX_INCREMENT_SECS).contains(&self.increment_secs) {
            return Err((
                "increment_secs",
                format!("increment_secs must be between 1 and {MAX_INCREMENT_SECS}"),
            ));
        }
        if !(0..=MAX_FREE_SECS).contains(&self.free_secs) {
            return Err((
                "free_secs",
                format!("free_secs must be between 0 and {MAX_FREE_SECS}"),
            ));
        }
        Ok(())
    }

    /// Seconds billed for a session of `duration_ms` (see the module formula).
    pub fn billable_secs(&self, duration_ms: i64) -> i64 {
        let increment_ms = i64::from(self.increment_secs.max(1)) * 1000;
        let chargeable = (duration_ms - i64::from(self.free_secs) * 1000).max(0);
        let increments = (chargeable + increment_ms - 1) / increment_ms;
        increments * i64::from(self.increment_secs.max(1))
    }

    /// The time charge of a session of `duration_ms`, in minor units. Computed in `i128` so
    /// that any validated tariff and any duration a session can have cannot overflow; the
    /// result saturates at `i64::MAX`, far beyond any real bill.
    pub fn time_charge(&self, duration_ms: i64) -> i64 {
        let billable = i128::from(self.billable_secs(duration_ms));
        let per_minute = i128::from(self.per_minute_amount) * billable;
        let total = i128::from(self.setup_amount) + (per_minute + 59) / 60;
        i64::try_from(total).unwrap_or(i64::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tariff(per_minute: i64, increment: i32, setup: i64, free: i32) -> Tariff {
        Tariff {
            currency: "EUR".into(),
            setup_amount: setup,
            per_minute_amount: per_minute,
            increment_secs: increment,
            free_secs: free,
        }
    }

    #[test]
    fn sixty_second_increments() {
        let t = tariff(120, 60, 0, 0);
        assert_eq!(t.time_charge(0), 0);
        assert_eq!(t.time_charge(1), 120);
        assert_eq!(t.time_charge(59_000), 120);
        assert_eq!(t.time_charge(60_000), 120);
        assert_eq!(t.time_charge(61_000), 240);
    }

    #[test]
    fn six_second_increments() {
        let t = tariff(120, 6, 0, 0);
        assert_eq!(t.billable_secs(1), 6);
        assert_eq!(t.time_charge(0), 0);
        assert_eq!(t.time_charge(1), 12);
        assert_eq!(t.time_charge(59_000), 120); // 60 s billed
        assert_eq!(t.time_charge(60_000), 120);
        assert_eq!(t.time_charge(61_000), 132); // 66 s billed
    }

    #[test]
    fn setup_fee_and_free_seconds() {
        let t = tariff(120, 1, 50, 0);
        assert_eq!(t.time_charge(0), 50, "the setup fee is due even for 0 ms");
        assert_eq!(t.time_charge(1), 52); // 1 s → ceil(120/60) = 2
        let free = tariff(120, 60, 50, 30);
        assert_eq!(free.time_charge(30_000), 50);
        assert_eq!(free.time_charge(30_001), 170);
        assert_eq!(free.time_charge(90_000), 170);
        assert_eq!(free.time_charge(90_001), 290);
    }

    #[test]
    fn per_minute_rounds_up_to_a_minor_unit() {
        // 7 per minute for 6 s = 0.7 → 1.
        assert_eq!(tariff(7, 6, 0, 0).time_charge(6_000), 1);
        assert_eq!(tariff(0, 60, 0, 0).time_charge(3_600_000), 0);
    }

    #[test]
    fn huge_values_cannot_overflow() {
        let t = tariff(MAX_UNIT_AMOUNT, 1, MAX_UNIT_AMOUNT, 0);
        assert!(t.time_charge(i64::MAX / 2) > 0);
    }

    #[test]
    fn validation_names_the_field() {
        assert_eq!(
            tariff(120, 0, 0, 0).validate().unwrap_err().0,
            "increment_secs"
        );
        assert_eq!(
            tariff(-1, 60, 0, 0).validate().unwrap_err().0,
            "per_minute_amount"
        );
        assert_eq!(tariff(1, 60, 0, -1).validate().unwrap_err().0, "free_secs");
        let mut bad = tariff(1, 60, 0, 0);
        bad.currency = "EURO".into();
        assert_eq!(bad.validate().unwrap_err().0, "currency");
        assert!(tariff(120, 60, 50, 0).validate().is_ok());
    }
}
