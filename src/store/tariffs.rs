//! Tariff versions per service. A new version applies to sessions confirmed at or after its
//! `effective_from`; the session writer records the version in force at confirmation on the
//! session (`tariff_id`), and bills the session with it when it ends.

use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, EntityTrait, QueryFilter, QueryOrder,
};

use super::entities::tariffs;
use super::{new_id, Store, StoreError};
use crate::billing::tariff::Tariff;

/// One tariff version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TariffRecord {
    pub id: String,
    pub service_id: String,
    pub tariff: Tariff,
    pub effective_from: i64,
    pub created_at: i64,
}

impl From<tariffs::Model> for TariffRecord {
    fn from(m: tariffs::Model) -> Self {
        TariffRecord {
            id: m.id,
            service_id: m.service_id,
            tariff: Tariff {
                currency: m.currency,
                setup_amount: m.setup_amount,
                per_minute_amount: m.per_minute_amount,
                increment_secs: m.increment_secs,
                free_secs: m.free_secs,
            },
            effective_from: m.effective_from,
            created_at: m.created_at,
        }
    }
}

impl Store {
    /// Adds a tariff version for the service `service_id`, in force from `now_ms`.
    pub async fn set_tariff(
        &self,
        service_id: &str,
        tariff: &Tariff,
        now_ms: i64,
    ) -> Result<TariffRecord, StoreError> {
        tariff
            .validate()
            .map_err(|(_, message)| StoreError::Invalid(message))?;
        let txn = self.begin_write().await?;
        super::api_queries::live_service(&txn, service_id).await?;
        let row = tariffs::ActiveModel {
            id: Set(new_id()),
            service_id: Set(service_id.to_owned()),
            currency: Set(tariff.currency.clone()),
            setup_amount: Set(tariff.setup_amount),
            per_minute_amount: Set(tariff.per_minute_amount),
            increment_secs: Set(tariff.increment_secs),
            free_secs: Set(tariff.free_secs),
            effective_from: Set(now_ms),
            created_at: Set(now_ms),
        }
        .insert(&txn)
        .await?;
        txn.commit().await?;
        Ok(row.into())
    }

    /// The tariff version of `service_id` in force at `at_ms`, if any.
    pub async fn tariff_at(
        &self,
        service_id: &str,
        at_ms: i64,
    ) -> Result<Option<TariffRecord>, StoreError> {
        use tariffs::Column as C;
        Ok(tariffs::Entity::find()
            .filter(C::ServiceId.eq(service_id))
            .filter(C::EffectiveFrom.lte(at_ms))
            .order_by_desc(C::EffectiveFrom)
            .order_by_desc(C::CreatedAt)
            .one(&self.db)
            .await?
            .map(TariffRecord::from))
    }
}
