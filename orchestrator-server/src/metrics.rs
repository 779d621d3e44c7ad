//! In-process metrics and their Prometheus text rendering: requests by route and status, a
//! latency histogram per route, transitions by trigger, workflows by state (read at scrape
//! time), Agent Hub calls by operation and outcome.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::time::Duration;

use http::Method;
use orchestrator_core::{StateCounts, Trigger};

/// Upper bounds of the latency buckets, in seconds.
const BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

#[derive(Debug, Default, Clone)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    sum: f64,
    count: u64,
}

#[derive(Debug, Default, Clone)]
struct Inner {
    requests: BTreeMap<(&'static str, &'static str, u16), u64>,
    latency: BTreeMap<&'static str, Histogram>,
    transitions: BTreeMap<&'static str, u64>,
    hub_calls: BTreeMap<(&'static str, &'static str), u64>,
}

/// The service's counters. Cheap to update: one short lock per event.
#[derive(Debug, Default)]
pub struct Metrics {
    inner: Mutex<Inner>,
}

impl Metrics {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counts one answered request.
    pub fn request(&self, route: &'static str, method: &Method, status: u16, elapsed: Duration) {
        let seconds = elapsed.as_secs_f64();
        let mut inner = self.lock();
        *inner
            .requests
            .entry((route, method_label(method), status))
            .or_default() += 1;
        let histogram = inner.latency.entry(route).or_default();
        for (bound, count) in BUCKETS.iter().zip(histogram.counts.iter_mut()) {
            if seconds <= *bound {
                *count += 1;
            }
        }
        histogram.sum += seconds;
        histogram.count += 1;
    }

    /// Counts one accepted transition.
    pub fn transition(&self, trigger: Trigger) {
        *self.lock().transitions.entry(trigger.as_str()).or_default() += 1;
    }

    /// Counts one Agent Hub call and its outcome (`ok`, `refused`, `error`, `unavailable`).
    pub fn hub_call(&self, operation: &'static str, outcome: &'static str) {
        *self
            .lock()
            .hub_calls
            .entry((operation, outcome))
            .or_default() += 1;
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self, workflows: Option<&StateCounts>) -> String {
        let inner = self.lock().clone();
        let mut out = String::with_capacity(4096);

        out.push_str("# HELP orchestrator_http_requests_total HTTP requests answered, by route, method and status.\n");
        out.push_str("# TYPE orchestrator_http_requests_total counter\n");
        for ((route, method, status), count) in &inner.requests {
            let _ = writeln!(
                out,
                "orchestrator_http_requests_total{{route=\"{route}\",method=\"{method}\",status=\"{status}\"}} {count}"
            );
        }

        out.push_str("# HELP orchestrator_http_request_duration_seconds Time to answer a request, by route.\n");
        out.push_str("# TYPE orchestrator_http_request_duration_seconds histogram\n");
        for (route, h) in &inner.latency {
            for (bound, count) in BUCKETS.iter().zip(h.counts.iter()) {
                let _ = writeln!(
                    out,
                    "orchestrator_http_request_duration_seconds_bucket{{route=\"{route}\",le=\"{bound}\"}} {count}"
                );
            }
            let _ = writeln!(
                out,
                "orchestrator_http_request_duration_seconds_bucket{{route=\"{route}\",le=\"+Inf\"}} {}",
                h.count
            );
            let _ = writeln!(
                out,
                "orchestrator_http_request_duration_seconds_sum{{route=\"{route}\"}} {}",
                h.sum
            );
            let _ = writeln!(
                out,
                "orchestrator_http_request_duration_seconds_count{{route=\"{route}\"}} {}",
                h.count
            );
        }

        out.push_str("# HELP orchestrator_transitions_total Transitions accepted by this process, by trigger.\n");
        out.push_str("# TYPE orchestrator_transitions_total counter\n");
        for trigger in Trigger::ALL {
            let count = inner
                .transitions
                .get(trigger.as_str())
                .copied()
                .unwrap_or(0);
            let _ = writeln!(
                out,
                "orchestrator_transitions_total{{trigger=\"{trigger}\"}} {count}"
            );
        }

        if let Some(counts) = workflows {
            out.push_str("# HELP orchestrator_workflows Workflows stored, by state.\n");
            out.push_str("# TYPE orchestrator_workflows gauge\n");
            for (state, count) in counts.as_map() {
                let _ = writeln!(out, "orchestrator_workflows{{state=\"{state}\"}} {count}");
            }
        }
        out.push_str("# HELP orchestrator_agent_hub_calls_total Agent Hub calls, by operation and outcome.\n");
        out.push_str("# TYPE orchestrator_agent_hub_calls_total counter\n");
        for ((operation, outcome), count) in &inner.hub_calls {
            let _ = writeln!(
                out,
                "orchestrator_agent_hub_calls_total{{operation=\"{operation}\",outcome=\"{outcome}\"}} {count}"
            );
        }
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
        let metrics = Metrics::default();
        metrics.request("/health", &Method::GET, 200, Duration::from_millis(3));
        metrics.transition(Trigger::Cancel);
        metrics.hub_call("ask", "unavailable");
        let text = metrics.render(Some(&StateCounts::from_pairs([])));
        assert!(text.contains(
            "orchestrator_http_requests_total{route=\"/health\",method=\"GET\",status=\"200\"} 1"
        ));
        assert!(text.contains(
            "orchestrator_http_request_duration_seconds_bucket{route=\"/health\",le=\"0.0025\"} 0"
        ));
        assert!(text.contains(
            "orchestrator_http_request_duration_seconds_bucket{route=\"/health\",le=\"0.005\"} 1"
        ));
        assert!(text.contains("orchestrator_transitions_total{trigger=\"cancel\"} 1"));
        assert!(text.contains("orchestrator_workflows{state=\"GATE_1\"} 0"));
        assert!(text.contains(
            "orchestrator_agent_hub_calls_total{operation=\"ask\",outcome=\"unavailable\"} 1"
        ));
    }
}
