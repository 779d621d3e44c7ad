//! Service endpoints: what the service is (`/`), its health, its metrics.

use std::collections::BTreeMap;
use std::time::Duration;

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

/// What this service is and where to look next.
#[utoipa::path(
    get, path = "/", tag = "service", operation_id = "get_service_info",
    responses((status = 200, description = "service name, version and links", body = ServiceInfo)),
    security((), ("bearer" = [])),
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
        (status = 200, description = "healthy, or degraded (a non-essential dependency fails)", body = HealthResponse),
        (status = 503, description = "unhealthy: the database is unreachable", body = HealthResponse),
    ),
)]
pub async fn get_health(app: &App) -> Result<HttpResponse> {
    let database = match tokio::time::timeout(
        DATABASE_PROBE_TIMEOUT,
        app.orchestrator().repository().ping(),
    )
    .await
    {
        Ok(Ok(())) => ok_check(),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "database health check failed");
            error_check("database unreachable")
        }
        Err(_) => error_check("database did not answer in time"),
    };
    let healthy = database.status == "ok";
    let checks = BTreeMap::from([("database".to_owned(), database)]);
    let (status, code) = if healthy {
        (HealthStatus::Healthy, StatusCode::OK)
    } else {
        (HealthStatus::Unhealthy, StatusCode::SERVICE_UNAVAILABLE)
    };
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
    responses((status = 200, description = "Prometheus text exposition format", content_type = "text/plain")),
)]
pub async fn get_metrics(app: &App) -> Result<HttpResponse> {
    // Workflows by state is read at scrape time; if storage fails, the rest still renders.
    let counts = app.orchestrator().summary().await.ok();
    let text = app.metrics().render(counts.as_ref());
    Ok(bytes_response(
        StatusCode::OK,
        "text/plain; version=0.0.4; charset=utf-8",
        Bytes::from(text),
    ))
}
