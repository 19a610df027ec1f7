//! Money: integer minor units plus an ISO 4217 currency code, never floats.
//!
//! Every amount the relay accepts is bounded so that no sum it ever computes can overflow:
//! a unit amount is at most [`MAX_UNIT_AMOUNT`], a quantity at most [`MAX_QUANTITY`], and
//! totals are accumulated in `i128` and checked when narrowed back to `i64`.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Largest `unit_amount` (and adjustment or tariff amount) in minor units: 10^12, ten billion
/// euros in cents. With [`MAX_QUANTITY`] a charge is at most 10^16, so nine hundred of the
/// largest charges still fit an `i64`.
pub const MAX_UNIT_AMOUNT: i64 = 1_000_000_000_000;

/// Largest `quantity` of an item charge.
pub const MAX_QUANTITY: i64 = 10_000;

/// An amount in one currency.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[schema(example = json!({"currency": "EUR", "amount": 1250}))]
pub struct Money {
    /// ISO 4217 code, e.g. `EUR`.
    pub currency: String,
    /// Signed minor units (cents for EUR).
    pub amount: i64,
}

/// Checks an ISO 4217 alphabetic code: three upper-case letters naming a currency.
pub fn check_currency(code: &str) -> Result<(), String> {
    if code.len() != 3 || !code.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(format!(
            "currency {code:?} must be an ISO 4217 code of three upper-case letters, e.g. EUR"
        ));
    }
    iso_currency::Currency::from_code(code)
        .map(|_| ())
        .ok_or_else(|| format!("currency {code:?} is not an ISO 4217 currency"))
}

/// Per-currency totals, in a stable (alphabetical) order.
#[derive(Debug, Default, Clone)]
pub struct Totals(std::collections::BTreeMap<String, i128>);

impl Totals {
    pub fn add(&mut self, currency: &str, amount: i64) {
        // Statements add 100 000 entries and more in a handful of currencies: the key is
        // copied only the first time.
        match self.0.get_mut(currency) {
            Some(total) => *total += i128::from(amount),
            None => {
                self.0.insert(currency.to_owned(), i128::from(amount));
            }
        }
    }

    /// The totals, or the currency whose total does not fit an `i64`.
    pub fn into_money(self) -> Result<Vec<Money>, String> {
        self.0
            .into_iter()
            .map(|(currency, total)| match i64::try_from(total) {
                Ok(amount) => Ok(Money { currency, amount }),
                Err(_) => Err(format!("the {currency} total overflows")),
            })
            .collect()
    }

    /// Each currency's total after `f`.
    pub fn map(&self, f: impl Fn(i128) -> i128) -> Totals {
        Totals(self.0.iter().map(|(c, v)| (c.clone(), f(*v))).collect())
    }
}

/// `amount × bps / 10 000`, rounded half away from zero: the operator's commission.
pub fn commission(amount: i128, bps: i64) -> i128 {
    let scaled = amount * i128::from(bps);
    let (q, r) = (scaled / 10_000, scaled % 10_000);
    if r.abs() * 2 >= 10_000 {
        q + scaled.signum()
    } else {
        q
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn currencies_are_iso_4217_codes() {
        assert!(check_currency("EUR").is_ok());
        assert!(check_currency("JPY").is_ok());
        for bad in ["eur", "EU", "EURO", "XYZ", "", "€"] {
            assert!(check_currency(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn commission_rounds_half_away_from_zero() {
        assert_eq!(commission(33_540, 1500), 5031);
        assert_eq!(commission(10, 1500), 2); // 1.5 → 2
        assert_eq!(commission(9, 1500), 1); // 1.35 → 1
        assert_eq!(commission(-10, 1500), -2);
        assert_eq!(commission(12345, 0), 0);
        assert_eq!(commission(12345, 10_000), 12345);
    }

    #[test]
    fn totals_are_per_currency_and_overflow_is_caught() {
        let mut t = Totals::default();
        t.add("EUR", 5);
        t.add("USD", 7);
        t.add("EUR", -2);
        let m = t.into_money().unwrap();
        assert_eq!(
            m[0],
            Money {
                currency: "EUR".into(),
                amount: 3
            }
        );
        let mut big = Totals::default();
        big.add("EUR", i64::MAX);
        big.add("EUR", 1);
        assert!(big.into_money().is_err());
    }
}
