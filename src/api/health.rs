//! Probes and metrics: `/healthz` (the process answers), `/readyz` (the database answers a
//! `SELECT 1` within [`DB_PROBE_TIMEOUT`], the SIP transports are bound and served, and the
//! node takes new calls: not draining, its session store keeping up), and `/metrics`. None
//! of them needs a key; none is rate-limited. `/readyz` tells an anonymous caller only ready
//! or not ready; the checks and why one failed (a database error's text, say) go only to a
//! caller presenting the operator key.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::ApiState;

/// How long `/readyz` waits for the database before calling it unreachable.
pub const DB_PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Whether the SIP side of the relay is up; set by [`crate::app`] once the transports are bound
/// and cleared if the relay core stops.
#[derive(Clone, Default)]
pub struct Readiness {
    sip: Arc<AtomicBool>,
    calls: Arc<std::sync::OnceLock<CallsCheck>>,
}

/// Says why the node takes no new calls now (draining, session store down or behind), or
/// `None` when it does.
type CallsCheck = Box<dyn Fn() -> Option<String> + Send + Sync>;

impl std::fmt::Debug for Readiness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Readiness")
            .field("sip", &self.sip_ready())
            .field("calls", &self.calls_trouble())
            .finish()
    }
}

impl Readiness {
    pub fn new() -> Readiness {
        Readiness::default()
    }

    /// Marks the SIP transports as bound and served (`true`) or not.
    pub fn set_sip_ready(&self, ready: bool) {
        self.sip.store(ready, Ordering::Release);
    }

    pub fn sip_ready(&self) -> bool {
        self.sip.load(Ordering::Acquire)
    }

    /// Installs the check of whether the node takes new calls (once; later calls are ignored).
    pub fn set_calls_check(&self, check: impl Fn() -> Option<String> + Send + Sync + 'static) {
        let _ = self.calls.set(Box::new(check));
    }

    /// Why the node takes no new calls now, if it does not.
    pub fn calls_trouble(&self) -> Option<String> {
        self.calls.get().and_then(|check| check())
    }
}

/// `/healthz`: the process is up.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[schema(example = json!({"status": "ok"}))]
pub struct Health {
    /// Always `ok`.
    pub status: String,
}

/// `/readyz`: whether this node should receive traffic, and (to the operator) why not.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[schema(example = json!({"status": "not_ready", "checks": [{"name": "database", "ok": true}, {"name": "sip", "ok": false, "detail": "the SIP listeners are not bound"}]}))]
pub struct Readyz {
    /// `ready` or `not_ready`.
    pub status: String,
    /// Each dependency checked; only for a caller presenting the operator key.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub checks: Vec<ReadyCheck>,
}

/// One readiness check.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[schema(example = json!({"name": "database", "ok": true}))]
pub struct ReadyCheck {
    /// `database`, `sip` or `calls` (the node takes new calls: not draining, its session
    /// store keeping up).
    pub name: String,
    pub ok: bool,
    /// Why the check failed; empty when it passed.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub detail: String,
}

/// Liveness probe.
#[utoipa::path(
    get,
    path = "/healthz",
    operation_id = "getHealth",
    tag = "operations",
    summary = "Liveness: the process answers",
    description = "Always 200 while the HTTP server runs. Needs no key.",
    security(()),
    responses((status = 200, description = "The process is alive", body = Health))
)]
pub async fn healthz() -> Json<Health> {
    Json(Health {
        status: "ok".into(),
    })
}

/// Readiness probe.
#[utoipa::path(
    get,
    path = "/readyz",
    operation_id = "getReadiness",
    tag = "operations",
    summary = "Readiness: database reachable and SIP transports bound",
    description = "200 when the database answers a trivial query within 2 seconds, the SIP \
                   transports are bound and served, and the node takes new calls (it is not \
                   draining for a stop and its session store keeps up); 503 otherwise. Needs \
                   no key; with the operator key the answer also lists the checks and why one \
                   failed.",
    security(()),
    responses(
        (status = 200, description = "Ready for traffic", body = Readyz),
        (status = 503, description = "Not ready; to the operator, `checks` says which dependency failed", body = Readyz)
    )
)]
pub async fn readyz(State(state): State<ApiState>, headers: HeaderMap) -> Response {
    let database = match tokio::time::timeout(DB_PROBE_TIMEOUT, state.inner.store.ping()).await {
        Ok(Ok(())) => ReadyCheck {
            name: "database".into(),
            ok: true,
            detail: String::new(),
        },
        Ok(Err(e)) => ReadyCheck {
            name: "database".into(),
            ok: false,
            detail: e.to_string(),
        },
        Err(_) => ReadyCheck {
            name: "database".into(),
            ok: false,
            detail: format!("no answer within {} ms", DB_PROBE_TIMEOUT.as_millis()),
        },
    };
    let sip_ready = state.inner.readiness.sip_ready();
    let sip = ReadyCheck {
        name: "sip".into(),
        ok: sip_ready,
        detail: if sip_ready {
            String::new()
        } else {
            "the SIP transports are not bound or the relay core has stopped".into()
        },
    };
    let trouble = state.inner.readiness.calls_trouble();
    let calls = ReadyCheck {
        name: "calls".into(),
        ok: trouble.is_none(),
        detail: trouble.unwrap_or_default(),
    };
    let ready = database.ok && sip.ok && calls.ok;
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let operator =
        super::auth::bearer(&headers).is_some_and(|k| super::auth::is_operator_key(&state, k));
    let body = Readyz {
        status: if ready { "ready" } else { "not_ready" }.into(),
        checks: if operator {
            vec![database, sip, calls]
        } else {
            Vec::new()
        },
    };
    (status, Json(body)).into_response()
}

/// Prometheus scrape endpoint.
#[utoipa::path(
    get,
    path = "/metrics",
    operation_id = "getMetrics",
    tag = "operations",
    summary = "Prometheus metrics",
    description = "OpenMetrics text (also valid Prometheus text): SIP requests by method, \
                   responses by status, active sessions, transactions in flight, \
                   authentication failures, HTTP requests and latency by route and status. \
                   Needs no key.",
    security(()),
    responses((
        status = 200,
        description = "The metrics exposition",
        body = String,
        content_type = "text/plain"
    ))
)]
pub async fn metrics(State(state): State<ApiState>, headers: HeaderMap) -> Response {
    let openmetrics = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("application/openmetrics-text"));
    let content_type = if openmetrics {
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    } else {
        "text/plain; version=0.0.4; charset=utf-8"
    };
    (
        [(header::CONTENT_TYPE, HeaderValue::from_static(content_type))],
        state.inner.metrics.render(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{ApiParts, ApiSettings, Metrics, RateLimit};
    use crate::clock::SystemClock;
    use crate::store::Store;

    #[tokio::test]
    async fn readyz_is_503_until_the_sip_side_is_up() {
        let readiness = Readiness::new();
        let state = ApiState::new(ApiParts {
            store: Store::connect("sqlite::memory:").await.unwrap(),
            clock: std::sync::Arc::new(SystemClock),
            metrics: Metrics::new(),
            readiness: readiness.clone(),
            tokens: None,
            settings: ApiSettings {
                operator_key: Some(crate::config::Secret::new("operator-key-0123456789")),
                default_realm: "portal.com".into(),
                default_domain: "portal.com".into(),
                rate_limit: RateLimit {
                    per_second: 0.0,
                    burst: 1,
                },
                key_grace_ms: 0,
                secret_grace_ms: 0,
            },
        });
        let mut operator = HeaderMap::new();
        operator.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer operator-key-0123456789"),
        );
        let report = |resp: Response| async move {
            let body = axum::body::to_bytes(resp.into_body(), 4096).await.unwrap();
            serde_json::from_slice::<Readyz>(&body).unwrap()
        };
        let down = readyz(State(state.clone()), operator.clone()).await;
        assert_eq!(down.status(), StatusCode::SERVICE_UNAVAILABLE);
        let full = report(down).await;
        assert_eq!(full.status, "not_ready");
        assert!(full.checks.iter().any(|c| c.name == "sip" && !c.ok));
        assert!(full.checks.iter().any(|c| c.name == "database" && c.ok));

        // Anonymous callers learn ready or not, nothing more.
        let anonymous = readyz(State(state.clone()), HeaderMap::new()).await;
        assert_eq!(anonymous.status(), StatusCode::SERVICE_UNAVAILABLE);
        let brief = report(anonymous).await;
        assert_eq!(brief.status, "not_ready");
        assert!(brief.checks.is_empty());

        readiness.set_sip_ready(true);
        assert_eq!(
            readyz(State(state), HeaderMap::new()).await.status(),
            StatusCode::OK
        );
    }
}
