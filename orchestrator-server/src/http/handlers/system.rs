//! Service endpoints: what the service is (`/`), its health, its metrics.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::Full;
use orchestrator_core::api::{
    HealthCheck, HealthResponse, HealthStatus, SERVICE_NAME, ServiceInfo, paths,
};

use crate::http::App;
use crate::http::body::{bytes_response, json_response};
use crate::http::error::Result;

type HttpResponse = Response<Full<Bytes>>;

/// How long `/health` waits for the database.
const DATABASE_PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long `/health` waits for the Agent Hub.
const HUB_PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long an Agent Hub probe's result is reused.
const HUB_PROBE_TTL: Duration = Duration::from_secs(5);

/// The last Agent Hub probe and when it was made. One probe runs at a time; callers meanwhile
/// wait for it rather than start their own.
#[derive(Debug, Default)]
pub struct HubProbe(tokio::sync::Mutex<Option<(Instant, HealthCheck)>>);

impl HubProbe {
    async fn check(&self, app: &App) -> HealthCheck {
        let mut last = self.0.lock().await;
        if let Some((at, check)) = last.as_ref()
            && at.elapsed() < HUB_PROBE_TTL
        {
            return check.clone();
        }
        let check = match tokio::time::timeout(HUB_PROBE_TIMEOUT, app.orchestrator().hub().health())
            .await
        {
            Ok(Ok(health)) if health.status == "healthy" => ok_check(),
            Ok(Ok(health)) => error_check(&format!("agent hub reports '{}'", health.status)),
            Ok(Err(e)) => error_check(&e.to_string()),
            Err(_) => error_check("agent hub did not answer in time"),
        };
        *last = Some((Instant::now(), check.clone()));
        check
    }
}

/// How long a storage probe's result is reused: `/health` is public, and each probe writes.
const DATABASE_PROBE_TTL: Duration = Duration::from_secs(1);

/// The last storage probe — a read and a write through the same path as every request's —
/// and when it was made. One probe runs at a time; callers meanwhile wait for it.
#[derive(Debug, Default)]
pub struct DatabaseProbe(tokio::sync::Mutex<Option<(Instant, HealthCheck)>>);

impl DatabaseProbe {
    async fn check(&self, app: &App) -> HealthCheck {
        let mut last = self.0.lock().await;
        if let Some((at, check)) = last.as_ref()
            && at.elapsed() < DATABASE_PROBE_TTL
        {
            return check.clone();
        }
        let probe = app.orchestrator().repository().ping();
        let check = match tokio::time::timeout(DATABASE_PROBE_TIMEOUT, probe).await {
            Ok(Ok(())) => ok_check(),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "database health check failed");
                error_check("the database cannot be read or written")
            }
            Err(_) => error_check("the database did not answer in time"),
        };
        *last = Some((Instant::now(), check.clone()));
        check
    }
}

/// What this service is and where to look next.
#[utoipa::path(
    get, path = "/", tag = "service", operation_id = "get_service_info",
    responses((status = 200, description = "service name, version and links", body = ServiceInfo,
               example = json!(crate::http::openapi::examples::service_info()))),
)]
pub async fn get_service_info() -> Result<HttpResponse> {
    Ok(json_response(
        StatusCode::OK,
        &ServiceInfo {
            service: SERVICE_NAME.to_owned(),
            version: crate::VERSION.to_owned(),
            docs: paths::DOCS.to_owned(),
            redoc: paths::REDOC.to_owned(),
            openapi: paths::OPENAPI.to_owned(),
            health: paths::HEALTH.to_owned(),
        },
    ))
}

/// Health of the service and what it depends on.
#[utoipa::path(
    get, path = "/health", tag = "service", operation_id = "get_health",
    responses(
        (status = 200, description = "healthy, or degraded (the Agent Hub is unreachable; probed at most every 5 s)", body = HealthResponse,
         example = json!(crate::http::openapi::examples::health_ok())),
        (status = 503, description = "unhealthy: the database is unreachable", body = HealthResponse,
         example = json!(crate::http::openapi::examples::health_down())),
    ),
)]
pub async fn get_health(app: &App) -> Result<HttpResponse> {
    let database = app.database_probe().check(app).await;
    let agent_hub = app.hub_probe().check(app).await;
    let (status, code) = match (database.status == "ok", agent_hub.status == "ok") {
        (false, _) => (HealthStatus::Unhealthy, StatusCode::SERVICE_UNAVAILABLE),
        (true, false) => (HealthStatus::Degraded, StatusCode::OK),
        (true, true) => (HealthStatus::Healthy, StatusCode::OK),
    };
    let checks = BTreeMap::from([
        ("database".to_owned(), database),
        ("agent_hub".to_owned(), agent_hub),
    ]);
    Ok(json_response(
        code,
        &HealthResponse {
            status,
            version: crate::VERSION.to_owned(),
            service: SERVICE_NAME.to_owned(),
            uptime_seconds: app.uptime().as_secs(),
            checks,
        },
    ))
}

fn ok_check() -> HealthCheck {
    HealthCheck {
        status: "ok".to_owned(),
        message: None,
    }
}

fn error_check(message: &str) -> HealthCheck {
    HealthCheck {
        status: "error".to_owned(),
        message: Some(message.to_owned()),
    }
}

/// Prometheus metrics.
#[utoipa::path(
    get, path = "/metrics", tag = "service", operation_id = "get_metrics",
    responses((status = 200, description = "OpenMetrics text (Prometheus reads it)", body = String, content_type = "application/openmetrics-text",
               example = "# HELP orchestrator_workflows Workflows stored, by state (read when scraped).\n# TYPE orchestrator_workflows gauge\norchestrator_workflows{state=\"PHASE_1\"} 3\n# EOF\n")),
)]
pub async fn get_metrics(app: &App) -> Result<HttpResponse> {
    // Workflows by state is read at scrape time; if storage fails, the rest still renders.
    let counts = app.orchestrator().summary().await.ok();
    let text = app.metrics().render(counts.as_ref());
    Ok(bytes_response(
        StatusCode::OK,
        crate::metrics::CONTENT_TYPE,
        Bytes::from(text),
    ))
}
