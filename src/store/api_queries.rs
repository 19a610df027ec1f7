//! The reads (and the one delete) the REST API needs beyond the admin CLI's: one thing by id,
//! and sessions a page at a time.
//!
//! Session pages use keyset pagination over `(created_at, id)`, newest first: a page ends at
//! some session, and the next page is "everything strictly older than that session in this
//! order". Unlike `OFFSET`, it neither skips nor repeats a row when sessions are added while a
//! client pages, and every page costs the same index walk however deep it is.

use std::collections::HashMap;

use sea_orm::sea_query::Condition;
use sea_orm::{
    ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect, Statement,
};

use super::entities::{app_servers, service_routes, services, sessions, users};
use super::UserRecord;
use super::{AppServerRecord, ServiceRecord, SessionRecord, SessionState, Store, StoreError};

/// Which sessions [`Store::page_sessions`] returns, newest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionQuery {
    /// Only sessions in this state.
    pub state: Option<SessionState>,
    /// Only sessions of this service (`name@domain`, compared without regard to case).
    pub service: Option<String>,
    /// Only sessions of this caller (the authenticated user name).
    pub caller: Option<String>,
    /// Only sessions relayed to this application server (its name).
    pub app_server: Option<String>,
    /// Only sessions strictly after this `(created_at, id)` in newest-first order: the last
    /// session of the previous page.
    pub after: Option<(i64, String)>,
    /// At most this many sessions.
    pub limit: u64,
}

impl Store {
    /// A cheap round trip to the database (`SELECT 1`), for readiness probes.
    pub async fn ping(&self) -> Result<(), StoreError> {
        let backend = self.db.get_database_backend();
        self.db
            .query_one_raw(Statement::from_string(backend, "SELECT 1"))
            .await?;
        Ok(())
    }

    /// One user by id.
    pub async fn get_user(&self, id: &str) -> Result<UserRecord, StoreError> {
        users::Entity::find_by_id(id.to_owned())
            .one(&self.db)
            .await?
            .map(UserRecord::from)
            .ok_or_else(|| StoreError::NotFound(format!("no user {id}")))
    }

    /// Removes one user by id.
    pub async fn delete_user(&self, id: &str) -> Result<(), StoreError> {
        let deleted = users::Entity::delete_by_id(id.to_owned())
            .exec(&self.db)
            .await?;
        if deleted.rows_affected == 0 {
            return Err(StoreError::NotFound(format!("no user {id}")));
        }
        Ok(())
    }

    /// One application server by id.
    pub async fn get_app_server(&self, id: &str) -> Result<AppServerRecord, StoreError> {
        app_servers::Entity::find_by_id(id.to_owned())
            .one(&self.db)
            .await?
            .map(AppServerRecord::from)
            .ok_or_else(|| StoreError::NotFound(format!("no application server {id}")))
    }

    /// One service by id, with its application servers in order.
    pub async fn get_service(&self, id: &str) -> Result<ServiceRecord, StoreError> {
        // One snapshot, so a concurrent change cannot show a service without its routes.
        let txn = self.begin_snapshot().await?;
        let service = read_service(&txn, id).await;
        txn.commit().await?;
        service
    }

    /// Sessions matching `query`, newest first (by `created_at`, then `id`).
    pub async fn page_sessions(
        &self,
        query: &SessionQuery,
    ) -> Result<Vec<SessionRecord>, StoreError> {
        use sessions::Column as C;
        let mut select = sessions::Entity::find();
        if let Some(state) = query.state {
            select = select.filter(C::State.eq(state.as_str()));
        }
        if let Some(service) = &query.service {
            select = select.filter(C::Service.eq(service.to_lowercase()));
        }
        if let Some(caller) = &query.caller {
            select = select.filter(C::Caller.eq(caller.as_str()));
        }
        if let Some(app_server) = &query.app_server {
            select = select.filter(C::AppServer.eq(app_server.as_str()));
        }
        if let Some((created_at, id)) = &query.after {
            select = select.filter(
                Condition::any().add(C::CreatedAt.lt(*created_at)).add(
                    Condition::all()
                        .add(C::CreatedAt.eq(*created_at))
                        .add(C::Id.lt(id.as_str())),
                ),
            );
        }
        select
            .order_by_desc(C::CreatedAt)
            .order_by_desc(C::Id)
            .limit(query.limit)
            .all(&self.db)
            .await?
            .into_iter()
            .map(SessionRecord::try_from)
            .collect()
    }
}

/// One service and its ordered application servers, in three queries.
async fn read_service<C: ConnectionTrait>(db: &C, id: &str) -> Result<ServiceRecord, StoreError> {
    let service = services::Entity::find_by_id(id.to_owned())
        .one(db)
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("no service {id}")))?;
    let routes = service_routes::Entity::find()
        .filter(service_routes::Column::ServiceId.eq(id))
        .order_by_asc(service_routes::Column::Position)
        .all(db)
        .await?;
    let servers: HashMap<String, AppServerRecord> = app_servers::Entity::find()
        .filter(app_servers::Column::Id.is_in(routes.iter().map(|r| r.app_server_id.clone())))
        .all(db)
        .await?
        .into_iter()
        .map(|m| (m.id.clone(), AppServerRecord::from(m)))
        .collect();
    Ok(ServiceRecord {
        app_servers: routes
            .iter()
            .filter_map(|r| servers.get(&r.app_server_id).cloned())
            .collect(),
        fork_mode: service.fork_mode.parse().unwrap_or_default(),
        id: service.id,
        name: service.name,
        domain: service.domain,
        created_at: service.created_at,
    })
}
