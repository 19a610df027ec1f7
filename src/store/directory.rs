//! Application servers, services, and the [`Directory`] the relay caches.
//!
//! A service is a `name@domain` pair (stored lowercase) delivered by one or more application
//! servers in a fixed order; the order is kept in `service_routes.position`.

use std::collections::HashMap;

use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter,
    QueryOrder,
};
use serde::Serialize;

use super::entities::{app_servers, service_routes, services, users};
use super::{new_id, now_ms, Store, StoreError};

/// A named application server and the SIP URI the relay forwards to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AppServerRecord {
    pub id: String,
    pub name: String,
    pub uri: String,
    pub created_at: i64,
    /// The operator's commission on the server's settlement, in basis points (1500 = 15 %).
    pub commission_bps: i32,
    /// Where its webhooks are POSTed, if anywhere.
    pub webhook_url: Option<String>,
}

impl From<app_servers::Model> for AppServerRecord {
    fn from(m: app_servers::Model) -> Self {
        AppServerRecord {
            id: m.id,
            name: m.name,
            uri: m.uri,
            created_at: m.created_at,
            commission_bps: m.commission_bps,
            webhook_url: m.webhook_url,
        }
    }
}

/// How a service delivered by several application servers forks an INVITE.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, serde::Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
#[schema(example = "first_answer")]
pub enum ForkMode {
    /// All at once; the first 2xx is relayed and the other branches are CANCELled.
    #[default]
    FirstAnswer,
    /// All at once; every 2xx reaches the caller as its own dialog and session.
    AllAnswers,
    /// One at a time, in order; the next when one fails or times out.
    Serial,
}

impl ForkMode {
    pub fn as_str(self) -> &'static str {
        match self {
            ForkMode::FirstAnswer => "first_answer",
            ForkMode::AllAnswers => "all_answers",
            ForkMode::Serial => "serial",
        }
    }
}

impl std::str::FromStr for ForkMode {
    type Err = StoreError;
    /// The stored names, and the CLI's short ones (`first`, `all`, `serial`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "first_answer" | "first" => Ok(ForkMode::FirstAnswer),
            "all_answers" | "all" => Ok(ForkMode::AllAnswers),
            "serial" => Ok(ForkMode::Serial),
            other => Err(StoreError::Invalid(format!(
                "fork mode {other:?} is not first_answer, all_answers or serial"
            ))),
        }
    }
}

/// A service and the application servers that deliver it, in order.
#[derive(Debug, Clone, Serialize)]
pub struct ServiceRecord {
    pub id: String,
    pub name: String,
    pub domain: String,
    pub app_servers: Vec<AppServerRecord>,
    pub fork_mode: ForkMode,
    pub created_at: i64,
}

impl ServiceRecord {
    /// `name@domain`, the form a client puts in the Request-URI.
    pub fn address(&self) -> String {
        format!("{}@{}", self.name, self.domain)
    }
}

/// What the relay needs to check a user's digest response. Deliberately not `Serialize`:
/// HA1 hashes are password equivalents and must not leak into an API response by accident.
#[derive(Debug, Clone)]
pub struct UserCredentials {
    /// The user's id, recorded on the sessions (and bills) of the user.
    pub id: String,
    pub realm: String,
    pub ha1_md5: String,
    pub ha1_sha256: String,
}

/// Everything the relay caches: credentials by user name, and how each service is delivered,
/// keyed by lowercase `name@domain`.
#[derive(Debug, Clone, Default)]
pub struct Directory {
    pub users: HashMap<String, UserCredentials>,
    pub services: HashMap<String, DirectoryService>,
}

/// A service as the relay routes it: its id, its application servers in order, and how it
/// forks to them.
#[derive(Debug, Clone, Default)]
pub struct DirectoryService {
    pub id: String,
    pub fork_mode: ForkMode,
    pub app_servers: Vec<AppServerRecord>,
}

pub(super) fn validate_app_server(name: &str, uri: &str) -> Result<(), StoreError> {
    if name.is_empty() || name.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(StoreError::Invalid(format!(
            "application server name {name:?} must be non-empty and contain no spaces"
        )));
    }
    let lower = uri.to_ascii_lowercase();
    if !(lower.starts_with("sip:") || lower.starts_with("sips:")) {
        return Err(StoreError::Invalid(format!(
            "application server URI {uri:?} must start with sip: or sips:"
        )));
    }
    if uri.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(StoreError::Invalid(format!(
            "application server URI {uri:?} must not contain spaces"
        )));
    }
    rsipstack::sip::parse_uri(uri).map_err(|e| {
        StoreError::Invalid(format!(
            "application server URI {uri:?} is not a SIP URI: {e}"
        ))
    })?;
    Ok(())
}

/// Splits and validates `name@domain`, lowercasing both halves.
fn parse_service_address(name_at_domain: &str) -> Result<(String, String), StoreError> {
    let invalid = || {
        StoreError::Invalid(format!(
            "service {name_at_domain:?} must look like name@domain, e.g. service1@portal.com"
        ))
    };
    let (name, domain) = name_at_domain.split_once('@').ok_or_else(invalid)?;
    let well_formed = |s: &str| {
        !s.is_empty()
            && !s
                .chars()
                .any(|c| c == '@' || c == ':' || c.is_whitespace() || c.is_control())
    };
    if !well_formed(name) || !well_formed(domain) {
        return Err(invalid());
    }
    Ok((name.to_lowercase(), domain.to_lowercase()))
}

impl Store {
    /// Adds an application server reachable at the SIP URI `uri` (e.g. `sip:127.0.0.1:5090`).
    pub async fn add_app_server(
        &self,
        name: &str,
        uri: &str,
    ) -> Result<AppServerRecord, StoreError> {
        let uri = uri.trim();
        validate_app_server(name, uri)?;
        let model = app_servers::ActiveModel {
            id: Set(new_id()),
            name: Set(name.to_owned()),
            uri: Set(uri.to_owned()),
            created_at: Set(now_ms()),
            commission_bps: Set(0),
            webhook_url: Set(None),
            deleted_at: Set(None),
        };
        let inserted = model.insert(&self.db).await.map_err(|e| {
            StoreError::conflict_on_unique(e, || {
                format!("application server {name} already exists")
            })
        })?;
        Ok(inserted.into())
    }

    /// Every application server (not deleted), by name.
    pub async fn list_app_servers(&self) -> Result<Vec<AppServerRecord>, StoreError> {
        let rows = app_servers::Entity::find()
            .filter(app_servers::Column::DeletedAt.is_null())
            .order_by_asc(app_servers::Column::Name)
            .all(&self.db)
            .await?;
        Ok(rows.into_iter().map(AppServerRecord::from).collect())
    }

    /// Adds the service `name@domain`, delivered by the named application servers in the
    /// given order and forked to them as `fork_mode` says. All or nothing: one transaction.
    pub async fn add_service(
        &self,
        name_at_domain: &str,
        app_servers: &[String],
        fork_mode: ForkMode,
    ) -> Result<ServiceRecord, StoreError> {
        let (name, domain) = parse_service_address(name_at_domain)?;
        if app_servers.is_empty() {
            return Err(StoreError::Invalid(format!(
                "service {name}@{domain} needs at least one application server"
            )));
        }
        for (i, server) in app_servers.iter().enumerate() {
            if app_servers[..i].contains(server) {
                return Err(StoreError::Invalid(format!(
                    "application server {server} is listed twice"
                )));
            }
        }

        let txn = self.begin_write().await?;
        let found: HashMap<String, app_servers::Model> = app_servers::Entity::find()
            .filter(app_servers::Column::Name.is_in(app_servers.iter().cloned()))
            .filter(app_servers::Column::DeletedAt.is_null())
            .all(&txn)
            .await?
            .into_iter()
            .map(|m| (m.name.clone(), m))
            .collect();
        let mut ordered = Vec::with_capacity(app_servers.len());
        for server in app_servers {
            let model = found.get(server).ok_or_else(|| {
                StoreError::NotFound(format!("no application server named {server}"))
            })?;
            ordered.push(AppServerRecord::from(model.clone()));
        }

        let service = services::ActiveModel {
            id: Set(new_id()),
            name: Set(name.clone()),
            domain: Set(domain.clone()),
            created_at: Set(now_ms()),
            fork_mode: Set(fork_mode.as_str().to_owned()),
            deleted_at: Set(None),
        }
        .insert(&txn)
        .await
        .map_err(|e| {
            StoreError::conflict_on_unique(e, || format!("service {name}@{domain} already exists"))
        })?;

        let routes =
            ordered
                .iter()
                .zip(0..)
                .map(|(server, position)| service_routes::ActiveModel {
                    service_id: Set(service.id.clone()),
                    position: Set(position),
                    app_server_id: Set(server.id.clone()),
                });
        service_routes::Entity::insert_many(routes)
            .exec_without_returning(&txn)
            .await?;
        txn.commit().await?;

        Ok(ServiceRecord {
            id: service.id,
            name: service.name,
            domain: service.domain,
            app_servers: ordered,
            fork_mode,
            created_at: service.created_at,
        })
    }

    /// Every service with its ordered application servers, by address.
    pub async fn list_services(&self) -> Result<Vec<ServiceRecord>, StoreError> {
        // One snapshot, so a concurrent add_service cannot leave a service without its routes.
        let txn = self.begin_snapshot().await?;
        let services = read_services(&txn).await?;
        txn.commit().await?;
        Ok(services)
    }

    /// Everything the relay caches, read in one snapshot (four queries).
    pub async fn load_directory(&self) -> Result<Directory, StoreError> {
        let txn = self.begin_snapshot().await?;
        let users = users::Entity::find().all(&txn).await?;
        let services = read_services(&txn).await?;
        txn.commit().await?;

        Ok(Directory {
            users: users
                .into_iter()
                .map(|u| {
                    let credentials = UserCredentials {
                        id: u.id,
                        realm: u.realm,
                        ha1_md5: u.ha1_md5,
                        ha1_sha256: u.ha1_sha256,
                    };
                    (u.name, credentials)
                })
                .collect(),
            services: services
                .into_iter()
                .map(|s| {
                    let key = s.address().to_lowercase();
                    let service = DirectoryService {
                        id: s.id,
                        fork_mode: s.fork_mode,
                        app_servers: s.app_servers,
                    };
                    (key, service)
                })
                .collect(),
        })
    }
}

/// Services with their ordered application servers, in three queries.
async fn read_services<C: ConnectionTrait>(db: &C) -> Result<Vec<ServiceRecord>, StoreError> {
    let servers: HashMap<String, AppServerRecord> = app_servers::Entity::find()
        .filter(app_servers::Column::DeletedAt.is_null())
        .all(db)
        .await?
        .into_iter()
        .map(|m| (m.id.clone(), AppServerRecord::from(m)))
        .collect();
    let mut routes: HashMap<String, Vec<AppServerRecord>> = HashMap::new();
    for route in service_routes::Entity::find()
        .order_by_asc(service_routes::Column::ServiceId)
        .order_by_asc(service_routes::Column::Position)
        .all(db)
        .await?
    {
        // The foreign key guarantees the server exists; a miss would be a concurrent schema
        // change, and skipping it is the honest answer.
        if let Some(server) = servers.get(&route.app_server_id) {
            routes
                .entry(route.service_id)
                .or_default()
                .push(server.clone());
        }
    }
    let services = services::Entity::find()
        .filter(services::Column::DeletedAt.is_null())
        .order_by_asc(services::Column::Domain)
        .order_by_asc(services::Column::Name)
        .all(db)
        .await?;
    Ok(services
        .into_iter()
        .map(|s| ServiceRecord {
            app_servers: routes.remove(&s.id).unwrap_or_default(),
            // Written by this code only; an unknown value would be a newer schema.
            fork_mode: s.fork_mode.parse().unwrap_or_default(),
            id: s.id,
            name: s.name,
            domain: s.domain,
            created_at: s.created_at,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_addresses_are_lowercased_and_checked() {
        assert_eq!(
            parse_service_address("Service1@Portal.com").ok(),
            Some(("service1".into(), "portal.com".into()))
        );
        for bad in [
            "service1",
            "@portal.com",
            "s@",
            "a@b@c",
            "a b@c",
            "a@b:5060",
        ] {
            assert!(matches!(
                parse_service_address(bad),
                Err(StoreError::Invalid(_))
            ));
        }
    }

    #[test]
    fn app_server_uris_must_be_sip() {
        assert!(validate_app_server("shop1", "sip:127.0.0.1:5090").is_ok());
        assert!(validate_app_server("shop1", "sips:shop.example.com").is_ok());
        for bad in ["http://shop", "sip:", "sip:a b", "127.0.0.1:5090"] {
            assert!(
                matches!(
                    validate_app_server("shop1", bad),
                    Err(StoreError::Invalid(_))
                ),
                "{bad}"
            );
        }
        assert!(validate_app_server("", "sip:127.0.0.1").is_err());
    }
}
