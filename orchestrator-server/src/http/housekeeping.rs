//! The server's periodic work: once a second the gate sweep (every stay at the gate past its
//! deadline is noted — once, whichever replica sees it first — and its policy applied; each
//! note is written to the event log as `gate.overdue`, logged and counted), and once a minute,
//! beside it so that the sweep never waits for a slow purge (on SQLite both still share the
//! one writer), the purge of idempotency keys older than a day, of events (and delivered or
//! failed webhook deliveries) past their retention, and of the board's ended sessions. Also
//! [`supervised`], under which the server runs its other background workers, so that one
//! that panics is started again.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use tokio::sync::watch;

use super::App;
use crate::metrics::{Metrics, Worker};

/// How often the deadlines are checked: a stay is noted within this (plus the sweep's grace
/// and its own time) after its `due_at`.
pub const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// How often what has outlived its time is purged (the first purge is at start-up).
const PURGE_EVERY: Duration = Duration::from_secs(60);

/// Sweeps every [`SWEEP_EVERY`] and purges every [`PURGE_EVERY`], each at its own pace,
/// until `stop` turns true.
pub async fn run(app: App, stop: watch::Receiver<bool>) {
    let metrics = app.metrics();
    let sweeps = every(
        SWEEP_EVERY,
        Worker::GateSweep,
        metrics,
        stop.clone(),
        || sweep_once(&app),
    );
    let purges = every(PURGE_EVERY, Worker::Purges, metrics, stop, || purge(&app));
    tokio::join!(sweeps, purges);
}

/// Purges what has outlived its time: idempotency keys, events and settled deliveries, ended
/// board sessions; and finishes webhook deletions that were cut short.
async fn purge(app: &App) {
    // Each on its own: a bug in one does not keep the others from running.
    let (purges, metrics) = (Worker::Purges, app.metrics());
    caught(
        purges,
        metrics,
        "the purge of idempotency keys",
        purge_keys(app),
    )
    .await;
    caught(purges, metrics, "the purge of events", purge_events(app)).await;
    caught(
        purges,
        metrics,
        "the purge of board sessions",
        purge_sessions(app),
    )
    .await;
}

/// Runs `work`, part of `worker`'s run; a panic in it (a bug) is logged with its message and
/// counted (`orchestrator_worker_restarts`) instead of unwinding further.
async fn caught(worker: Worker, metrics: &Metrics, what: &str, work: impl Future<Output = ()>) {
    if let Err(panic) = AssertUnwindSafe(work).catch_unwind().await {
        tracing::error!(
            worker = worker.as_str(),
            panic = crate::panic_message(&*panic),
            "{what} panicked (a bug); the next runs on time"
        );
        metrics.worker_restarted(worker);
    }
}

/// Runs the worker `start` gives until it returns. One that panics (a bug) is logged, counted
/// (`orchestrator_worker_restarts`) and started again after a pause — a second, doubling with
/// each panic that comes within a minute of its start, up to a minute — until `stop` turns
/// true: a bug met once does not end, for the process's life, a worker nobody else watches
/// (the webhook deliveries, the event feed, the sweep of abandoned asks), while `/health`
/// would go on saying healthy; one met at every start does not spin.
pub async fn supervised<F, Fut>(
    worker: Worker,
    metrics: &Metrics,
    mut stop: watch::Receiver<bool>,
    mut start: F,
) where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()>,
{
    let mut pause = FIRST_RESTART;
    loop {
        let started = tokio::time::Instant::now();
        let Err(panic) = AssertUnwindSafe(start()).catch_unwind().await else {
            return;
        };
        if started.elapsed() > LAST_RESTART {
            pause = FIRST_RESTART;
        }
        tracing::error!(
            worker = worker.as_str(),
            panic = crate::panic_message(&*panic),
            pause_seconds = pause.as_secs(),
            "a background worker panicked (a bug); started again after a pause"
        );
        tokio::select! {
            () = tokio::time::sleep(pause) => {}
            _ = stop.wait_for(|stop| *stop) => return,
        }
        metrics.worker_restarted(worker);
        pause = (pause * 2).min(LAST_RESTART);
    }
}

/// The first pause before a worker that panicked starts again.
const FIRST_RESTART: Duration = Duration::from_secs(1);

/// The longest pause before a worker that panicked starts again; a worker that ran this long
/// before it panicked starts again after [`FIRST_RESTART`].
const LAST_RESTART: Duration = Duration::from_secs(60);

/// Runs `work` at once and then every `period` (a late run delays the next, never doubles
/// it) until `stop` turns true. A run under way when it does is cut short, not waited for: a
/// purge of a large backlog can take thousands of chunks, each a transaction of its own (one
/// cut off rolls back, as after a crash), and the next start goes on where this one stopped;
/// a sweep's notes are each a transaction too, and the next sweep (another replica's, or this
/// server's after a restart) makes the rest. A run that panics (a bug) is logged, and the
/// next runs on time: a panic in the sweep or a purge no longer ends them all for the
/// process's life (though a bug that panics on every run still keeps its own work undone).
async fn every<F, Fut>(
    period: Duration,
    worker: Worker,
    metrics: &Metrics,
    mut stop: watch::Receiver<bool>,
    mut work: F,
) where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()>,
{
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait_for(|stop| *stop) => return,
        }
        tokio::select! {
            () = caught(worker, metrics, "a housekeeping run", work()) => {}
            _ = stop.wait_for(|stop| *stop) => return,
        }
    }
}

/// Forgets the idempotency keys no request can hold any more (see
/// [`super::idempotency::purgeable_before`]).
async fn purge_keys(app: &App) {
    let before = super::idempotency::purgeable_before(app.now(), app.limits().request_timeout);
    match app.orchestrator().repository().purge_keys(before).await {
        Ok(0) => {}
        Ok(n) => tracing::debug!(keys = n, "idempotency keys past their day purged"),
        Err(e) => tracing::warn!(error = %e, "could not purge idempotency keys"),
    }
}

/// Forgets the board's sessions that have ended.
async fn purge_sessions(app: &App) {
    let Some(sessions) = app.sessions() else {
        return;
    };
    match sessions.purge_sessions(app.now()).await {
        Ok(0) => {}
        Ok(n) => tracing::debug!(sessions = n, "ended board sessions purged"),
        Err(e) => tracing::warn!(error = %e, "could not purge ended board sessions"),
    }
}

/// Deletes the events, and the settled webhook deliveries, older than the retention, and what
/// is left of the webhooks whose deletion was cut short.
async fn purge_events(app: &App) {
    let retention = chrono::Duration::from_std(app.limits().events.retention)
        .unwrap_or(chrono::Duration::days(7));
    let before = app.now() - retention;
    match app.orchestrator().purge_events(before).await {
        Ok(0) => {}
        Ok(n) => tracing::debug!(events = n, "events past their retention deleted"),
        Err(e) => tracing::warn!(error = %e, "could not delete old events"),
    }
    let Some(webhooks) = app.webhooks() else {
        return;
    };
    match webhooks.store().purge_deliveries(before).await {
        Ok(0) => {}
        Ok(n) => tracing::debug!(
            rows = n,
            "settled deliveries past the retention, and deleted webhooks' rows, deleted"
        ),
        Err(e) => tracing::warn!(error = %e, "could not delete old deliveries"),
    }
}

/// One sweep; a storage failure is logged and the next sweep tries again.
async fn sweep_once(app: &App) {
    // Each stay noted is counted and logged by the orchestrator's observer
    // (`expiry_observer`), as one noted before a late decision is.
    if let Err(e) = app.orchestrator().sweep_gates().await {
        tracing::warn!(error = %e, "could not sweep the gates' deadlines");
    }
}

/// Counts and logs each stay at the gate noted past its deadline, by a sweep or before a
/// decision that came after it.
pub fn expiry_observer(metrics: Arc<Metrics>) -> orchestrator_core::ExpiryObserver {
    Arc::new(move |gate: &orchestrator_core::Expired| {
        metrics.gate_expired(gate.on_expiry);
        if let Some(trigger) = gate.on_expiry.trigger() {
            metrics.transition(trigger);
        }
        tracing::info!(
            event = "gate.overdue",
            feature_id = %gate.feature_id,
            due_at = %gate.due_at.to_rfc3339(),
            on_expiry = gate.on_expiry.as_str(),
            state = %gate.workflow.state(),
            "gate past its deadline"
        );
    })
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    /// How many times `metrics` counted `worker` started again (or a run of it that panicked).
    fn restarts(metrics: &Metrics, worker: Worker) -> u64 {
        let text = metrics.render(&crate::metrics::StoreReading::of(None), 0);
        let line = format!(
            r#"orchestrator_worker_restarts_total{{worker="{}"}} "#,
            worker.as_str()
        );
        text.lines()
            .find_map(|l| l.strip_prefix(line.as_str()))
            .and_then(|n| n.parse().ok())
            .expect("the series is there")
    }

    /// The purge keeps a key past its day for the longest lease and an hour more (a retry may
    /// have taken it over just before its day ended: here one still holds it), and forgets it
    /// after that.
    #[tokio::test]
    async fn the_key_purge_keeps_a_key_a_lease_and_an_hour_past_its_day() {
        use orchestrator_core::repository::{IdempotencyKey, KeyClaim};
        let config = crate::Config::for_tests(crate::storage::DatabaseUrl::SqliteMemory);
        let app = crate::build_app(&config).await.unwrap();
        let repository = app.orchestrator().repository().clone();
        let now = app.now();
        let (day, lease) = (chrono::Duration::days(1), chrono::Duration::seconds(65));
        let key = |name: &str| IdempotencyKey {
            scope: "*".to_owned(),
            key: name.to_owned(),
        };
        // First claimed a day and a minute ago, taken over by a retry a minute ago whose lease
        // runs on: held. First claimed a day and two hours ago, its lease long over: purged.
        let claims = [
            (
                "held",
                now - day - chrono::Duration::minutes(1),
                now + lease,
            ),
            ("old", now - day - chrono::Duration::hours(2), now - day),
        ];
        for (name, created, lease_until) in claims {
            let claim = repository
                .claim_key(&key(name), "fp", created, lease_until, created - day)
                .await
                .unwrap();
            assert!(matches!(claim, KeyClaim::Claimed), "{claim:?}");
        }
        purge_keys(&app).await;
        let held = repository
            .claim_key(&key("held"), "fp", now, now + lease, now - day)
            .await
            .unwrap();
        assert!(matches!(held, KeyClaim::InUse), "{held:?}");
        // Of the two past their day, only the held one is left.
        assert_eq!(repository.purge_keys(now - day).await.unwrap(), 1);
    }

    /// The minute's event purge deletes what is older than `EVENTS_RETENTION_SECONDS`, and
    /// nothing younger.
    #[tokio::test]
    async fn the_event_purge_deletes_what_is_older_than_the_retention() {
        use diesel::Connection;
        use diesel::connection::SimpleConnection;
        use orchestrator_core::{EventFilter, FeatureId, StartWorkflow};
        let dir = tempfile::TempDir::new().unwrap();
        let file = dir.path().join("purge.db");
        let mut config =
            crate::Config::for_tests(crate::storage::DatabaseUrl::SqliteFile(file.clone()));
        config.events_retention_seconds = 3_600;
        let app = crate::build_app(&config).await.unwrap();
        for name in ["old", "recent", "new"] {
            let start = StartWorkflow::new(FeatureId::parse(name).unwrap(), "d".parse().unwrap());
            app.orchestrator().start(start).await.unwrap();
        }
        // Made two hours ago, and half an hour ago; the third now.
        let mut conn = diesel::SqliteConnection::establish(file.to_str().unwrap()).unwrap();
        conn.batch_execute(
            "PRAGMA busy_timeout = 5000; \
             UPDATE events SET time = time - 7200000000 WHERE id = 1; \
             UPDATE events SET time = time - 1800000000 WHERE id = 2;",
        )
        .unwrap();
        purge_events(&app).await;
        let page = app
            .orchestrator()
            .events(None, &EventFilter::default(), 10)
            .await
            .unwrap();
        let ids: Vec<u64> = page.events.iter().map(|e| e.id).collect();
        assert_eq!(ids, [2, 3]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_worker_that_panics_is_started_again_after_growing_pauses_and_counted() {
        let metrics = Metrics::default();
        let (_stop, stopped) = watch::channel(false);
        let starts = AtomicU32::new(0);
        let started_at = tokio::time::Instant::now();
        supervised(Worker::EventFeed, &metrics, stopped, || async {
            if starts.fetch_add(1, Ordering::SeqCst) < 3 {
                panic!("a bug");
            }
        })
        .await;
        assert_eq!(
            starts.load(Ordering::SeqCst),
            4,
            "thrice started again, then done"
        );
        assert_eq!(started_at.elapsed(), Duration::from_secs(1 + 2 + 4));
        assert_eq!(restarts(&metrics, Worker::EventFeed), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn a_stop_ends_the_pause_of_a_worker_that_panicked() {
        let metrics = Metrics::default();
        let (stop, stopped) = watch::channel(false);
        let supervising = supervised(Worker::EventFeed, &metrics, stopped, || async {
            panic!("a bug at every start");
        });
        let stopping = async {
            tokio::time::sleep(Duration::from_millis(1500)).await;
            stop.send_replace(true);
        };
        let started_at = tokio::time::Instant::now();
        tokio::join!(supervising, stopping);
        assert_eq!(started_at.elapsed(), Duration::from_millis(1500));
        assert_eq!(
            restarts(&metrics, Worker::EventFeed),
            1,
            "started again once, not after the stop"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_worker_that_ran_a_while_before_it_panicked_waits_the_first_pause_again() {
        let metrics = Metrics::default();
        let (_stop, stopped) = watch::channel(false);
        let starts = AtomicU32::new(0);
        let restarted_at = std::sync::Mutex::new(Vec::new());
        let t0 = tokio::time::Instant::now();
        supervised(Worker::EventFeed, &metrics, stopped, || async {
            restarted_at.lock().unwrap().push(t0.elapsed());
            match starts.fetch_add(1, Ordering::SeqCst) {
                // Two quick panics (pauses of 1 s, then 2 s), then one after two minutes.
                0 | 1 => panic!("a bug"),
                2 => {
                    tokio::time::sleep(Duration::from_secs(120)).await;
                    panic!("a bug, later")
                }
                _ => {}
            }
        })
        .await;
        let secs = |s: u64| Duration::from_secs(s);
        assert_eq!(
            *restarted_at.lock().unwrap(),
            [secs(0), secs(1), secs(3), secs(124)],
            "after a long run the pause is 1 s again, not 4"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn work_runs_at_once_then_every_period_and_a_stop_cuts_a_run_short() {
        let (stop, stopped) = watch::channel(false);
        let runs = Arc::new(AtomicU32::new(0));
        let counted = runs.clone();
        let metrics = Arc::new(Metrics::default());
        let looping = tokio::spawn(async move {
            let work = move || {
                let runs = counted.clone();
                async move {
                    // The third run never ends by itself, like a purge of a huge backlog.
                    if runs.fetch_add(1, Ordering::SeqCst) == 2 {
                        std::future::pending::<()>().await;
                    }
                }
            };
            every(
                Duration::from_secs(60),
                Worker::Purges,
                &metrics,
                stopped,
                work,
            )
            .await;
        });
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(runs.load(Ordering::SeqCst), 1, "the first run is at once");
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert_eq!(runs.load(Ordering::SeqCst), 2, "then one per period");
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert_eq!(runs.load(Ordering::SeqCst), 3);
        assert!(!looping.is_finished(), "the third run is under way");

        stop.send_replace(true);
        tokio::time::timeout(Duration::from_secs(1), looping)
            .await
            .expect("a stop cuts the run short")
            .expect("the loop ends without a panic");
    }

    #[tokio::test(start_paused = true)]
    async fn a_run_that_panics_does_not_end_the_runs_after_it_and_is_counted() {
        let (stop, stopped) = watch::channel(false);
        let runs = Arc::new(AtomicU32::new(0));
        let counted = runs.clone();
        let metrics = Arc::new(Metrics::default());
        let looping = tokio::spawn({
            let metrics = metrics.clone();
            async move {
                let work = move || {
                    let runs = counted.clone();
                    async move {
                        if runs.fetch_add(1, Ordering::SeqCst) == 0 {
                            panic!("a bug in the first run");
                        }
                    }
                };
                every(
                    Duration::from_secs(1),
                    Worker::GateSweep,
                    &metrics,
                    stopped,
                    work,
                )
                .await;
            }
        });
        tokio::time::sleep(Duration::from_millis(2500)).await;
        assert_eq!(runs.load(Ordering::SeqCst), 3, "the runs go on");
        assert_eq!(restarts(&metrics, Worker::GateSweep), 1);
        assert_eq!(restarts(&metrics, Worker::Purges), 0);
        stop.send_replace(true);
        looping.await.expect("the loop itself did not panic");
    }
}
