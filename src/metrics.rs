//! Prometheus metrics: the [`Metrics`] handle every part of the relay counts into, and the
//! HTTP middleware that times every request. Served at `/metrics`.
//!
//! One [`Metrics`] per relay (not a process-global registry, so several relays in one test
//! process keep separate counts). Cloning is cheap (one `Arc`). The SIP-side methods are meant
//! for the relay core's hot path and take no lock: each label value has its counter resolved
//! once (a fixed table for methods; a `OnceLock` per status code, filled on first use), and
//! counting is one atomic add.
//!
//! | name | type | labels | counted by |
//! | --- | --- | --- | --- |
//! | `tollgate_sip_requests_total` | counter | `method` (INVITE, ACK, BYE, CANCEL, OPTIONS, REGISTER, INFO, UPDATE, REFER, PRACK, SUBSCRIBE, NOTIFY, MESSAGE, PUBLISH, other) | [`Metrics::sip_request`] |
//! | `tollgate_sip_responses_total` | counter | `status` (100–699) | [`Metrics::sip_response`] |
//! | `tollgate_sip_responses_dropped_total` | counter | `reason` (foreign_via, unknown_branch, wrong_source) | [`Metrics::sip_response_dropped`] |
//! | `tollgate_sessions_active` | gauge | | [`Metrics::session_started`] / [`Metrics::session_ended`] |
//! | `tollgate_transactions_in_flight` | gauge | | [`Metrics::transaction_started`] / [`Metrics::transaction_ended`] |
//! | `tollgate_auth_failures_total` | counter | `protocol` (sip, http) | [`Metrics::sip_auth_failure`]; the API counts its own |
//! | `tollgate_http_requests_total` | counter (not `/healthz`, `/readyz`, `/metrics`) | `method` (GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS, TRACE, CONNECT, other), `route` (the matched route template, e.g. `/v1/sessions/{id}`, or `unmatched`), `status` | the HTTP middleware |
//! | `tollgate_http_request_duration_seconds` | histogram | `method`, `route` | the HTTP middleware |
//!
//! The exposition is OpenMetrics text, which Prometheus also reads as its classic text format;
//! `/metrics` names the type the client asked for in `Accept`.

use std::fmt;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// The SIP methods counted by name; anything else is `other`.
pub const SIP_METHODS: [&str; 15] = [
    "INVITE",
    "ACK",
    "BYE",
    "CANCEL",
    "OPTIONS",
    "REGISTER",
    "INFO",
    "UPDATE",
    "REFER",
    "PRACK",
    "SUBSCRIBE",
    "NOTIFY",
    "MESSAGE",
    "PUBLISH",
    "other",
];

/// Why a response was dropped instead of relayed (the transaction layer's reasons).
pub const DROP_REASONS: [&str; 3] = ["foreign_via", "unknown_branch", "wrong_source"];

const FIRST_STATUS: u16 = 100;
/// Status codes exposed at zero before they first happen.
const COMMON_STATUSES: [u16; 12] = [100, 180, 200, 401, 403, 404, 407, 408, 480, 486, 487, 503];
const LAST_STATUS: u16 = 699;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MethodLabel {
    method: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabel {
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProtocolLabel {
    protocol: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HttpLabels {
    method: String,
    route: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HttpRouteLabels {
    method: String,
    route: String,
}

fn latency_histogram() -> Histogram {
    // 1 ms … ~16 s.
    Histogram::new(exponential_buckets(0.001, 2.0, 15))
}

/// The relay's metrics. See the module documentation for the names.
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

struct Inner {
    registry: Registry,
    sip_requests: Vec<Counter>,
    sip_response_family: Family<StatusLabel, Counter>,
    sip_responses: Vec<OnceLock<Counter>>,
    sip_dropped: Vec<Counter>,
    sessions_active: Gauge,
    transactions_in_flight: Gauge,
    sip_auth_failures: Counter,
    http_auth_failures: Counter,
    http_requests: Family<HttpLabels, Counter>,
    http_latency: Family<HttpRouteLabels, Histogram, fn() -> Histogram>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    /// A fresh set of metrics, every counter at zero.
    pub fn new() -> Metrics {
        let mut registry = Registry::default();

        let sip_request_family = Family::<MethodLabel, Counter>::default();
        let sip_requests = SIP_METHODS
            .iter()
            .map(|&method| {
                sip_request_family
                    .get_or_create(&MethodLabel { method })
                    .clone()
            })
            .collect();
        registry.register(
            "tollgate_sip_requests",
            "SIP requests received, by method",
            sip_request_family,
        );

        let sip_response_family = Family::<StatusLabel, Counter>::default();
        registry.register(
            "tollgate_sip_responses",
            "SIP responses sent or relayed, by status code",
            sip_response_family.clone(),
        );
        let sip_responses: Vec<OnceLock<Counter>> = (FIRST_STATUS..=LAST_STATUS)
            .map(|_| OnceLock::new())
            .collect();
        // The common answers are exposed from the start, at zero.
        for status in COMMON_STATUSES {
            let counter = sip_response_family
                .get_or_create(&StatusLabel { status })
                .clone();
            let _ = sip_responses[usize::from(status - FIRST_STATUS)].set(counter);
        }

        let dropped_family = Family::<ReasonLabel, Counter>::default();
        let sip_dropped = DROP_REASONS
            .iter()
            .map(|&reason| {
                dropped_family
                    .get_or_create(&ReasonLabel { reason })
                    .clone()
            })
            .collect();
        registry.register(
            "tollgate_sip_responses_dropped",
            "SIP responses dropped instead of relayed: not ours, unknown branch, or from an address the request was not sent to",
            dropped_family,
        );

        let sessions_active = Gauge::default();
        registry.register(
            "tollgate_sessions_active",
            "Sessions confirmed and not yet ended",
            sessions_active.clone(),
        );
        let transactions_in_flight = Gauge::default();
        registry.register(
            "tollgate_transactions_in_flight",
            "SIP transactions not yet terminated",
            transactions_in_flight.clone(),
        );

        let auth_failures = Family::<ProtocolLabel, Counter>::default();
        let sip_auth_failures = auth_failures
            .get_or_create(&ProtocolLabel { protocol: "sip" })
            .clone();
        let http_auth_failures = auth_failures
            .get_or_create(&ProtocolLabel { protocol: "http" })
            .clone();
        registry.register(
            "tollgate_auth_failures",
            "Failed authentications: wrong SIP digest credentials, unknown REST API keys",
            auth_failures,
        );

        let http_requests = Family::<HttpLabels, Counter>::default();
        registry.register(
            "tollgate_http_requests",
            "HTTP requests answered, by method, route and status",
            http_requests.clone(),
        );
        let http_latency: Family<HttpRouteLabels, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(latency_histogram);
        registry.register(
            "tollgate_http_request_duration_seconds",
            "HTTP request latency, by method and route",
            http_latency.clone(),
        );

        Metrics {
            inner: Arc::new(Inner {
                registry,
                sip_requests,
                sip_response_family,
                sip_responses,
                sip_dropped,
                sessions_active,
                transactions_in_flight,
                sip_auth_failures,
                http_auth_failures,
                http_requests,
                http_latency,
            }),
        }
    }

    /// Counts a SIP request received, by method (`INVITE`, …; unknown methods as `other`).
    pub fn sip_request(&self, method: &str) {
        let index = SIP_METHODS[..SIP_METHODS.len() - 1]
            .iter()
            .position(|m| m.eq_ignore_ascii_case(method))
            .unwrap_or(SIP_METHODS.len() - 1);
        self.inner.sip_requests[index].inc();
    }

    /// Counts a SIP response sent or relayed. Codes outside 100–699 are ignored.
    pub fn sip_response(&self, status: u16) {
        if !(FIRST_STATUS..=LAST_STATUS).contains(&status) {
            return;
        }
        let slot = &self.inner.sip_responses[usize::from(status - FIRST_STATUS)];
        slot.get_or_init(|| {
            self.inner
                .sip_response_family
                .get_or_create(&StatusLabel { status })
                .clone()
        })
        .inc();
    }

    /// Counts a response dropped for `reason`, one of [`DROP_REASONS`] (anything else is
    /// not counted).
    pub fn sip_response_dropped(&self, reason: &str) {
        if let Some(i) = DROP_REASONS.iter().position(|r| *r == reason) {
            self.inner.sip_dropped[i].inc();
        }
    }

    /// A session was confirmed (its clock started).
    pub fn session_started(&self) {
        self.inner.sessions_active.inc();
    }

    /// A confirmed session ended.
    pub fn session_ended(&self) {
        self.inner.sessions_active.dec();
    }

    /// Sets the active-session gauge outright (e.g. after counting the open sessions at start).
    pub fn set_sessions_active(&self, n: i64) {
        self.inner.sessions_active.set(n);
    }

    /// A SIP transaction was created.
    pub fn transaction_started(&self) {
        self.inner.transactions_in_flight.inc();
    }

    /// A SIP transaction terminated.
    pub fn transaction_ended(&self) {
        self.inner.transactions_in_flight.dec();
    }

    /// A SIP request carried wrong digest credentials (unknown user or bad response).
    pub fn sip_auth_failure(&self) {
        self.inner.sip_auth_failures.inc();
    }

    /// A REST request presented an unknown API key.
    pub fn http_auth_failure(&self) {
        self.inner.http_auth_failures.inc();
    }

    /// Counts and times one HTTP request. The method is one of [`HTTP_METHODS`] or `other`:
    /// a client picks the method, so it must not pick the label set.
    pub fn http_request(&self, method: &str, route: &str, status: u16, seconds: f64) {
        let method = HTTP_METHODS
            .iter()
            .find(|m| m.eq_ignore_ascii_case(method))
            .copied()
            .unwrap_or("other");
        self.inner
            .http_requests
            .get_or_create(&HttpLabels {
                method: method.to_owned(),
                route: route.to_owned(),
                status,
            })
            .inc();
        self.inner
            .http_latency
            .get_or_create(&HttpRouteLabels {
                method: method.to_owned(),
                route: route.to_owned(),
            })
            .observe(seconds);
    }

    /// The exposition: OpenMetrics text (readable as Prometheus text, too).
    pub fn render(&self) -> String {
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.inner.registry) {
            tracing::error!(error = %e, "cannot encode the metrics");
        }
        out
    }
}

/// The HTTP methods counted by name; anything else is `other`.
pub const HTTP_METHODS: [&str; 9] = [
    "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT",
];

/// Routes the HTTP metrics leave out: the probes and the scrape itself, which orchestrators
/// and Prometheus call every few seconds (they would drown the API's own traffic, and a stranger
/// probing them could still add series).
const UNTRACKED_ROUTES: [&str; 3] = ["/healthz", "/readyz", "/metrics"];

/// HTTP middleware: counts and times every API request by method, matched route and status.
pub(super) async fn track_http(
    State(metrics): State<Metrics>,
    req: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let method = req.method().as_str().to_owned();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let response = next.run(req).await;
    if UNTRACKED_ROUTES.contains(&route.as_str()) {
        return response;
    }
    metrics.http_request(
        &method,
        &route,
        response.status().as_u16(),
        started.elapsed().as_secs_f64(),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_names_are_exposed() {
        let m = Metrics::new();
        m.sip_request("invite");
        m.sip_request("FOO");
        m.sip_response(200);
        m.sip_response(200);
        m.sip_response(1000);
        m.session_started();
        m.transaction_started();
        m.transaction_started();
        m.transaction_ended();
        m.sip_auth_failure();
        m.http_request("GET", "/v1/sessions/{id}", 404, 0.002);
        m.http_request("RANDOM1", "/healthz", 405, 0.001);
        m.http_request("random2", "/healthz", 405, 0.001);
        let text = m.render();
        assert!(
            text.contains("tollgate_http_requests_total{method=\"other\",route=\"/healthz\",status=\"405\"} 2"),
            "{text}"
        );
        assert!(!text.to_ascii_lowercase().contains("random"));
        for expected in [
            "tollgate_sip_requests_total{method=\"INVITE\"} 1",
            "tollgate_sip_requests_total{method=\"other\"} 1",
            "tollgate_sip_responses_total{status=\"200\"} 2",
            "tollgate_sessions_active 1",
            "tollgate_transactions_in_flight 1",
            "tollgate_auth_failures_total{protocol=\"sip\"} 1",
            "tollgate_http_requests_total{method=\"GET\",route=\"/v1/sessions/{id}\",status=\"404\"} 1",
            "tollgate_http_request_duration_seconds_count{method=\"GET\",route=\"/v1/sessions/{id}\"} 1",
        ] {
            assert!(text.contains(expected), "{expected} missing from\n{text}");
        }
        assert!(!text.contains("status=\"1000\""));
    }
}
