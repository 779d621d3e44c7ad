//! Service endpoints: what the service is (`/`), its health, its metrics.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::Full;
use orchestrator_core::api::{
    HealthCheck, HealthResponse, HealthStatus, SERVICE_NAME, ServiceInfo, paths,
};

use tracing::Instrument;

use crate::http::App;
use crate::http::body::{bytes_response, json_response};
use crate::http::error::Result;
use crate::metrics::StoreReading;

type HttpResponse = Response<Full<Bytes>>;

/// How long `/health` waits for the database.
const DATABASE_PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long `/health` waits for the Agent Hub.
const HUB_PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long an Agent Hub probe's result is reused.
pub const HUB_PROBE_TTL: Duration = Duration::from_secs(5);
/// How long `/metrics` waits for the workflows by state before it renders without them.
const METRICS_READ_TIMEOUT: Duration = Duration::from_secs(2);
/// How long the workflows by state read for `/metrics` are reused: `/metrics` is public, and
/// each read counts the workflow table.
pub const METRICS_READ_TTL: Duration = Duration::from_secs(1);
/// How long a storage probe's result is reused: `/health` is public, and each probe writes.
pub const DATABASE_PROBE_TTL: Duration = Duration::from_secs(1);

/// A dependency's last reading and when it was made, reused for a while so that a public
/// endpoint (`/health`, `/metrics`) cannot make the service hammer what it depends on. One
/// reading is made at a time; callers meanwhile wait for it rather than start their own.
#[derive(Debug)]
pub struct Cached<T> {
    ttl: Duration,
    last: tokio::sync::Mutex<Option<(tokio::time::Instant, T)>>,
}

impl<T: Clone> Cached<T> {
    /// A reading reused for `ttl`.
    pub fn new(ttl: Duration) -> Self {
        Cached {
            ttl,
            last: tokio::sync::Mutex::new(None),
        }
    }

    /// The last reading if it is recent enough, else `probe`'s.
    async fn get(&self, probe: impl std::future::Future<Output = T>) -> T {
        let mut last = self.last.lock().await;
        if let Some((at, check)) = last.as_ref()
            && at.elapsed() < self.ttl
        {
            return check.clone();
        }
        let check = probe.await;
        *last = Some((tokio::time::Instant::now(), check.clone()));
        check
    }
}

/// Asks the Agent Hub for its health; the hub's own words stay in the log.
async fn probe_hub(app: &App) -> HealthCheck {
    match tokio::time::timeout(HUB_PROBE_TIMEOUT, app.orchestrator().hub().health()).await {
        Ok(Ok(health)) if health.status == "healthy" => ok_check(),
        Ok(Ok(health)) => {
            // The hub's own word is the hub's text: logged, not repeated on a public page.
            tracing::warn!(status = %health.status, "the agent hub reports it is not healthy");
            error_check("the agent hub reports that it is not healthy")
        }
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "agent hub health check failed");
            error_check(match e {
                orchestrator_core::HubError::Unavailable(_) => {
                    "the agent hub cannot be reached or did not answer in time"
                }
                _ => "the agent hub answered its health check with an error",
            })
        }
        Err(_) => error_check("the agent hub did not answer in time"),
    }
}

/// Reads and writes the storage through the same path as every request.
async fn probe_database(app: &App) -> HealthCheck {
    let probe = app.orchestrator().repository().ping();
    match tokio::time::timeout(DATABASE_PROBE_TIMEOUT, probe).await {
        Ok(Ok(())) => ok_check(),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "database health check failed");
            error_check("the database cannot be read or written")
        }
        Err(_) => error_check("the database did not answer in time"),
    }
}

/// Workflows by state, gates overdue and the webhook backlog, read at scrape time; if storage
/// fails or is slow, the rest still renders, within a scraper's timeout (the storage's own
/// series say what is wrong).
async fn read_store(app: &App) -> StoreReading {
    // Each read within its own bound, side by side: a backlog too large to count in time
    // leaves the workflow gauges fresh.
    let summary = within("workflows by state", app.orchestrator().summary());
    let backlog = async {
        match app.webhooks() {
            Some(webhooks) => {
                let read = within("the webhook backlog", webhooks.store().backlog(app.now()));
                read.await.map(Some)
            }
            None => Some(None),
        }
    };
    let (summary, backlog) = tokio::join!(summary, backlog);
    StoreReading {
        readable: summary.is_some() && backlog.is_some(),
        summary,
        backlog: backlog.flatten(),
    }
}

/// What `read` found, if it answered within [`METRICS_READ_TIMEOUT`]; logged if not.
async fn within<T, E: std::fmt::Display>(
    what: &str,
    read: impl Future<Output = std::result::Result<T, E>>,
) -> Option<T> {
    match tokio::time::timeout(METRICS_READ_TIMEOUT, read).await {
        Ok(Ok(found)) => Some(found),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "metrics: {what} could not be read");
            None
        }
        Err(_) => {
            tracing::warn!("metrics: {what} was not read in time");
            None
        }
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
            board: paths::BOARD.to_owned(),
            events: paths::EVENTS.to_owned(),
            metrics: paths::METRICS.to_owned(),
        },
    ))
}

/// Health of the service and what it depends on.
#[utoipa::path(
    get, path = "/health", tag = "service", operation_id = "get_health",
    responses(
        (status = 200, description = "healthy, or degraded (the Agent Hub is unreachable; probed at most every 5 s)", body = HealthResponse,
         example = json!(crate::http::openapi::examples::health_ok())),
        (status = 503, description = "unhealthy: the database cannot be read or written (probed at most every second; on SQLite also for 10 s after any write failed in the storage)", body = HealthResponse,
         example = json!(crate::http::openapi::examples::health_down())),
    ),
)]
pub async fn get_health(app: &App) -> Result<HttpResponse> {
    // Both at once, so the answer comes within one probe's bound (2 s) whatever the hub does;
    // and in a task of their own, so a checker that hangs up first (a load balancer's 2 s
    // timeout) still leaves the results cached for the next check instead of each check
    // starting the probes anew and never seeing them end.
    let probes = {
        let app = app.clone();
        tokio::spawn(
            async move {
                tokio::join!(
                    app.database_probe().get(probe_database(&app)),
                    app.hub_probe().get(probe_hub(&app)),
                )
            }
            .in_current_span(),
        )
    };
    let (database, agent_hub) = probes.await.map_err(|e| {
        crate::http::error::ApiError::Internal(format!("a health check failed: {e}"))
    })?;
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
    let reading = app.metrics_read().get(read_store(app)).await;
    let text = app.metrics().render(&reading, app.open_streams());
    Ok(bytes_response(
        StatusCode::OK,
        crate::metrics::CONTENT_TYPE,
        Bytes::from(text),
    ))
}

#[cfg(test)]
mod tests {
    use super::Cached;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn callers_at_once_share_one_reading_until_it_is_too_old() {
        let cached = Arc::new(Cached::new(Duration::from_secs(1)));
        let readings = Arc::new(AtomicUsize::new(0));
        let read = |readings: Arc<AtomicUsize>| async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            readings.fetch_add(1, Ordering::SeqCst)
        };
        let mut callers = tokio::task::JoinSet::new();
        for _ in 0..50 {
            let (cached, readings) = (cached.clone(), readings.clone());
            callers.spawn(async move { cached.get(read(readings)).await });
        }
        while let Some(reading) = callers.join_next().await {
            assert_eq!(reading.unwrap(), 0);
        }
        assert_eq!(
            readings.load(Ordering::SeqCst),
            1,
            "one reading for fifty callers"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(cached.get(read(readings.clone())).await, 0, "still fresh");
        tokio::time::sleep(Duration::from_millis(600)).await;
        assert_eq!(
            cached.get(read(readings)).await,
            1,
            "read again once a second old"
        );
    }
}
