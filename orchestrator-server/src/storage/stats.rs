//! What the store reports about itself, as metrics the service exposes: how long requests wait
//! for a connection (and how often they gave up waiting), how many connections are in use, how
//! many writes share a commit, how often an advance had to be judged again.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;

/// A store's metrics. Clones share their values, so the service can register them while the
/// store keeps updating them.
#[derive(Debug, Clone)]
pub struct StorageMetrics {
    /// Writes committed together in one transaction (the SQLite writer's batch, the PostgreSQL
    /// statement of concurrent advances or of concurrent new workflows).
    pub commit_batch: Histogram,
    /// Seconds a request waited for a connection it got.
    pub pool_wait: Histogram,
    /// Requests that gave up waiting for a connection (and answered 503).
    pub pool_timeouts: Counter,
    /// Connections in use now.
    pub pool_in_use: Gauge,
    /// Connections the pool may hold.
    pub pool_size: Gauge,
    /// Advances judged again because their workflow changed between their batch's read and
    /// its commit (PostgreSQL: another batch or another replica advanced it first), or since
    /// this server last wrote it (a remembered row that another replica made stale).
    pub advances_rejudged: Counter,
    /// Advances put off to a later batch because another transaction held their workflow's
    /// row (PostgreSQL).
    pub advances_deferred: Counter,
}

impl Default for StorageMetrics {
    fn default() -> Self {
        StorageMetrics {
            commit_batch: Histogram::new([1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0]),
            pool_wait: Histogram::new([
                0.000_1, 0.000_5, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0,
            ]),
            pool_timeouts: Counter::default(),
            pool_in_use: Gauge::default(),
            pool_size: Gauge::default(),
            advances_rejudged: Counter::default(),
            advances_deferred: Counter::default(),
        }
    }
}

/// A connection taken from a pool: counted in use until dropped.
pub struct InUse(Gauge);

impl InUse {
    /// Counts one connection more in use, after waiting `waited` for it.
    pub fn take(metrics: &StorageMetrics, waited: std::time::Duration) -> Self {
        metrics.pool_wait.observe(waited.as_secs_f64());
        metrics.pool_in_use.inc();
        InUse(metrics.pool_in_use.clone())
    }
}

impl Drop for InUse {
    fn drop(&mut self) {
        self.0.dec();
    }
}
