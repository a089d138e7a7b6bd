//! Prometheus metrics and the `/metrics`, `/healthz`, `/readyz` server.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProviderCallLabels {
    pub provider: &'static str,
    pub operation: &'static str,
    pub outcome: &'static str,
}

pub struct Metrics {
    pub reconciles: Family<OutcomeLabels, Counter>,
    pub reconcile_duration: Histogram,
    pub provider_calls: Family<ProviderCallLabels, Counter>,
    pub provider_call_duration: Family<ProviderCallLabels, Histogram>,
    pub status_patches: Counter,
    pub leader: Gauge,
    registry: Registry,
    ready: AtomicBool,
}

impl Metrics {
    /// The controller's metrics, plus those the provider keeps.
    pub fn new(provider: &dyn ferrolb_provider_api::Provider) -> Self {
        let mut registry = Registry::with_prefix("ferrolb");
        provider.register_metrics(&mut registry);
        let reconciles = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "reconciles",
            "Service reconciles, by outcome (success or the error class)",
            reconciles.clone(),
        );
        let reconcile_duration = Histogram::new(exponential_buckets(0.001, 2.0, 16));
        registry.register(
            "reconcile_duration_seconds",
            "Time spent in one Service reconcile",
            reconcile_duration.clone(),
        );
        let provider_calls = Family::<ProviderCallLabels, Counter>::default();
        registry.register(
            "provider_calls",
            "Provider operations (ensure, delete, restore), by outcome",
            provider_calls.clone(),
        );
        let provider_call_duration =
            Family::<ProviderCallLabels, Histogram>::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.0005, 2.0, 18))
            });
        registry.register(
            "provider_call_duration_seconds",
            "Time spent in provider operations",
            provider_call_duration.clone(),
        );
        let status_patches = Counter::default();
        registry.register(
            "status_patches",
            "Service status and annotation patches written",
            status_patches.clone(),
        );
        let leader = Gauge::default();
        registry.register(
            "leader",
            "1 while this replica holds the leader Lease",
            leader.clone(),
        );
        Self {
            reconciles,
            reconcile_duration,
            provider_calls,
            provider_call_duration,
            status_patches,
            leader,
            registry,
            ready: AtomicBool::new(false),
        }
    }

    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }

    pub fn record_provider_call(
        &self,
        provider: &'static str,
        operation: &'static str,
        outcome: &'static str,
        took: Duration,
    ) {
        let labels = ProviderCallLabels {
            provider,
            operation,
            outcome,
        };
        self.provider_calls.get_or_create(&labels).inc();
        self.provider_call_duration
            .get_or_create(&labels)
            .observe(took.as_secs_f64());
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// What the HTTP server exposes: the controller's metrics or the speaker's.
pub trait Exposition: Send + Sync + 'static {
    /// The metrics in the OpenMetrics text format.
    fn encode(&self) -> String;
    /// Whether `/readyz` says ready.
    fn is_ready(&self) -> bool;
}

impl Exposition for Metrics {
    fn encode(&self) -> String {
        Metrics::encode(self)
    }
    fn is_ready(&self) -> bool {
        Metrics::is_ready(self)
    }
}

/// Serves the endpoints until the process ends.
pub async fn serve<E: Exposition>(
    listener: tokio::net::TcpListener,
    exposition: Arc<E>,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/metrics", get(render::<E>))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz::<E>))
        .with_state(exposition);
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "serving /metrics, /healthz and /readyz");
    }
    axum::serve(listener, app).await
}

async fn render<E: Exposition>(State(m): State<Arc<E>>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        m.encode(),
    )
}

async fn readyz<E: Exposition>(State(m): State<Arc<E>>) -> impl IntoResponse {
    if m.is_ready() {
        (StatusCode::OK, "ok")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready")
    }
}
