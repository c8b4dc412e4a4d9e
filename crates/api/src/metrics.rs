//! Prometheus metrics (`GET /metrics`, OpenMetrics text): what the API,
//! the worker service and the BMC poller count, plus whatever the server
//! registered beside them (the UDP services' counters, the store's
//! latency), and the workflows by state, counted by the store at each
//! scrape.
//!
//! Every label takes its values from a bounded set (route templates,
//! known methods, status codes, outcome names), never from what a client
//! sends, so no request can grow the series without bound.

use std::time::Instant;

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{Method, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use bellows_model::workflow::State as WorkflowState;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::{encode_eof, encode_registry};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::{ApiError, AppState};

/// The OpenMetrics content type Prometheus asks for.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// One HTTP request's labels.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HttpLabels {
    /// `api`, `boot` or `metadata`.
    listener: &'static str,
    /// The route template (`/api/v1/hardware/{id}`), or `unmatched`.
    route: String,
    method: &'static str,
    status: u16,
}

/// How an action ended.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ActionLabels {
    outcome: &'static str,
}

/// What a BMC power poll found.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PollLabels {
    result: &'static str,
}

/// One workflow state.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: &'static str,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// The instruments the API crate records into; clones share them.
#[derive(Clone, Debug)]
pub struct ApiMetrics {
    http_requests: Family<HttpLabels, Counter>,
    http_seconds: HistogramFamily<HttpLabels>,
    action_seconds: HistogramFamily<ActionLabels>,
    bmc_polls: Family<PollLabels, Counter>,
}

fn action_histogram() -> Histogram {
    // 0.25 s to ~2.3 h: a built-in action to an image written to disk.
    Histogram::new(exponential_buckets(0.25, 2.0, 16))
}

fn http_histogram() -> Histogram {
    // 0.5 ms to ~16 s (a kernel or initramfs download).
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

impl Default for ApiMetrics {
    fn default() -> Self {
        ApiMetrics {
            http_requests: Family::default(),
            http_seconds: Family::new_with_constructor(http_histogram),
            action_seconds: Family::new_with_constructor(action_histogram),
            bmc_polls: Family::default(),
        }
    }
}

impl ApiMetrics {
    /// Adds these instruments to `registry` under their names.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "bellows_http_requests",
            "HTTP requests answered, by listener, route template, method and status",
            self.http_requests.clone(),
        );
        registry.register(
            "bellows_http_request_seconds",
            "Time to answer an HTTP request (to the response head; gRPC streams and file bodies continue after it)",
            self.http_seconds.clone(),
        );
        registry.register(
            "bellows_action_seconds",
            "Duration of each action a worker reported finished, by outcome",
            self.action_seconds.clone(),
        );
        registry.register(
            "bellows_bmc_polls",
            "BMC power polls, by what they found (on, off, unknown, error)",
            self.bmc_polls.clone(),
        );
        // Every known outcome shows from the start, at zero.
        for outcome in ["success", "failed", "timeout"] {
            let _ = self.action_seconds.get_or_create(&ActionLabels { outcome });
        }
        for result in ["on", "off", "unknown", "error"] {
            let _ = self.bmc_polls.get_or_create(&PollLabels { result });
        }
    }

    /// Counts every request `router` answers, labelled with `listener`.
    pub fn count_requests(&self, router: Router, listener: &'static str) -> Router {
        router.layer(middleware::from_fn_with_state(
            (self.clone(), listener),
            count_request,
        ))
    }

    /// Records an action that ended with `outcome` after `seconds`.
    pub fn action_finished(&self, outcome: &'static str, seconds: f64) {
        self.action_seconds
            .get_or_create(&ActionLabels { outcome })
            .observe(seconds);
    }

    /// Records one BMC power poll's result (`on`, `off`, `unknown`,
    /// `error`).
    pub fn bmc_polled(&self, result: &'static str) {
        self.bmc_polls.get_or_create(&PollLabels { result }).inc();
    }
}

/// A method's label: the standard ones by name, anything else `other`.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

async fn count_request(
    State((metrics, listener)): State<(ApiMetrics, &'static str)>,
    request: Request,
    next: Next,
) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    let method = method_label(request.method());
    let started = Instant::now();
    let response = next.run(request).await;
    let labels = HttpLabels {
        listener,
        route,
        method,
        status: response.status().as_u16(),
    };
    metrics
        .http_seconds
        .get_or_create(&labels)
        .observe(started.elapsed().as_secs_f64());
    metrics.http_requests.get_or_create(&labels).inc();
    response
}

/// The registry `/metrics` encodes: the API's instruments and whatever the
/// server added to it before sharing it.
#[derive(Debug)]
pub struct Metrics {
    /// The API's own instruments (handles into `registry`).
    pub api: ApiMetrics,
    registry: Registry,
}

impl Default for Metrics {
    fn default() -> Self {
        let api = ApiMetrics::default();
        let mut registry = Registry::default();
        api.register(&mut registry);
        Metrics { api, registry }
    }
}

impl Metrics {
    /// `registry` must already hold `api` (see [`ApiMetrics::register`]).
    pub fn new(api: ApiMetrics, registry: Registry) -> Metrics {
        Metrics { api, registry }
    }

    /// The exposition text: every registered metric, then the workflows
    /// by state from `counts` (zero for states without any).
    pub fn encode(&self, counts: &[(WorkflowState, u64)]) -> Result<String, std::fmt::Error> {
        let mut out = String::with_capacity(16 * 1024);
        encode_registry(&mut out, &self.registry)?;
        let by_state = Family::<StateLabels, Gauge>::default();
        for state in WorkflowState::ALL {
            let n = counts
                .iter()
                .filter(|(s, _)| *s == state)
                .map(|(_, n)| *n)
                .sum::<u64>();
            by_state
                .get_or_create(&StateLabels {
                    state: state.as_str(),
                })
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
        let mut scrape = Registry::default();
        scrape.register(
            "bellows_workflows",
            "Workflows in the store, by state",
            by_state,
        );
        encode_registry(&mut out, &scrape)?;
        encode_eof(&mut out)?;
        Ok(out)
    }
}

/// `GET /metrics`.
pub(crate) async fn serve(State(state): State<AppState>) -> Result<Response, ApiError> {
    let counts = state.store.count_workflows_by_state().await?;
    let text = state.metrics.encode(&counts).map_err(|_| {
        ApiError::new(
            axum::http::StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "the metrics could not be encoded",
            None,
        )
    })?;
    Ok(([(header::CONTENT_TYPE, CONTENT_TYPE)], text).into_response())
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::routing::get;
    use prometheus_client::encoding::text::encode;
    use tower::ServiceExt;

    use super::*;

    /// The attack: thousands of requests with invented paths and methods,
    /// each hoping to become a series of its own.
    #[tokio::test]
    async fn invented_paths_and_methods_do_not_grow_the_series() {
        let metrics = ApiMetrics::default();
        let router = metrics.count_requests(
            Router::new().route("/things/{id}", get(|| async { "ok" })),
            "api",
        );
        for i in 0..2_000 {
            let method = if i % 2 == 0 {
                "GET".to_string()
            } else {
                format!("INVENTED{i}")
            };
            let uri = if i % 3 == 0 {
                format!("/things/{i}")
            } else {
                format!("/nowhere/{i}")
            };
            let request = axum::http::Request::builder()
                .method(method.as_str())
                .uri(uri)
                .body(Body::empty())
                .unwrap();
            let _ = router.clone().oneshot(request).await.unwrap();
        }
        let mut registry = Registry::default();
        metrics.register(&mut registry);
        let mut text = String::new();
        encode(&mut text, &registry).unwrap();
        let series: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("bellows_http_requests_total"))
            .collect();
        // GET or other × the route or unmatched × its status: at most 4
        // (8 with two statuses each); never one per request.
        assert!(!series.is_empty() && series.len() <= 8, "{series:#?}");
        let total: u64 = series
            .iter()
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum();
        assert_eq!(total, 2_000, "every request counted once");
        assert!(text.contains(r#"route="/things/{id}""#), "{text}");
        assert!(text.contains(r#"route="unmatched""#), "{text}");
        assert!(text.contains(r#"method="other""#), "{text}");
    }

    #[test]
    fn the_workflow_gauge_has_every_state_and_the_text_ends_in_eof() {
        let text = Metrics::default()
            .encode(&[(WorkflowState::Success, 3), (WorkflowState::Running, 1)])
            .unwrap();
        for state in WorkflowState::ALL {
            assert!(
                text.contains(&format!(
                    "bellows_workflows{{state=\"{}\"}}",
                    state.as_str()
                )),
                "{text}"
            );
        }
        assert!(
            text.contains("bellows_workflows{state=\"SUCCESS\"} 3"),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"), "{text}");
        assert_eq!(text.matches("# EOF").count(), 1);
    }
}
