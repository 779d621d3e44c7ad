//! The service's metrics, through `prometheus-client` and exposed as OpenMetrics text: requests
//! by route, method and status, a latency histogram per route, transitions by trigger, gate
//! expiries, workflows by state and overdue gates (read at scrape time), Agent Hub calls by
//! operation and outcome, webhook attempts and backlog, event streams, worker restarts, and the
//! store's own (connection pool in use and waits, writes per commit, advances judged again or
//! deferred). docs/OPERATIONS.md has the table.

use std::time::Duration;

use http::Method;
use orchestrator_core::gate::OnExpiry;
use orchestrator_core::{Summary, Trigger};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::storage::{Backlog, StorageMetrics};

/// Upper bounds of the latency buckets, in seconds.
/// Up to ten minutes: a request that consults the Agent Hub may wait for its answer as long
/// as `AGENT_HUB_TIMEOUT_SECONDS` (330 by default) and its own margins, about six minutes.
const BUCKETS: [f64; 17] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0,
    300.0, 600.0,
];

/// A counter family registered as `name`, with a series at 0 for each of `labels`: a count
/// that has not happened yet shows as 0, not as no series at all.
fn counters<L>(
    registry: &mut Registry,
    name: &str,
    help: &str,
    labels: impl IntoIterator<Item = L>,
) -> Family<L, Counter>
where
    L: Clone + std::hash::Hash + Eq + EncodeLabelSet + std::fmt::Debug + Send + Sync + 'static,
{
    let family = Family::<L, Counter>::default();
    registry.register(name, help, family.clone());
    for label in labels {
        family.get_or_create(&label).inc_by(0);
    }
    family
}

/// The content type of [`Metrics::render`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: &'static str,
    method: &'static str,
    status: u16,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TriggerLabels {
    trigger: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ExpiryLabels {
    on_expiry: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WorkerLabels {
    worker: &'static str,
}

/// A background worker of the server that nothing else watches, started again if it panics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Worker {
    /// Enqueues and attempts webhook deliveries.
    Webhooks,
    /// Reads the event log and broadcasts it to the event streams.
    EventFeed,
    /// Marks asks a stopped server left `interrupted`.
    AsksSweep,
    /// Notes the gates past their deadline, every second (a run that panics is counted, and
    /// the next runs on time).
    GateSweep,
    /// Purges idempotency keys, events, settled deliveries and ended board sessions, every
    /// minute (likewise).
    Purges,
}

impl Worker {
    /// Every worker.
    pub const ALL: [Worker; 5] = [
        Worker::Webhooks,
        Worker::EventFeed,
        Worker::AsksSweep,
        Worker::GateSweep,
        Worker::Purges,
    ];

    /// Its name, as the `worker` label and the log say it.
    pub fn as_str(self) -> &'static str {
        match self {
            Worker::Webhooks => "webhooks",
            Worker::EventFeed => "event_feed",
            Worker::AsksSweep => "asks_sweep",
            Worker::GateSweep => "gate_sweep",
            Worker::Purges => "purges",
        }
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AttemptLabels {
    outcome: &'static str,
}

/// The Agent Hub calls counted, as the `operation` label says them.
const HUB_OPERATIONS: [&str; 6] = [
    "create_session",
    "close_session",
    "ask",
    "escalation",
    "respond",
    "health",
];

/// How an Agent Hub call ended, as the `outcome` label says it.
const HUB_OUTCOMES: [&str; 4] = ["ok", "unavailable", "error", "refused"];

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HubLabels {
    operation: &'static str,
    outcome: &'static str,
}

/// What a scrape read from the store (shared by the scrapes of the next second).
#[derive(Debug, Clone, Default)]
pub struct StoreReading {
    /// Whether every read answered; when one did not, the gauges it sets keep what the last
    /// scrape that could read found.
    pub readable: bool,
    /// Workflows by state and gates overdue.
    pub summary: Option<Summary>,
    /// What waits to be delivered to webhooks (none without a webhook store).
    pub backlog: Option<Backlog>,
}

impl StoreReading {
    /// A reading of `summary` alone (a server without webhooks).
    #[cfg(test)]
    pub(crate) fn of(summary: Option<Summary>) -> Self {
        StoreReading {
            readable: summary.is_some(),
            summary,
            backlog: None,
        }
    }
}

/// The service's metrics; updating one is a lock-free increment or a short lock per label set.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Family<RouteLabels, Histogram>,
    transitions: Family<TriggerLabels, Counter>,
    workflows: Family<StateLabels, Gauge>,
    gates_overdue: Gauge,
    store_readable: Gauge,
    event_streams: Gauge,
    gate_expiries: Family<ExpiryLabels, Counter>,
    worker_restarts: Family<WorkerLabels, Counter>,
    hub_calls: Family<HubLabels, Counter>,
    webhook_attempts: Family<AttemptLabels, Counter>,
    webhook_latency: Histogram,
    webhook_pending: Gauge,
    webhook_oldest_due: Gauge,
    webhook_oldest_unenqueued: Gauge,
    log_lines_dropped: Counter,
    /// Held while a scrape sets the gauges it reads at scrape time and encodes them, so two
    /// scrapes at once never show each other's readings.
    rendering: std::sync::Mutex<()>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new(&StorageMetrics::default())
    }
}

impl Metrics {
    /// The service's metrics, with the store's own registered beside them.
    pub fn new(storage: &StorageMetrics) -> Self {
        let mut registry = Registry::default();
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "orchestrator_http_requests",
            "HTTP requests answered, by route, method and status (499: the client went away first)",
            requests.clone(),
        );
        let latency = Family::<RouteLabels, Histogram>::new_with_constructor(
            (|| Histogram::new(BUCKETS)) as fn() -> Histogram,
        );
        registry.register(
            "orchestrator_http_request_duration_seconds",
            "Time to answer a request, by route",
            latency.clone(),
        );
        let transitions = counters(
            &mut registry,
            "orchestrator_transitions",
            "Transitions accepted by this process, by trigger",
            Trigger::ALL.map(|trigger| TriggerLabels {
                trigger: trigger.as_str(),
            }),
        );
        let workflows = Family::<StateLabels, Gauge>::default();
        registry.register(
            "orchestrator_workflows",
            "Workflows stored, by state (read when scraped)",
            workflows.clone(),
        );
        let gates_overdue = Gauge::default();
        registry.register(
            "orchestrator_gates_overdue",
            "Stays at the gate past their deadline (read when scraped)",
            gates_overdue.clone(),
        );
        let store_readable = Gauge::default();
        registry.register(
            "orchestrator_store_readable",
            "1 if this scrape read the store; 0 if a read failed, and the gauges that read sets \
             still hold what the last scrape that could read found",
            store_readable.clone(),
        );
        let event_streams = Gauge::default();
        registry.register(
            "orchestrator_event_streams",
            "Event streams open on this server (read when scraped); at three quarters of MAX_CONNECTIONS a new one is refused 503",
            event_streams.clone(),
        );
        let gate_expiries = counters(
            &mut registry,
            "orchestrator_gate_expiries",
            "Stays at the gate this process noted past their deadline, by on_expiry",
            OnExpiry::ALL.map(|on_expiry| ExpiryLabels {
                on_expiry: on_expiry.as_str(),
            }),
        );
        let worker_restarts = counters(
            &mut registry,
            "orchestrator_worker_restarts",
            "Background workers started again after a panic (a bug), by worker; for the gate \
             sweep and the purges, runs that panicked (the next runs on time)",
            Worker::ALL.map(|worker| WorkerLabels {
                worker: worker.as_str(),
            }),
        );
        let hub_calls = counters(
            &mut registry,
            "orchestrator_agent_hub_calls",
            "Agent Hub calls, by operation and outcome",
            HUB_OPERATIONS
                .into_iter()
                .flat_map(|operation| HUB_OUTCOMES.map(|outcome| HubLabels { operation, outcome })),
        );
        let webhook_attempts = counters(
            &mut registry,
            "orchestrator_webhook_attempts",
            "Webhook delivery attempts made by this process, by outcome (delivered, retry, failed)",
            ["delivered", "retry", "failed"].map(|outcome| AttemptLabels { outcome }),
        );
        let webhook_latency = Histogram::new(BUCKETS);
        registry.register(
            "orchestrator_webhook_attempt_duration_seconds",
            "Time a webhook delivery attempt took, answer or failure",
            webhook_latency.clone(),
        );
        let webhook_pending = Gauge::default();
        registry.register(
            "orchestrator_webhook_deliveries_pending",
            "Webhook deliveries pending: due, waiting for a retry, or being attempted (read when scraped)",
            webhook_pending.clone(),
        );
        let webhook_oldest_due = Gauge::default();
        registry.register(
            "orchestrator_webhook_oldest_due_seconds",
            "How long the longest-due webhook delivery no attempt holds has waited past its time, in whole seconds; 0 when none (read when scraped)",
            webhook_oldest_due.clone(),
        );
        let webhook_oldest_unenqueued = Gauge::default();
        registry.register(
            "orchestrator_webhook_oldest_unenqueued_seconds",
            "How long ago the oldest event still to become a webhook's delivery was made, in whole seconds; 0 when none is (read when scraped)",
            webhook_oldest_unenqueued.clone(),
        );
        let log_lines_dropped = Counter::default();
        registry.register(
            "orchestrator_log_lines_dropped",
            "Log lines dropped because standard output took them slower than they came (a reader of it stuck; read when scraped)",
            log_lines_dropped.clone(),
        );
        registry.register(
            "orchestrator_db_commit_batch_size",
            "Writes sent to the database together in one transaction (counted as it starts: one that rolls back too)",
            storage.commit_batch.clone(),
        );
        registry.register(
            "orchestrator_db_pool_wait_seconds",
            "Time a storage call waited for a database connection",
            storage.pool_wait.clone(),
        );
        registry.register(
            "orchestrator_db_pool_timeouts",
            "Storage calls that gave up waiting for a database connection (a request's answered 503; background work tries again)",
            storage.pool_timeouts.clone(),
        );
        registry.register(
            "orchestrator_db_pool_connections_in_use",
            "Database connections in use (SQLite: reading connections)",
            storage.pool_in_use.clone(),
        );
        registry.register(
            "orchestrator_db_pool_connections",
            "Database connections the pool may hold",
            storage.pool_size.clone(),
        );
        registry.register(
            "orchestrator_db_advances_rejudged",
            "Advances judged again because their workflow changed before their batch committed",
            storage.advances_rejudged.clone(),
        );
        registry.register(
            "orchestrator_db_advances_deferred",
            "Advances put off to a later batch because another transaction held their workflow's row",
            storage.advances_deferred.clone(),
        );
        Metrics {
            registry,
            requests,
            latency,
            transitions,
            workflows,
            gates_overdue,
            store_readable,
            event_streams,
            gate_expiries,
            worker_restarts,
            hub_calls,
            webhook_attempts,
            webhook_latency,
            webhook_pending,
            webhook_oldest_due,
            webhook_oldest_unenqueued,
            log_lines_dropped,
            rendering: std::sync::Mutex::new(()),
        }
    }

    /// Counts one webhook delivery attempt: `delivered`, `retry` (it failed and will be
    /// attempted again) or `failed` (the schedule is used up).
    pub fn webhook_attempt(&self, outcome: &'static str, elapsed: Duration) {
        self.webhook_attempts
            .get_or_create(&AttemptLabels { outcome })
            .inc();
        self.webhook_latency.observe(elapsed.as_secs_f64());
    }

    /// Counts one stay at the gate this process noted past its deadline.
    pub fn gate_expired(&self, on_expiry: OnExpiry) {
        self.gate_expiries
            .get_or_create(&ExpiryLabels {
                on_expiry: on_expiry.as_str(),
            })
            .inc();
    }

    /// Counts a worker started again after a panic.
    pub fn worker_restarted(&self, worker: Worker) {
        self.worker_restarts
            .get_or_create(&WorkerLabels {
                worker: worker.as_str(),
            })
            .inc();
    }

    /// Shows the server-error series of every route's methods at 0 from the start (500 and
    /// 503: a fault's first answers then show as a rise, which a series that first appears
    /// already at 1 does not), and each route's latency histogram.
    pub fn expect_requests<'a>(
        &self,
        routes: impl IntoIterator<Item = (&'static str, &'a [Method])>,
    ) {
        for (route, methods) in routes {
            let _ = self.latency.get_or_create(&RouteLabels { route });
            for method in methods.iter().filter(|m| **m != Method::HEAD) {
                for status in [500, 503] {
                    self.requests
                        .get_or_create(&RequestLabels {
                            route,
                            method: method_label(method),
                            status,
                        })
                        .inc_by(0);
                }
            }
        }
    }

    /// Counts one answered request.
    pub fn request(&self, route: &'static str, method: &Method, status: u16, elapsed: Duration) {
        self.requests
            .get_or_create(&RequestLabels {
                route,
                method: method_label(method),
                status,
            })
            .inc();
        self.latency
            .get_or_create(&RouteLabels { route })
            .observe(elapsed.as_secs_f64());
    }

    /// Counts one accepted transition.
    pub fn transition(&self, trigger: Trigger) {
        self.transitions
            .get_or_create(&TriggerLabels {
                trigger: trigger.as_str(),
            })
            .inc();
    }

    /// Counts one Agent Hub call and its outcome (`ok`, `refused`, `error`, `unavailable`).
    pub fn hub_call(&self, operation: &'static str, outcome: &'static str) {
        // A name not among those shown at 0 from the start would first show at 1.
        debug_assert!(
            HUB_OPERATIONS.contains(&operation) && HUB_OUTCOMES.contains(&outcome),
            "an Agent Hub call counted as {operation}/{outcome}, which the metrics do not list"
        );
        self.hub_calls
            .get_or_create(&HubLabels { operation, outcome })
            .inc();
    }

    /// The OpenMetrics text of every metric, read at scrape time: `reading` sets the
    /// workflows-by-state, overdue and webhook backlog gauges first (those it holds), and the
    /// store-readable one; `open_streams` the event streams' gauge.
    pub fn render(&self, reading: &StoreReading, open_streams: usize) -> String {
        // A scrape that panicked while holding the lock left nothing half done that matters.
        let _rendering = self
            .rendering
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        self.event_streams
            .set(i64::try_from(open_streams).unwrap_or(i64::MAX));
        self.store_readable.set(i64::from(reading.readable));
        let dropped = crate::telemetry::dropped_log_lines();
        self.log_lines_dropped
            .inc_by(dropped.saturating_sub(self.log_lines_dropped.get()));
        if let Some(backlog) = reading.backlog {
            self.webhook_pending
                .set(i64::try_from(backlog.pending).unwrap_or(i64::MAX));
            self.webhook_oldest_due
                .set(i64::try_from(backlog.oldest_due.as_secs()).unwrap_or(i64::MAX));
            self.webhook_oldest_unenqueued
                .set(i64::try_from(backlog.oldest_unenqueued.as_secs()).unwrap_or(i64::MAX));
        }
        if let Some(summary) = &reading.summary {
            self.gates_overdue
                .set(i64::try_from(summary.overdue).unwrap_or(i64::MAX));
            for (state, count) in summary.counts.as_map() {
                self.workflows
                    .get_or_create(&StateLabels {
                        state: state.as_str(),
                    })
                    .set(i64::try_from(*count).unwrap_or(i64::MAX));
            }
        }
        let mut out = String::with_capacity(8192);
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// A method as a label; anything unusual counts as `OTHER`, so labels stay few.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        _ => "OTHER",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_land_in_their_counter_and_cumulative_buckets() {
        let storage = StorageMetrics::default();
        let metrics = Metrics::new(&storage);
        metrics.request("/health", &Method::GET, 200, Duration::from_millis(3));
        metrics.transition(Trigger::Cancel);
        metrics.hub_call("ask", "unavailable");
        storage.commit_batch.observe(3.0);
        storage.advances_rejudged.inc();
        metrics.gate_expired(OnExpiry::Reject);
        let reading = StoreReading {
            readable: true,
            summary: Some(Summary {
                counts: orchestrator_core::StateCounts::from_pairs([]),
                overdue: 2,
            }),
            backlog: Some(Backlog {
                pending: 7,
                oldest_due: Duration::from_millis(61_900),
                oldest_unenqueued: Duration::from_secs(3),
            }),
        };
        let text = metrics.render(&reading, 0);
        for expected in [
            r#"orchestrator_http_requests_total{route="/health",method="GET",status="200"} 1"#,
            r#"orchestrator_http_request_duration_seconds_bucket{le="0.0025",route="/health"} 0"#,
            r#"orchestrator_http_request_duration_seconds_bucket{le="0.005",route="/health"} 1"#,
            r#"orchestrator_transitions_total{trigger="cancel"} 1"#,
            r#"orchestrator_transitions_total{trigger="start"} 0"#,
            r#"orchestrator_workflows{state="GATE_1"} 0"#,
            "orchestrator_gates_overdue 2",
            r#"orchestrator_gate_expiries_total{on_expiry="reject"} 1"#,
            r#"orchestrator_gate_expiries_total{on_expiry="flag"} 0"#,
            r#"orchestrator_agent_hub_calls_total{operation="ask",outcome="unavailable"} 1"#,
            r#"orchestrator_db_commit_batch_size_bucket{le="4.0"} 1"#,
            "orchestrator_db_advances_rejudged_total 1",
            "orchestrator_store_readable 1",
            "orchestrator_webhook_deliveries_pending 7",
            "orchestrator_webhook_oldest_due_seconds 61",
            "orchestrator_webhook_oldest_unenqueued_seconds 3",
            // Seeded at 0: a first failure shows as a rise.
            r#"orchestrator_agent_hub_calls_total{operation="respond",outcome="error"} 0"#,
            r#"orchestrator_worker_restarts_total{worker="gate_sweep"} 0"#,
            "# EOF",
        ] {
            assert!(text.contains(expected), "{expected} missing from:\n{text}");
        }
    }

    /// Every series the server exposes is in the operators' reference table, and the table
    /// names none it does not.
    #[test]
    fn every_series_is_in_the_operations_guide() {
        let guide = include_str!("../../docs/OPERATIONS.md");
        let table: Vec<&str> = guide
            .lines()
            .filter_map(|line| line.strip_prefix("| `orchestrator_"))
            .filter_map(|rest| rest.split('`').next())
            .collect();
        let storage = StorageMetrics::default();
        let metrics = Metrics::new(&storage);
        // Each family shows from the start.
        metrics.expect_requests([("/health", [Method::GET, Method::HEAD].as_slice())]);
        let summary = Summary {
            counts: orchestrator_core::StateCounts::from_pairs([]),
            overdue: 0,
        };
        let text = metrics.render(&StoreReading::of(Some(summary)), 0);
        let mut exposed: Vec<&str> = text
            .lines()
            .filter_map(|line| line.strip_prefix("# TYPE orchestrator_"))
            .filter_map(|rest| rest.split(' ').next())
            .collect();
        exposed.sort_unstable();
        let mut documented = table.clone();
        documented.sort_unstable();
        assert_eq!(exposed, documented);
    }

    #[test]
    fn the_server_error_series_of_each_route_show_at_zero_from_the_start() {
        let metrics = Metrics::default();
        metrics.expect_requests([
            ("/health", [Method::GET, Method::HEAD].as_slice()),
            ("/workflow/{feature_id}/advance", [Method::POST].as_slice()),
        ]);
        let text = metrics.render(&StoreReading::of(None), 0);
        for expected in [
            r#"orchestrator_http_requests_total{route="/health",method="GET",status="500"} 0"#,
            r#"orchestrator_http_requests_total{route="/health",method="GET",status="503"} 0"#,
            r#"orchestrator_http_requests_total{route="/workflow/{feature_id}/advance",method="POST",status="503"} 0"#,
        ] {
            assert!(text.contains(expected), "{expected} missing from:\n{text}");
        }
        assert!(!text.contains(r#"method="HEAD""#), "{text}");
    }

    #[test]
    fn a_scrape_that_cannot_read_the_store_says_so_and_counts_pool_timeouts() {
        let storage = StorageMetrics::default();
        let metrics = Metrics::new(&storage);
        storage.pool_timeouts.inc();
        // A request that waited minutes for the Agent Hub lands in a bucket of its own.
        metrics.request("/ask", &Method::POST, 200, Duration::from_secs(100));
        // And one that waited out the default hub timeout, 330 s, and its margins.
        metrics.request("/ask", &Method::POST, 503, Duration::from_secs(365));
        let text = metrics.render(&StoreReading::of(None), 3);
        for expected in [
            "orchestrator_store_readable 0",
            "orchestrator_event_streams 3",
            "orchestrator_db_pool_timeouts_total 1",
            r#"orchestrator_http_request_duration_seconds_bucket{le="60.0",route="/ask"} 0"#,
            r#"orchestrator_http_request_duration_seconds_bucket{le="300.0",route="/ask"} 1"#,
            r#"orchestrator_http_request_duration_seconds_bucket{le="600.0",route="/ask"} 2"#,
        ] {
            assert!(text.contains(expected), "{expected} missing from:\n{text}");
        }
    }
}
