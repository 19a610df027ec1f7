//! Registrar bindings (RFC 3261 §10): which contacts an address of record reaches, until when.

use sea_orm::sea_query::OnConflict;
use sea_orm::{ActiveValue::Set, ColumnTrait, EntityTrait, QueryFilter, QueryOrder};
use serde::Serialize;

use super::entities::registrations;
use super::{Store, StoreError};

/// One binding of an address of record to a contact.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Binding {
    /// The address of record, e.g. `sip:alice@portal.com`.
    pub aor: String,
    /// The contact URI the binding points at.
    pub contact: String,
    /// Milliseconds since the epoch when the binding lapses.
    pub expires_at: i64,
    /// Call-ID and CSeq of the REGISTER that last refreshed it (RFC 3261 §10.3 step 7).
    pub call_id: String,
    pub cseq: u32,
}

impl TryFrom<registrations::Model> for Binding {
    type Error = StoreError;

    fn try_from(m: registrations::Model) -> Result<Self, StoreError> {
        let cseq = u32::try_from(m.cseq).map_err(|_| {
            StoreError::Invalid(format!(
                "binding {} -> {} has CSeq {} out of range",
                m.aor, m.contact, m.cseq
            ))
        })?;
        Ok(Binding {
            aor: m.aor,
            contact: m.contact,
            expires_at: m.expires_at,
            call_id: m.call_id,
            cseq,
        })
    }
}

impl Store {
    /// Creates the binding, or refreshes it when `(aor, contact)` is already bound.
    pub async fn save_binding(&self, b: &Binding) -> Result<(), StoreError> {
        use registrations::Column as C;
        let model = registrations::ActiveModel {
            aor: Set(b.aor.clone()),
            contact: Set(b.contact.clone()),
            expires_at: Set(b.expires_at),
            call_id: Set(b.call_id.clone()),
            cseq: Set(i64::from(b.cseq)),
        };
        registrations::Entity::insert(model)
            .on_conflict(
                OnConflict::columns([C::Aor, C::Contact])
                    .update_columns([C::ExpiresAt, C::CallId, C::Cseq])
                    .to_owned(),
            )
            .exec_without_returning(&self.db)
            .await?;
        Ok(())
    }

    /// Removes one binding; removing a binding that does not exist is not an error.
    pub async fn remove_binding(&self, aor: &str, contact: &str) -> Result<(), StoreError> {
        registrations::Entity::delete_many()
            .filter(registrations::Column::Aor.eq(aor))
            .filter(registrations::Column::Contact.eq(contact))
            .exec(&self.db)
            .await?;
        Ok(())
    }

    /// Removes every binding of `aor` (a REGISTER with `Contact: *`).
    pub async fn remove_all_bindings(&self, aor: &str) -> Result<(), StoreError> {
        registrations::Entity::delete_many()
            .filter(registrations::Column::Aor.eq(aor))
            .exec(&self.db)
            .await?;
        Ok(())
    }

    /// The bindings of `aor` still valid at `now_ms`, by contact.
    pub async fn bindings(&self, aor: &str, now_ms: i64) -> Result<Vec<Binding>, StoreError> {
        let rows = registrations::Entity::find()
            .filter(registrations::Column::Aor.eq(aor))
            .filter(registrations::Column::ExpiresAt.gt(now_ms))
            .order_by_asc(registrations::Column::Contact)
            .all(&self.db)
            .await?;
        rows.into_iter().map(Binding::try_from).collect()
    }
}
