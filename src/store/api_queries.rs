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
use super::{
    AppServerRecord, ForkMode, ServiceRecord, SessionRecord, SessionState, Store, StoreError,
};

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

    /// One application server by id (not a deleted one).
    pub async fn get_app_server(&self, id: &str) -> Result<AppServerRecord, StoreError> {
        live_app_server(&self.db, id)
            .await
            .map(AppServerRecord::from)
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
    let service = live_service(db, id).await?;
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

/// The application server `id`, unless it does not exist or was deleted.
pub(super) async fn live_app_server<C: ConnectionTrait>(
    db: &C,
    id: &str,
) -> Result<app_servers::Model, StoreError> {
    app_servers::Entity::find_by_id(id.to_owned())
        .one(db)
        .await?
        .filter(|m| m.deleted_at.is_none())
        .ok_or_else(|| StoreError::NotFound(format!("no application server {id}")))
}

/// The service `id`, unless it does not exist or was deleted.
pub(super) async fn live_service<C: ConnectionTrait>(
    db: &C,
    id: &str,
) -> Result<services::Model, StoreError> {
    services::Entity::find_by_id(id.to_owned())
        .one(db)
        .await?
        .filter(|m| m.deleted_at.is_none())
        .ok_or_else(|| StoreError::NotFound(format!("no service {id}")))
}

/// `Invalid` naming `what` when the user `id` does not exist.
pub(super) async fn user_exists<C: ConnectionTrait>(db: &C, id: &str) -> Result<(), StoreError> {
    match users::Entity::find_by_id(id.to_owned()).one(db).await? {
        Some(_) => Ok(()),
        None => Err(StoreError::Invalid(format!("user_id: no user {id}"))),
    }
}

/// `Invalid` when the application server `id` never existed (a deleted one is history and
/// may still be named).
pub(super) async fn app_server_exists<C: ConnectionTrait>(
    db: &C,
    id: &str,
) -> Result<(), StoreError> {
    match app_servers::Entity::find_by_id(id.to_owned())
        .one(db)
        .await?
    {
        Some(_) => Ok(()),
        None => Err(StoreError::Invalid(format!(
            "app_server_id: no application server {id}"
        ))),
    }
}

/// `Invalid` when the session `id` does not exist.
pub(super) async fn session_exists<C: ConnectionTrait>(db: &C, id: &str) -> Result<(), StoreError> {
    match sessions::Entity::find_by_id(id.to_owned()).one(db).await? {
        Some(_) => Ok(()),
        None => Err(StoreError::Invalid(format!("session_id: no session {id}"))),
    }
}

/// Whether any session relayed by `column = id` is still live (trying or confirmed).
async fn has_live_sessions<C: ConnectionTrait>(
    db: &C,
    column: sessions::Column,
    id: &str,
) -> Result<bool, StoreError> {
    use sessions::Column as S;
    Ok(sessions::Entity::find()
        .filter(column.eq(id))
        .filter(S::State.is_in(["trying", "confirmed"]))
        .one(db)
        .await?
        .is_some())
}

/// A change to an application server (`PATCH`); absent fields stay as they are.
#[derive(Debug, Clone, Default)]
pub struct AppServerChange {
    pub uri: Option<String>,
    /// `Some(None)` removes the webhook URL.
    pub webhook_url: Option<Option<String>>,
    pub commission_bps: Option<i32>,
}

impl Store {
    /// Users by name, after the name `after`.
    pub async fn page_users(
        &self,
        after: Option<&str>,
        limit: u64,
    ) -> Result<Vec<UserRecord>, StoreError> {
        use users::Column as C;
        let mut select = users::Entity::find();
        if let Some(after) = after {
            select = select.filter(C::Name.gt(after));
        }
        Ok(select
            .order_by_asc(C::Name)
            .limit(limit)
            .all(&self.db)
            .await?
            .into_iter()
            .map(UserRecord::from)
            .collect())
    }

    /// Replaces the password of the user `id` (realm unchanged unless given).
    pub async fn set_password_by_id(
        &self,
        id: &str,
        realm: Option<&str>,
        password: &str,
    ) -> Result<UserRecord, StoreError> {
        let user = self.get_user(id).await?;
        let realm = realm.unwrap_or(&user.realm).to_owned();
        self.set_password(&user.name, &realm, password).await?;
        self.get_user(id).await
    }

    /// Application servers (not deleted) by name, after the name `after`.
    pub async fn page_app_servers(
        &self,
        after: Option<&str>,
        limit: u64,
    ) -> Result<Vec<AppServerRecord>, StoreError> {
        use app_servers::Column as C;
        let mut select = app_servers::Entity::find().filter(C::DeletedAt.is_null());
        if let Some(after) = after {
            select = select.filter(C::Name.gt(after));
        }
        Ok(select
            .order_by_asc(C::Name)
            .limit(limit)
            .all(&self.db)
            .await?
            .into_iter()
            .map(AppServerRecord::from)
            .collect())
    }

    /// Changes an application server's URI, webhook URL or commission.
    pub async fn update_app_server(
        &self,
        id: &str,
        change: &AppServerChange,
    ) -> Result<AppServerRecord, StoreError> {
        use app_servers::Column as C;
        let txn = self.begin_write().await?;
        let current = live_app_server(&txn, id).await?;
        let mut update = app_servers::Entity::update_many();
        if let Some(uri) = &change.uri {
            let uri = uri.trim();
            super::directory::validate_app_server(&current.name, uri)?;
            update = update.col_expr(C::Uri, sea_orm::sea_query::Expr::value(uri));
        }
        if let Some(url) = &change.webhook_url {
            if let Some(url) = url {
                validate_webhook_url(url)?;
            }
            update = update.col_expr(C::WebhookUrl, sea_orm::sea_query::Expr::value(url.clone()));
        }
        if let Some(bps) = change.commission_bps {
            if !(0..=10_000).contains(&bps) {
                return Err(StoreError::Invalid(
                    "commission_bps must be between 0 and 10000".into(),
                ));
            }
            update = update.col_expr(C::CommissionBps, sea_orm::sea_query::Expr::value(bps));
        }
        update.filter(C::Id.eq(id)).exec(&txn).await?;
        let updated = live_app_server(&txn, id).await?;
        txn.commit().await?;
        Ok(updated.into())
    }

    /// Deletes an application server: refused while it has live sessions or a service still
    /// routes to it. The row stays (sessions and the ledger name it); its API keys go.
    pub async fn delete_app_server(&self, id: &str, now_ms: i64) -> Result<(), StoreError> {
        let txn = self.begin_write().await?;
        live_app_server(&txn, id).await?;
        if has_live_sessions(&txn, sessions::Column::AppServerId, id).await? {
            return Err(StoreError::Conflict(format!(
                "application server {id} has live sessions; delete it once they end"
            )));
        }
        let routed: Vec<String> = service_routes::Entity::find()
            .filter(service_routes::Column::AppServerId.eq(id))
            .all(&txn)
            .await?
            .into_iter()
            .map(|r| r.service_id)
            .collect();
        let live_services = services::Entity::find()
            .filter(services::Column::Id.is_in(routed))
            .filter(services::Column::DeletedAt.is_null())
            .all(&txn)
            .await?;
        if let Some(s) = live_services.first() {
            return Err(StoreError::Conflict(format!(
                "service {}@{} still routes to application server {id}; change or delete it first",
                s.name, s.domain
            )));
        }
        app_servers::Entity::update_many()
            .col_expr(
                app_servers::Column::DeletedAt,
                sea_orm::sea_query::Expr::value(now_ms),
            )
            .filter(app_servers::Column::Id.eq(id))
            .exec(&txn)
            .await?;
        super::entities::api_keys::Entity::delete_many()
            .filter(super::entities::api_keys::Column::AppServerId.eq(id))
            .exec(&txn)
            .await?;
        txn.commit().await?;
        Ok(())
    }

    /// Services (not deleted) by `(domain, name)`, after the service id `after`'s position.
    pub async fn page_services(
        &self,
        after: Option<(&str, &str)>,
        limit: u64,
    ) -> Result<Vec<ServiceRecord>, StoreError> {
        use services::Column as C;
        let txn = self.begin_snapshot().await?;
        let mut select = services::Entity::find().filter(C::DeletedAt.is_null());
        if let Some((domain, name)) = after {
            select = select.filter(
                Condition::any().add(C::Domain.gt(domain)).add(
                    Condition::all()
                        .add(C::Domain.eq(domain))
                        .add(C::Name.gt(name)),
                ),
            );
        }
        let ids: Vec<String> = select
            .order_by_asc(C::Domain)
            .order_by_asc(C::Name)
            .limit(limit)
            .all(&txn)
            .await?
            .into_iter()
            .map(|s| s.id)
            .collect();
        let mut page = Vec::with_capacity(ids.len());
        for id in ids {
            page.push(read_service(&txn, &id).await?);
        }
        txn.commit().await?;
        Ok(page)
    }

    /// Changes a service in one transaction: its ordered application servers (by id) and/or
    /// its fork mode; `None` keeps what is there.
    pub async fn update_service(
        &self,
        id: &str,
        app_server_ids: Option<&[String]>,
        fork_mode: Option<ForkMode>,
    ) -> Result<ServiceRecord, StoreError> {
        if app_server_ids.is_some_and(<[String]>::is_empty) {
            return Err(StoreError::Invalid(
                "a service needs at least one application server".into(),
            ));
        }
        let txn = self.begin_write().await?;
        live_service(&txn, id).await?;
        if let Some(app_server_ids) = app_server_ids {
            for server in app_server_ids {
                live_app_server(&txn, server)
                    .await
                    .map_err(|_| StoreError::Invalid(format!("no application server {server}")))?;
            }
            service_routes::Entity::delete_many()
                .filter(service_routes::Column::ServiceId.eq(id))
                .exec(&txn)
                .await?;
            let routes = app_server_ids.iter().zip(0..).map(|(server, position)| {
                service_routes::ActiveModel {
                    service_id: sea_orm::ActiveValue::Set(id.to_owned()),
                    position: sea_orm::ActiveValue::Set(position),
                    app_server_id: sea_orm::ActiveValue::Set(server.clone()),
                }
            });
            service_routes::Entity::insert_many(routes)
                .exec_without_returning(&txn)
                .await?;
        }
        if let Some(mode) = fork_mode {
            services::Entity::update_many()
                .col_expr(
                    services::Column::ForkMode,
                    sea_orm::sea_query::Expr::value(mode.as_str()),
                )
                .filter(services::Column::Id.eq(id))
                .exec(&txn)
                .await?;
        }
        let service = read_service(&txn, id).await?;
        txn.commit().await?;
        Ok(service)
    }

    /// Deletes a service: refused while it has live sessions. The row stays for history.
    pub async fn delete_service(&self, id: &str, now_ms: i64) -> Result<(), StoreError> {
        let txn = self.begin_write().await?;
        live_service(&txn, id).await?;
        if has_live_sessions(&txn, sessions::Column::ServiceId, id).await? {
            return Err(StoreError::Conflict(format!(
                "service {id} has live sessions; delete it once they end"
            )));
        }
        services::Entity::update_many()
            .col_expr(
                services::Column::DeletedAt,
                sea_orm::sea_query::Expr::value(now_ms),
            )
            .filter(services::Column::Id.eq(id))
            .exec(&txn)
            .await?;
        txn.commit().await?;
        Ok(())
    }
}

/// A webhook URL: `http://` or `https://`, a host, at most 2048 characters.
fn validate_webhook_url(url: &str) -> Result<(), StoreError> {
    let invalid = |why: &str| StoreError::Invalid(format!("webhook_url {url:?} {why}"));
    if url.len() > 2048 {
        return Err(invalid("is longer than 2048 characters"));
    }
    let parsed = reqwest::Url::parse(url).map_err(|e| invalid(&format!("is not a URL: {e}")))?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
        return Err(invalid("must be an http:// or https:// URL with a host"));
    }
    Ok(())
}
