//! The HTTP side of the relay: the REST API under `/v1`, its OpenAPI document, the docs UI,
//! the JWK set, probes and metrics. [`router`] builds it all from an [`ApiState`];
//! [`openapi`] builds the document alone (no state, no database) for `tollgate openapi`.
//!
//! ```text
//!  GET  /healthz /readyz /metrics          probes (no key)            health.rs
//!  GET  /.well-known/jwks.json             token keys (no key)        tokens.rs
//!  GET  /openapi.json, /docs               the document, Swagger UI (vendored, works offline)
//!  ── /v1: auth::authenticate (bearer key → Principal, rate limit → 429, else 401) ──
//!  ── then idempotency::middleware (Idempotency-Key on POST: replay, 409 in flight, 422) ──
//!  /v1/users[/{id}]                        operator                   users.rs
//!  /v1/app-servers[/{id}[/api-key]]        operator                   app_servers.rs
//!  /v1/services[/{id}[/tariff]]            operator                   services.rs
//!  /v1/sessions[/{id}]                     operator, or an application server (its own)  sessions.rs
//!  /v1/sessions/{id}/charges, /v1/charges  operator, or an application server (its own)  billing.rs
//!  /v1/adjustments, /v1/users/{id}/statement  operator                billing.rs
//!  /v1/app-servers/{id}/settlement         operator, or that application server          billing.rs
//!  /v1/app-servers/{id}/webhook-secret, /v1/webhook-deliveries                             webhooks.rs
//!  /v1/tokens/introspect                   operator, or an application server (RFC 7662)  tokens.rs
//! ```
//!
//! Lists page with an opaque cursor ([`pagination`]); timestamps are RFC 3339 strings
//! ([`crate::clock::rfc3339`]); money is integer minor units with an ISO 4217 code.
//!
//! - Errors: every failure is an [`ApiError`], answered as `application/problem+json`
//!   (RFC 9457) naming the offending field ([`error`], [`extract`]).
//! - Keys and scoping: [`auth`]. Rate limits: [`rate_limit`]. Metrics: [`metrics`].
//! - Each route file holds its handlers with their `#[utoipa::path]` annotations; the document
//!   is generated from them (utoipa-axum: one path per `routes!`), then [`openapi`] adds the
//!   bearer security scheme and the shared 401/429 responses to every `/v1` operation.
//!   `openapi/openapi.json` is that document, committed; `tests/api.rs` fails when they differ.
//!
//! Decisions and their reasons: `docs/decisions/0005-rest-api.md`.

pub mod app_servers;
pub mod auth;
pub mod billing;
pub mod error;
pub mod extract;
pub mod health;
pub mod idempotency;
pub mod pagination;
pub mod rate_limit;
pub mod services;
pub mod sessions;
pub mod tokens;
pub mod users;
pub mod webhooks;

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::http::HeaderValue;
use axum::Router;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, OpenApi, Ref, RefOr, ResponseBuilder};
use utoipa::OpenApi as _;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use utoipa_swagger_ui::SwaggerUi;

use crate::clock::{Millis, SharedClock};
use crate::config::Secret;
use crate::store::Store;
use crate::tokens::TokenIssuer;

pub use crate::metrics::Metrics;
pub use auth::{Operator, Principal};
pub use error::{ApiError, FieldError, Problem, PROBLEM_JSON};
pub use health::Readiness;
pub use rate_limit::{RateLimit, RateLimiter};

/// Largest request body the API reads (JSON or form).
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// The API's settings, from `[api]` and `[sip]` of the configuration.
#[derive(Debug, Clone)]
pub struct ApiSettings {
    /// The operator key; `None` disables every operator operation.
    pub operator_key: Option<Secret>,
    /// The realm new users get when the request names none (the relay's SIP domain).
    pub default_realm: String,
    /// The domain a new service gets when the request names none (the relay's SIP domain).
    pub default_domain: String,
    /// Per-client request budget.
    pub rate_limit: RateLimit,
    /// How long a reissued API key's predecessors keep working (`[api] key_grace_secs`).
    pub key_grace_ms: i64,
    /// How long a replaced webhook secret keeps signing (`[webhooks] secret_grace_secs`).
    pub secret_grace_ms: i64,
}

/// What the API serves from.
pub struct ApiParts {
    pub store: Store,
    pub clock: SharedClock,
    pub metrics: Metrics,
    pub readiness: Readiness,
    /// The token issuer, for `/.well-known/jwks.json` and introspection; `None` answers 503.
    pub tokens: Option<TokenIssuer>,
    pub settings: ApiSettings,
}

/// The state every handler shares; cheap to clone.
#[derive(Clone)]
pub struct ApiState {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    clock: SharedClock,
    metrics: Metrics,
    readiness: Readiness,
    tokens: Option<TokenIssuer>,
    operator_key_digest: Option<[u8; 32]>,
    default_realm: String,
    default_domain: String,
    limiter: RateLimiter,
    charges: crate::billing::ChargeWriter,
    in_flight: Arc<idempotency::InFlight>,
    key_cache: auth::KeyCache,
    key_grace_ms: i64,
    secret_grace_ms: i64,
}

impl ApiState {
    /// Builds the state and starts the REST charge writer (group commit) on the current
    /// runtime; it stops when the last clone of the state is dropped.
    pub fn new(parts: ApiParts) -> ApiState {
        let ApiParts {
            store,
            clock,
            metrics,
            readiness,
            tokens,
            settings,
        } = parts;
        if settings
            .operator_key
            .as_ref()
            .is_none_or(|k| k.expose().is_empty())
        {
            tracing::warn!(
                "no [api] operator_key (TOLLGATE_OPERATOR_KEY): REST operator operations are off"
            );
        }
        let (charges, _writer) = crate::billing::ChargeWriter::spawn(store.clone(), clock.clone());
        ApiState {
            inner: Arc::new(Inner {
                charges,
                in_flight: Arc::default(),
                key_cache: auth::KeyCache::default(),
                key_grace_ms: settings.key_grace_ms,
                secret_grace_ms: settings.secret_grace_ms,
                store,
                clock,
                metrics,
                readiness,
                tokens,
                operator_key_digest: settings
                    .operator_key
                    .as_ref()
                    .filter(|k| !k.expose().is_empty())
                    .map(|k| auth::key_digest(k.expose())),
                default_realm: settings.default_realm,
                default_domain: settings.default_domain,
                limiter: RateLimiter::new(settings.rate_limit),
            }),
        }
    }

    fn store(&self) -> &Store {
        &self.inner.store
    }

    fn now_ms(&self) -> Millis {
        self.inner.clock.now_ms()
    }
}

/// The `/v1` routes, one path per `routes!` (utoipa-axum mounts every handler of one call on
/// every path of that call).
fn v1_routes() -> OpenApiRouter<ApiState> {
    OpenApiRouter::new()
        .routes(routes!(users::create_user, users::list_users))
        .routes(routes!(
            users::get_user,
            users::update_user,
            users::delete_user
        ))
        .routes(routes!(billing::get_statement))
        .routes(routes!(
            app_servers::create_app_server,
            app_servers::list_app_servers
        ))
        .routes(routes!(app_servers::get_own_app_server))
        .routes(routes!(
            app_servers::get_app_server,
            app_servers::update_app_server,
            app_servers::delete_app_server
        ))
        .routes(routes!(app_servers::reissue_api_key))
        .routes(routes!(webhooks::issue_webhook_secret))
        .routes(routes!(billing::get_settlement))
        .routes(routes!(services::create_service, services::list_services))
        .routes(routes!(
            services::get_service,
            services::update_service,
            services::delete_service
        ))
        .routes(routes!(services::set_tariff, services::get_tariff))
        .routes(routes!(sessions::list_sessions))
        .routes(routes!(sessions::get_session))
        .routes(routes!(
            billing::create_charge,
            billing::list_session_charges
        ))
        .routes(routes!(billing::list_charges))
        .routes(routes!(billing::get_charge))
        .routes(routes!(billing::create_adjustment))
        .routes(routes!(webhooks::list_webhook_deliveries))
        .routes(routes!(tokens::introspect))
}

/// The routes outside `/v1`: no key, no rate limit.
fn public_routes() -> OpenApiRouter<ApiState> {
    OpenApiRouter::new()
        .routes(routes!(health::healthz))
        .routes(routes!(health::readyz))
        .routes(routes!(health::metrics))
        .routes(routes!(tokens::jwks))
}

#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "Tollgate",
        description = "The REST API of Tollgate, a SIP relay that lends an operator's user \
                       authentication, session control and billing to application servers.\n\n\
                       Every `/v1` request carries `Authorization: Bearer KEY`: the operator \
                       key, or an application server's key (which reads only its own \
                       sessions). Errors are RFC 9457 problem documents \
                       (`application/problem+json`) naming the offending field. Timestamps are \
                       RFC 3339 strings in UTC; money is integer minor units with an ISO 4217 \
                       currency code. Every `POST` accepts an `Idempotency-Key` header (required \
                       for charges and adjustments): a retry with the same key and body replays \
                       the first response, status included. Lists page with `limit` and an \
                       opaque `cursor` (the previous page's `next_cursor`).",
        license(name = "MIT", identifier = "MIT")
    ),
    tags(
        (name = "users", description = "SIP users, stored as digest HA1 hashes"),
        (name = "app-servers", description = "Application servers and their API keys"),
        (name = "services", description = "Services and the application servers that deliver them"),
        (name = "sessions", description = "Relayed sessions, from INVITE to BYE"),
        (name = "billing", description = "Item charges, adjustments, statements and settlements"),
        (name = "webhooks", description = "Signed webhook events: secrets and the delivery log"),
        (name = "tokens", description = "Session-token verification for application servers"),
        (name = "operations", description = "Probes and metrics")
    ),
    components(schemas(Problem, FieldError))
)]
struct ApiDoc;

/// The OpenAPI document of the whole HTTP surface, as committed in `openapi/openapi.json`.
pub fn openapi() -> OpenApi {
    let mut doc = OpenApiRouter::<ApiState>::with_openapi(ApiDoc::openapi())
        .nest("/v1", v1_routes())
        .merge(public_routes())
        .into_openapi();
    doc.info.version = env!("CARGO_PKG_VERSION").to_owned();
    add_security_and_shared_responses(&mut doc);
    doc
}

/// [`openapi`] as pretty JSON with a trailing newline: the committed file's exact bytes.
pub fn openapi_json() -> String {
    let mut json = openapi()
        .to_pretty_json()
        .expect("the OpenAPI document serializes");
    json.push('\n');
    json
}

/// The bearer scheme for the whole document, and on every `/v1` operation the responses every
/// such operation can give: 401 (no or unknown key), 429 (rate limit) and 500 (a failure on
/// the relay's side).
fn add_security_and_shared_responses(doc: &mut OpenApi) {
    let components = doc.components.get_or_insert_with(Default::default);
    components.add_security_scheme(
        "bearer",
        SecurityScheme::Http(
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .description(Some(
                    "The operator key (`[api] operator_key`), or an application server's API \
                     key (`tgk_…`, shown once when the server is created).",
                ))
                .build(),
        ),
    );
    let problem = || {
        ContentBuilder::new()
            .schema(Some(Ref::from_schema_name("Problem")))
            .build()
    };
    components.responses.insert(
        "Unauthorized".into(),
        RefOr::T(
            ResponseBuilder::new()
                .description("No API key, or an unknown one (`WWW-Authenticate: Bearer` is set)")
                .content(PROBLEM_JSON, problem())
                .build(),
        ),
    );
    components.responses.insert(
        "RateLimited".into(),
        RefOr::T(
            ResponseBuilder::new()
                .description(
                    "This key's (or, without one, this address's) request budget is spent; \
                     retry after the `Retry-After` header's seconds",
                )
                .header(
                    "Retry-After",
                    utoipa::openapi::HeaderBuilder::new()
                        .schema(Some(<u64 as utoipa::PartialSchema>::schema()))
                        .description(Some("Seconds until the next request will be accepted"))
                        .build(),
                )
                .content(PROBLEM_JSON, problem())
                .build(),
        ),
    );
    components.responses.insert(
        "Internal".into(),
        RefOr::T(
            ResponseBuilder::new()
                .description(
                    "The relay failed (e.g. its database); nothing reveals the cause, which is \
                     logged. Retrying with the same Idempotency-Key is safe",
                )
                .content(PROBLEM_JSON, problem())
                .build(),
        ),
    );
    doc.security = Some(vec![utoipa::openapi::security::SecurityRequirement::new(
        "bearer",
        Vec::<String>::new(),
    )]);
    for (path, item) in doc.paths.paths.iter_mut() {
        if !path.starts_with("/v1/") {
            continue;
        }
        for op in [
            &mut item.get,
            &mut item.post,
            &mut item.put,
            &mut item.delete,
            &mut item.patch,
        ]
        .into_iter()
        .flatten()
        {
            op.responses.responses.insert(
                "401".into(),
                RefOr::Ref(Ref::from_response_name("Unauthorized")),
            );
            op.responses.responses.insert(
                "429".into(),
                RefOr::Ref(Ref::from_response_name("RateLimited")),
            );
            op.responses.responses.insert(
                "500".into(),
                RefOr::Ref(Ref::from_response_name("Internal")),
            );
        }
    }
}

/// The whole HTTP surface: `/v1` behind authentication and rate limits, the public routes,
/// `/openapi.json` and the docs UI at `/docs`, problem+json for unknown routes and methods,
/// and request metrics around everything.
pub fn router(state: ApiState) -> Router {
    let (v1, _) = v1_routes().split_for_parts();
    let v1 = v1
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            idempotency::middleware,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::authenticate,
        ));
    let (public, _) = public_routes().split_for_parts();
    let docs: Router<ApiState> = SwaggerUi::new("/docs")
        .url("/openapi.json", openapi())
        .into();
    Router::new()
        .nest("/v1", v1)
        .merge(public)
        .merge(docs)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(
            state.inner.metrics.clone(),
            crate::metrics::track_http,
        ))
        .with_state(state)
}

async fn not_found(uri: axum::http::Uri) -> ApiError {
    ApiError::NotFound(format!("no route {}", uri.path()))
}

async fn method_not_allowed(method: axum::http::Method, uri: axum::http::Uri) -> ApiError {
    ApiError::MethodNotAllowed(format!("{method} is not allowed on {}", uri.path()))
}

/// A `Location` header value for a created resource.
fn location(path: String) -> [(axum::http::HeaderName, HeaderValue); 1] {
    let value = HeaderValue::from_str(&path).unwrap_or(HeaderValue::from_static("/"));
    [(axum::http::header::LOCATION, value)]
}
