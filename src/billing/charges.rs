//! Item charges: what an application server reports (a [`NewCharge`]), how it is checked, and
//! what lands in the ledger (a [`Charge`]).
//!
//! Three ways in, one set of rules: `POST /v1/sessions/{id}/charges` (one charge, source
//! `rest`), a SIP INFO inside the dialog and the application server's 200 to BYE (a
//! `{"charges": [...]}` body of type [`CHARGES_CONTENT_TYPE`], sources `sip_info` and `bye`,
//! read by [`parse_charges_body`]). A charge is checked on its own here ([`NewCharge::check`])
//! and against its session when written (currency of the session's tariff, the session's
//! grace window; see [`crate::billing::record_charges`]).

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use utoipa::ToSchema;

use super::money::{check_currency, MAX_QUANTITY, MAX_UNIT_AMOUNT};
use crate::store::{EntryRef, KIND_ITEM};

/// The media type of a charges body in a SIP INFO or a 200 to BYE.
pub const CHARGES_CONTENT_TYPE: &str = "application/vnd.tollgate.charges+json";

/// Most charges in one SIP body.
pub const MAX_CHARGES_PER_BODY: usize = 100;
/// Largest SIP charges body read, in bytes.
pub const MAX_CHARGES_BODY_BYTES: usize = 64 * 1024;
/// Longest description, in characters.
pub const MAX_DESCRIPTION_CHARS: usize = 200;
/// Most metadata entries, longest metadata key and value (characters).
pub const MAX_METADATA_KEYS: usize = 20;
pub const MAX_METADATA_KEY_CHARS: usize = 40;
pub const MAX_METADATA_VALUE_CHARS: usize = 500;

/// How a charge reached the relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[schema(example = json!("sip_info"))]
#[serde(rename_all = "snake_case")]
pub enum ChargeSource {
    /// `POST /v1/sessions/{id}/charges`.
    Rest,
    /// A SIP INFO inside the dialog from the application server.
    SipInfo,
    /// The body of the application server's 200 to the caller's BYE.
    Bye,
}

impl ChargeSource {
    /// The name stored in the ledger and shown over REST.
    pub fn as_str(self) -> &'static str {
        match self {
            ChargeSource::Rest => "rest",
            ChargeSource::SipInfo => "sip_info",
            ChargeSource::Bye => "bye",
        }
    }

    pub fn parse(s: &str) -> Option<ChargeSource> {
        match s {
            "rest" => Some(ChargeSource::Rest),
            "sip_info" => Some(ChargeSource::SipInfo),
            "bye" => Some(ChargeSource::Bye),
            _ => None,
        }
    }
}

/// An item charge as an application server reports it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({
    "description": "Glass of Barolo", "unit_amount": 1200, "quantity": 2, "currency": "EUR",
    "metadata": {"order": "A-1042"}
}))]
pub struct NewCharge {
    /// What was sold, 1 to 200 characters.
    pub description: String,
    /// Price of one unit in minor units (cents for EUR), 0 to 10^12.
    #[schema(minimum = 0, maximum = 1_000_000_000_000_i64)]
    pub unit_amount: i64,
    /// 1 to 10 000.
    #[schema(minimum = 1, maximum = 10000)]
    pub quantity: i64,
    /// ISO 4217 code; must be the currency of the service's tariff when it has one.
    pub currency: String,
    /// Up to 20 string values of your own (keys up to 40, values up to 500 characters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Map<String, Value>>,
}

/// One offending field of a charge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidField {
    /// `unit_amount`, or with a prefix, `charges[1].unit_amount`.
    pub field: String,
    pub message: String,
}

impl InvalidField {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        InvalidField {
            field: field.into(),
            message: message.into(),
        }
    }
}

impl NewCharge {
    /// Checks the charge on its own; `prefix` is put before field names (`charges[0].`).
    /// Returns the amount, `unit_amount × quantity`.
    pub fn check(&self, prefix: &str) -> Result<i64, InvalidField> {
        let field = |name: &str| format!("{prefix}{name}");
        let chars = self.description.chars().count();
        if self.description.trim().is_empty() || chars > MAX_DESCRIPTION_CHARS {
            return Err(InvalidField::new(
                field("description"),
                format!(
                    "description must be 1 to {MAX_DESCRIPTION_CHARS} characters, not only spaces"
                ),
            ));
        }
        if self.description.chars().any(char::is_control) {
            return Err(InvalidField::new(
                field("description"),
                "description must not contain control characters",
            ));
        }
        if !(0..=MAX_UNIT_AMOUNT).contains(&self.unit_amount) {
            return Err(InvalidField::new(
                field("unit_amount"),
                format!("unit_amount must be an integer from 0 to {MAX_UNIT_AMOUNT} (minor units)"),
            ));
        }
        if !(1..=MAX_QUANTITY).contains(&self.quantity) {
            return Err(InvalidField::new(
                field("quantity"),
                format!("quantity must be an integer from 1 to {MAX_QUANTITY}"),
            ));
        }
        check_currency(&self.currency).map_err(|m| InvalidField::new(field("currency"), m))?;
        if let Some(metadata) = &self.metadata {
            check_metadata(metadata).map_err(|m| InvalidField::new(field("metadata"), m))?;
        }
        self.unit_amount
            .checked_mul(self.quantity)
            .ok_or_else(|| InvalidField::new(field("quantity"), "unit_amount × quantity overflows"))
    }
}

fn check_metadata(metadata: &Map<String, Value>) -> Result<(), String> {
    if metadata.len() > MAX_METADATA_KEYS {
        return Err(format!(
            "metadata may have at most {MAX_METADATA_KEYS} keys"
        ));
    }
    for (key, value) in metadata {
        if key.is_empty() || key.chars().count() > MAX_METADATA_KEY_CHARS {
            return Err(format!(
                "metadata keys must be 1 to {MAX_METADATA_KEY_CHARS} characters"
            ));
        }
        match value {
            Value::String(s) if s.chars().count() <= MAX_METADATA_VALUE_CHARS => {}
            _ => {
                return Err(format!(
                "metadata.{key} must be a string of at most {MAX_METADATA_VALUE_CHARS} characters"
            ))
            }
        }
    }
    Ok(())
}

// Serialised through `ChargeView`, the one place its output fields are named.
/// An item charge in the ledger.
#[derive(Debug, Clone, PartialEq, Deserialize, ToSchema)]
#[schema(example = json!({
    "id": "ch_6f1c2a9e0b7d4f1e9a3c5b7d9e1f3a5c", "session_id": "0b6c7b4e-1f2a-4c3d-9e8f-7a6b5c4d3e2f",
    "user_id": "4e3d2c1b-0a9f-4e8d-7c6b-5a4f3e2d1c0b", "app_server_id": "9f8e7d6c-5b4a-4392-8170-6f5e4d3c2b1a",
    "description": "Glass of Barolo", "unit_amount": 1200, "quantity": 2, "amount": 2400,
    "currency": "EUR", "source": "rest", "metadata": {"order": "A-1042"},
    "created_at": "2026-12-01T21:54:13.123Z"
}))]
pub struct Charge {
    /// `ch_…`.
    pub id: String,
    pub session_id: String,
    /// The user billed.
    pub user_id: String,
    /// The application server that sold the item.
    pub app_server_id: String,
    pub description: String,
    pub unit_amount: i64,
    pub quantity: i64,
    /// `unit_amount × quantity`, minor units.
    pub amount: i64,
    pub currency: String,
    pub source: ChargeSource,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Map<String, Value>>,
    /// When the ledger recorded it (RFC 3339).
    #[serde(with = "crate::clock::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: i64,
}

impl Serialize for Charge {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        ChargeView {
            id: &self.id,
            session_id: &self.session_id,
            user_id: &self.user_id,
            app_server_id: &self.app_server_id,
            description: &self.description,
            unit_amount: self.unit_amount,
            quantity: self.quantity,
            amount: self.amount,
            currency: &self.currency,
            source: self.source,
            metadata: self.metadata.as_ref().map(ChargeMetadata::Object),
            created_at: self.created_at,
        }
        .serialize(s)
    }
}

/// The wire form of a [`Charge`], borrowed: the one place its fields are named for output.
/// A statement writes the charges it reads from the ledger through it, without making a
/// `Charge` of each first.
#[derive(Serialize)]
pub struct ChargeView<'a> {
    pub id: &'a str,
    pub session_id: &'a str,
    pub user_id: &'a str,
    pub app_server_id: &'a str,
    pub description: &'a str,
    pub unit_amount: i64,
    pub quantity: i64,
    pub amount: i64,
    pub currency: &'a str,
    pub source: ChargeSource,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metadata: Option<ChargeMetadata<'a>>,
    #[serde(with = "crate::clock::rfc3339")]
    pub created_at: i64,
}

impl<'a> ChargeView<'a> {
    /// The charge a ledger entry records; `None` for another kind of entry.
    pub fn of_entry(e: &EntryRef<'a>) -> Option<ChargeView<'a>> {
        if e.kind != KIND_ITEM {
            return None;
        }
        Some(ChargeView {
            id: e.id,
            session_id: e.session_id?,
            user_id: e.user_id,
            app_server_id: e.app_server_id?,
            description: e.description,
            unit_amount: e.unit_amount?,
            quantity: e.quantity?,
            amount: e.amount,
            currency: e.currency,
            source: ChargeSource::parse(e.source)?,
            // Stored by the relay as a JSON object; checked, not rebuilt.
            metadata: e
                .metadata
                .and_then(|text| serde_json::from_str(text).ok())
                .map(ChargeMetadata::Stored),
            created_at: e.created_at,
        })
    }
}

/// A charge's metadata: an object in memory, or the JSON text the ledger stored.
#[derive(Serialize)]
#[serde(untagged)]
pub enum ChargeMetadata<'a> {
    Object(&'a Map<String, Value>),
    Stored(&'a RawValue),
}

/// Why a SIP charges body was refused (nothing is written).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChargeBodyError {
    /// Not `application/vnd.tollgate.charges+json`: the proxy answers 415.
    #[error("unsupported media type: {0}")]
    UnsupportedMediaType(String),
    /// Not a valid charges document: the proxy answers 400, naming the field.
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
}

impl From<InvalidField> for ChargeBodyError {
    fn from(e: InvalidField) -> Self {
        ChargeBodyError::Invalid {
            field: e.field,
            message: e.message,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ChargesBody {
    charges: Vec<NewCharge>,
}

/// Whether `content_type` (a header value, parameters allowed) is [`CHARGES_CONTENT_TYPE`].
pub fn is_charges_content_type(content_type: Option<&str>) -> bool {
    content_type
        .and_then(|v| v.split(';').next())
        .is_some_and(|m| m.trim().eq_ignore_ascii_case(CHARGES_CONTENT_TYPE))
}

/// Parses a SIP INFO / 200-to-BYE body `{"charges":[{description, unit_amount, quantity,
/// currency}]}` and checks every charge on its own. `Err(UnsupportedMediaType)` → the proxy
/// answers 415; `Err(Invalid{field,..})` → 400. Writes nothing.
pub fn parse_charges_body(
    content_type: Option<&str>,
    body: &[u8],
) -> Result<Vec<NewCharge>, ChargeBodyError> {
    if !is_charges_content_type(content_type) {
        return Err(ChargeBodyError::UnsupportedMediaType(format!(
            "charges must be sent as {CHARGES_CONTENT_TYPE}, not {}",
            content_type.unwrap_or("a body without Content-Type")
        )));
    }
    if body.len() > MAX_CHARGES_BODY_BYTES {
        return Err(InvalidField::new(
            "body",
            format!("the body is larger than {MAX_CHARGES_BODY_BYTES} bytes"),
        )
        .into());
    }
    let mut de = serde_json::Deserializer::from_slice(body);
    let parsed: ChargesBody = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let message = inner.to_string();
        let missing = message
            .strip_prefix("missing field `")
            .and_then(|rest| rest.split('`').next());
        let field = match (path.as_str(), missing) {
            (".", Some(name)) => name.to_owned(),
            (".", None) => "body".to_owned(),
            (p, Some(name)) => format!("{p}.{name}"),
            (p, None) => p.trim_end_matches('?').to_owned(),
        };
        ChargeBodyError::Invalid { field, message }
    })?;
    de.end()
        .map_err(|e| InvalidField::new("body", format!("unexpected data after the JSON: {e}")))?;
    if parsed.charges.is_empty() || parsed.charges.len() > MAX_CHARGES_PER_BODY {
        return Err(InvalidField::new(
            "charges",
            format!("charges must hold 1 to {MAX_CHARGES_PER_BODY} charges"),
        )
        .into());
    }
    check_all(&parsed.charges, true)?;
    Ok(parsed.charges)
}

/// Checks each charge and that their sum fits; with `indexed`, fields are named
/// `charges[i].…`. Returns each charge's amount.
pub fn check_all(charges: &[NewCharge], indexed: bool) -> Result<Vec<i64>, InvalidField> {
    let mut total: i64 = 0;
    let mut amounts = Vec::with_capacity(charges.len());
    for (i, charge) in charges.iter().enumerate() {
        let prefix = if indexed {
            format!("charges[{i}].")
        } else {
            String::new()
        };
        let amount = charge.check(&prefix)?;
        total = total
            .checked_add(amount)
            .ok_or_else(|| InvalidField::new("charges", "the charges' sum overflows"))?;
        amounts.push(amount);
    }
    Ok(amounts)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CT: Option<&str> = Some(CHARGES_CONTENT_TYPE);

    fn field_of(r: Result<Vec<NewCharge>, ChargeBodyError>) -> String {
        match r {
            Err(ChargeBodyError::Invalid { field, .. }) => field,
            other => panic!("not invalid: {other:?}"),
        }
    }

    #[test]
    fn a_valid_body_parses() {
        let body = br#"{"charges":[{"description":"wine","unit_amount":1200,"quantity":1,"currency":"EUR"},
            {"description":"beer","unit_amount":300,"quantity":2,"currency":"EUR"}]}"#;
        let charges = parse_charges_body(
            Some("Application/Vnd.Tollgate.Charges+JSON; charset=utf-8"),
            body,
        )
        .unwrap();
        assert_eq!(charges.len(), 2);
        assert_eq!(charges[1].quantity, 2);
    }

    #[test]
    fn another_content_type_is_415() {
        let body = br#"{"charges":[]}"#;
        for ct in [None, Some("application/json"), Some("text/plain")] {
            assert!(matches!(
                parse_charges_body(ct, body),
                Err(ChargeBodyError::UnsupportedMediaType(_))
            ));
        }
    }

    #[test]
    fn bad_bodies_name_the_field() {
        let one = |c: &str| format!(r#"{{"charges":[{c}]}}"#);
        let ok = r#""description":"wine","unit_amount":1200,"quantity":1,"currency":"EUR""#;
        assert_eq!(field_of(parse_charges_body(CT, b"not json")), "body");
        assert_eq!(
            field_of(parse_charges_body(CT, br#"{"charges":[]}"#)),
            "charges"
        );
        assert_eq!(
            field_of(parse_charges_body(CT, br#"{"charge":[]}"#)),
            "charge"
        );
        let cases = [
            (
                r#"{"description":"","unit_amount":1,"quantity":1,"currency":"EUR"}"#,
                "charges[0].description",
            ),
            (
                r#"{"description":"w","unit_amount":-1,"quantity":1,"currency":"EUR"}"#,
                "charges[0].unit_amount",
            ),
            (
                r#"{"description":"w","unit_amount":1.5,"quantity":1,"currency":"EUR"}"#,
                "charges[0].unit_amount",
            ),
            (
                r#"{"description":"w","unit_amount":1,"quantity":0,"currency":"EUR"}"#,
                "charges[0].quantity",
            ),
            (
                r#"{"description":"w","unit_amount":1,"quantity":10001,"currency":"EUR"}"#,
                "charges[0].quantity",
            ),
            (
                r#"{"description":"w","unit_amount":1,"quantity":1,"currency":"EURO"}"#,
                "charges[0].currency",
            ),
            (
                r#"{"description":"w","unit_amount":1,"quantity":1}"#,
                "charges[0].currency",
            ),
            (
                r#"{"description":"w","unit_amount":1,"quantity":1,"currency":"EUR","x":1}"#,
                "charges[0]",
            ),
        ];
        for (charge, want) in cases {
            let got = field_of(parse_charges_body(CT, one(charge).as_bytes()));
            assert!(got.starts_with(want), "{charge}: {got}");
        }
        let long = "x".repeat(201);
        let body = one(&format!(
            r#"{{"description":"{long}","unit_amount":1,"quantity":1,"currency":"EUR"}}"#
        ));
        assert_eq!(
            field_of(parse_charges_body(CT, body.as_bytes())),
            "charges[0].description"
        );
        let two = format!(
            r#"{{"charges":[{{{ok}}},{{"description":"w","unit_amount":1,"quantity":1,"currency":"usd"}}]}}"#
        );
        assert_eq!(
            field_of(parse_charges_body(CT, two.as_bytes())),
            "charges[1].currency"
        );
    }

    #[test]
    fn sums_that_overflow_are_refused() {
        let big = NewCharge {
            description: "gold".into(),
            unit_amount: MAX_UNIT_AMOUNT,
            quantity: MAX_QUANTITY,
            currency: "EUR".into(),
            metadata: None,
        };
        let many = vec![big; 1000];
        assert_eq!(check_all(&many, true).unwrap_err().field, "charges");
    }

    #[test]
    fn sources_serialise_as_the_issue_names_them() {
        for (s, name) in [
            (ChargeSource::Rest, "rest"),
            (ChargeSource::SipInfo, "sip_info"),
            (ChargeSource::Bye, "bye"),
        ] {
            assert_eq!(serde_json::to_value(s).unwrap(), name);
            assert_eq!(ChargeSource::parse(name), Some(s));
        }
    }
}
