//! Prometheus metrics and health endpoints, served over HTTP by every service.
//!
//! * `/metrics` — Prometheus text format, rendered by `metrics-exporter-prometheus`;
//! * `/healthz` — 200 while the process runs;
//! * `/readyz` — 200 when every readiness check passes, else 503 with the failing checks.

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    sync::{Arc, Mutex, OnceLock, PoisonError},
    time::Duration,
};

use anyhow::Context as _;
use axum::{Router, extract::State, http::StatusCode, routing::get};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// Latency buckets in seconds: 0.5 ms … 60 s.
const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0,
];

/// How often histogram samples are folded into their buckets when nobody scrapes `/metrics`.
pub const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

/// Installs the process-wide Prometheus recorder (once; later calls return the same handle, so
/// several services can run in one test process).
///
/// The recorder keeps every histogram sample until it is folded into the buckets, which
/// rendering `/metrics` does, and so does the upkeep thread started here every
/// [`UPKEEP_INTERVAL`]: without it, a service nobody scrapes grows by ~8 bytes per sample
/// without bound (`install_recorder` starts no upkeep of its own).
pub fn recorder() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)
                .expect("static, non-empty buckets");
            let handle = match builder.install_recorder() {
                Ok(handle) => handle,
                Err(error) => {
                    // Another recorder is already installed: keep a private one for rendering.
                    warn!(%error, "metrics recorder already installed");
                    PrometheusBuilder::new().build_recorder().handle()
                }
            };
            let upkeep = handle.clone();
            let spawned = std::thread::Builder::new()
                .name("metrics-upkeep".into())
                .spawn(move || {
                    loop {
                        std::thread::sleep(UPKEEP_INTERVAL);
                        upkeep.run_upkeep();
                    }
                });
            if let Err(error) = spawned {
                warn!(%error, "cannot start the metrics upkeep thread; samples are folded only when /metrics is scraped");
            }
            handle
        })
        .clone()
}

/// Readiness: named checks, each either passing or failing with a reason.
#[derive(Debug, Clone, Default)]
pub struct Readiness(Arc<Mutex<BTreeMap<&'static str, Result<(), String>>>>);

impl Readiness {
    /// Declares a check, failing until it is first set.
    pub fn declare(&self, name: &'static str, reason: &str) {
        self.lock().insert(name, Err(reason.to_owned()));
    }

    /// Sets a check's state.
    pub fn set(&self, name: &'static str, state: Result<(), String>) {
        let mut checks = self.lock();
        let changed = checks.get(name) != Some(&state);
        if changed {
            match &state {
                Ok(()) => info!(check = name, "ready"),
                Err(reason) => warn!(check = name, reason, "not ready"),
            }
        }
        checks.insert(name, state);
    }

    /// Sets the `kafka` check from "a broker connection is up".
    pub fn set_kafka(&self, up: bool) {
        self.set(
            "kafka",
            if up {
                Ok(())
            } else {
                Err("no broker connection".into())
            },
        );
    }

    /// `Ok` when every check passes, else the failing ones.
    pub fn status(&self) -> Result<(), String> {
        let failing: Vec<String> = self
            .lock()
            .iter()
            .filter_map(|(name, s)| s.as_ref().err().map(|r| format!("{name}: {r}")))
            .collect();
        if failing.is_empty() {
            Ok(())
        } else {
            Err(failing.join("\n"))
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<&'static str, Result<(), String>>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[derive(Clone)]
struct AppState {
    handle: PrometheusHandle,
    readiness: Readiness,
}

/// Binds `addr` and serves the endpoints until `shutdown`. Fails if the address cannot be bound.
pub async fn serve(
    addr: SocketAddr,
    readiness: Readiness,
    shutdown: CancellationToken,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let state = AppState {
        handle: recorder(),
        readiness,
    };
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .with_state(state);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot bind the metrics address {addr}"))?;
    info!(addr = %listener.local_addr()?, "serving /metrics, /healthz, /readyz");
    Ok(tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(async move { shutdown.cancelled().await })
            .await;
        if let Err(error) = served {
            warn!(%error, "metrics server stopped");
        }
    }))
}

async fn metrics(State(state): State<AppState>) -> String {
    state.handle.render()
}

async fn ready(State(state): State<AppState>) -> (StatusCode, String) {
    match state.readiness.status() {
        Ok(()) => (StatusCode::OK, "ready\n".into()),
        Err(reasons) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready\n{reasons}\n"),
        ),
    }
}
