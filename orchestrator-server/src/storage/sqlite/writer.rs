//! Group commit for SQLite: one thread owns the only writing connection. It takes every write
//! waiting, runs them in one `BEGIN IMMEDIATE` transaction, commits once (one sync for the
//! whole batch), and only then answers each caller.
//!
//! A refused write (a lost compare-and-set, a duplicate) writes nothing by construction, so
//! the batch runs without per-write savepoints. If a write fails with a database error, the
//! batch is rolled back and run again with a savepoint around each write: the failing write
//! fails alone, the others commit.
//!
//! The write-ahead log stays bounded. A checkpoint thread copies it back into the database
//! file once a second without blocking anyone (PASSIVE), but a log that is written back to back
//! never restarts from its beginning that way: the writer must reset it (a RESTART checkpoint)
//! once it passes [`WAL_RESET_BYTES`], and no batch runs during a reset. So the reset is done
//! in two steps (see `Log::reset_if_large`): the checkpoint thread first copies the log while
//! batches go on, again if much was committed meanwhile, and only then does the writer stop,
//! to copy the little left, sync the database file and restart the log. The file is not
//! emptied (TRUNCATE) but kept at [`WAL_RESET_BYTES`] and overwritten from its beginning: a
//! commit that only overwrites blocks syncs its data alone, while one that makes the file grow
//! must also sync the file's size and new blocks — measured, a log truncated at every reset
//! cost a fifth of the advance throughput. SQLite cuts the file back to `journal_size_limit`
//! (set to [`WAL_RESET_BYTES`]) when the first commit after a reset lands, so the file grows
//! past [`WAL_RESET_BYTES`] only once the log itself does: its size is the signal to reset.
//! [`Writer::shutdown`] empties the log and joins both threads, so a clean stop leaves no log
//! behind.
//!
//! The writer remembers its last write that failed because of the storage (a full disk, a
//! read-only file, another process's lock held past the busy timeout): `/health` asks for it,
//! since its own probe writes one small row, which can still fit where larger writes no longer
//! do.

use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use diesel::connection::SimpleConnection;
use diesel::{QueryResult, RunQueryDsl, SqliteConnection};
use orchestrator_core::{FeatureId, Judge, RepositoryError};
use tokio::sync::oneshot;

use super::ops;
use super::prepared::Sql;
use crate::storage::StorageMetrics;
use crate::storage::write::{Write, Written};

/// Most writes one transaction takes; bounds the latency a batch adds.
const MAX_BATCH: usize = 256;
/// How often the checkpoint thread copies the WAL into the database file. Rarer checkpoints
/// mean fewer syncs of the database file competing with the WAL's (measured: 250 ms gave a
/// noticeably worse p99 than 1 s).
const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_millis(1000);
/// Size of the write-ahead log past which it is reset. It is also the connection's
/// `journal_size_limit`, the size SQLite cuts the file back to. While the checkpoint thread
/// copies, the log grows a few MiB further (at most `WAL_RESET_SLACK_BYTES` further, then by
/// one copy's worth), staying under 176 MiB; a crash replays at most that much (measured:
/// 160 ms for 170 MiB). Each reset stops the writer for a few milliseconds, and every write
/// waiting meanwhile waits that much longer: at full load 48 MiB meant three or four resets a
/// second and a p99 of 5.2–7.6 ms at 32 clients, 160 MiB one a second and 3.0–4.8 ms
/// (docs/PERFORMANCE.md).
pub const WAL_RESET_BYTES: u64 = 160 * 1024 * 1024;
/// How far past [`WAL_RESET_BYTES`] the log may grow while the checkpoint thread copies it;
/// past this the writer waits for the copy under way and resets at once.
const WAL_RESET_SLACK_BYTES: u64 = 8 * 1024 * 1024;
/// Most the log may have grown during the checkpoint thread's copy for the writer to reset it
/// after it; past this, the thread copies again first (so the writer's own copy stays short).
const WAL_RESET_LEFT_BYTES: u64 = 512 * 1024;
/// Most copies the checkpoint thread makes for one reset: under full load each copy takes
/// long enough for the next batches to leave more than [`WAL_RESET_LEFT_BYTES`] behind, so
/// the writer stops after the third whatever is left.
const WAL_RESET_ROUNDS: u32 = 3;
/// How long the writer's reset waits for readers still on the log (a read the server makes
/// takes milliseconds). Not the connection's busy timeout: a reader held for long (a backup,
/// an `sqlite3` shell in a transaction) would stop every batch that tries for that long.
const WAL_RESET_WAIT_MS: u32 = 200;
/// After a reset readers kept from the log, how long the writer lets it grow before trying
/// again: a quarter of a second after the first, doubling while they keep it, up to
/// [`WAL_RESET_MAX_RETRY`] (a reader held for long seldom leaves at once, and each try stops
/// the writer; one of the server's own slower reads is gone by the next).
const WAL_RESET_RETRY: std::time::Duration = std::time::Duration::from_millis(250);
/// The longest pause between two resets readers kept from the log.
const WAL_RESET_MAX_RETRY: std::time::Duration = std::time::Duration::from_secs(5);

/// What a caller hands the writer thread.
#[expect(
    clippy::large_enum_variant,
    reason = "a task crosses to the writer boxed, and a batch holds at most MAX_BATCH"
)]
pub enum Task {
    /// A write, described in full.
    Write(Write),
    /// An advance read and judged inside the writer's transaction (see [`ops::advance`]).
    Advance(FeatureId, Judge),
    /// A write with a bug: it panics (tests of the writer's containment).
    #[cfg(test)]
    Panic,
}

impl Task {
    /// Carries the task out on `conn`, inside the writer's transaction.
    fn run(&self, conn: &mut SqliteConnection, ids: &mut ops::EventIds) -> QueryResult<Written> {
        match self {
            Task::Write(write) => ops::apply(conn, ids, write),
            Task::Advance(feature_id, judge) => ops::advance(conn, ids, feature_id, judge),
            #[cfg(test)]
            Task::Panic => panic!("a bug in a write"),
        }
    }
}

enum Job {
    Write {
        // Boxed: a write is large, and the stop signal should not be.
        task: Box<Task>,
        reply: oneshot::Sender<Result<Written, RepositoryError>>,
    },
    /// Empty the log, stop the checkpoint thread, and end.
    Stop,
}

/// The handle to the writer thread.
#[derive(Clone)]
pub struct Writer {
    // Declared before `thread`: the last handle's queue closes (the thread's cue to end)
    // before its thread is joined.
    jobs: mpsc::Sender<Job>,
    /// The writer thread (which joins the checkpoint thread before it ends), taken by the
    /// first [`Writer::shutdown`], else joined when the last handle is dropped.
    thread: Arc<WriterThread>,
    /// The last write that failed because of the storage.
    last_failure: Arc<LastFailure>,
}

/// The writer thread, joined when the last handle is dropped: a store dropped without
/// [`Writer::shutdown`] (an embedder's, at the end of its scope) has still emptied its log
/// into the database file when the drop returns, so the file may be opened again at once
/// (the final checkpoint would otherwise hold it locked for a moment). The drop waits for
/// that, on the dropping thread, as `shutdown` does.
struct WriterThread(Mutex<Option<JoinHandle<()>>>);

impl WriterThread {
    /// Waits for the thread to end, if no one has yet — but on the thread itself (a task
    /// that held the last handle, dropped there), which cannot wait for itself: it ends on.
    fn join(&self) {
        let thread = self.0.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(thread) = thread
            && thread.thread().id() != std::thread::current().id()
        {
            let _ = thread.join();
        }
    }
}

impl Drop for WriterThread {
    fn drop(&mut self) {
        self.join();
    }
}

/// When the last write failed because of the storage, and why.
#[derive(Default)]
struct LastFailure(Mutex<Option<(Instant, String)>>);

impl LastFailure {
    /// Remembers the first storage failure among a batch's outcomes, if any. Refusals (a lost
    /// compare-and-set, a duplicate) are answers, not failures.
    fn note(&self, outcomes: &Outcomes) {
        let failed = outcomes.iter().find_map(|outcome| match outcome {
            Err(RepositoryError::Unavailable(e)) => Some(e.to_string()),
            _ => None,
        });
        if let Some(message) = failed {
            *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Some((Instant::now(), message));
        }
    }

    /// How long ago the last storage failure was, and its message, if within `window`.
    fn within(&self, window: Duration) -> Option<(Duration, String)> {
        let last = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let (at, message) = last.as_ref()?;
        let ago = at.elapsed();
        (ago < window).then(|| (ago, message.clone()))
    }
}

impl Writer {
    /// Starts the writer thread on `conn`, which must already be configured and migrated, and
    /// the checkpoint thread on `checkpointer`. `wal` is the log's path (`<database>-wal`).
    pub fn start(
        mut conn: SqliteConnection,
        mut checkpointer: SqliteConnection,
        wal: PathBuf,
        metrics: Arc<StorageMetrics>,
    ) -> std::io::Result<Writer> {
        // Commits no longer checkpoint; the checkpoint thread and the writer's resets do.
        conn.batch_execute("PRAGMA wal_autocheckpoint = 0")
            .map_err(std::io::Error::other)?;
        let (jobs, queue) = mpsc::channel();
        let last_failure = Arc::new(LastFailure::default());
        let (requests, requested) = mpsc::channel::<u64>();
        let (copied, copies) = mpsc::channel::<u64>();
        let checkpoints = std::thread::Builder::new()
            .name("sqlite-checkpoint".to_owned())
            .spawn(move || copy_log(&mut checkpointer, &requested, &copied))?;
        let noted = last_failure.clone();
        let writer = std::thread::Builder::new()
            .name("sqlite-writer".to_owned())
            .spawn(move || {
                let mut log = Log::new(wal, requests, copies);
                run(&mut conn, &queue, &mut log, &metrics, &noted);
                // The checkpoint thread ends first, so the last reset finds nobody copying.
                drop(log);
                let _ = checkpoints.join();
                match checkpoint(&mut conn, "TRUNCATE") {
                    Ok(None) => {}
                    Ok(Some(pages)) => tracing::warn!(
                        wal_pages = pages,
                        "final checkpoint kept from the log by a reader (a backup?); the log is replayed at the next start"
                    ),
                    Err(e) => {
                        tracing::warn!(error = %e, "final checkpoint failed; the log is replayed at the next start");
                    }
                }
            })?;
        Ok(Writer {
            jobs,
            thread: Arc::new(WriterThread(Mutex::new(Some(writer)))),
            last_failure,
        })
    }

    /// How long ago a write last failed because of the storage, and why, if within `window`.
    pub fn failed_within(&self, window: Duration) -> Option<(Duration, String)> {
        self.last_failure.within(window)
    }

    /// Carries out `task` in the next batch; answers once the batch is on disk.
    pub async fn submit(&self, task: Task) -> Result<Written, RepositoryError> {
        let stopped = || RepositoryError::Unavailable("the sqlite writer has stopped".into());
        let (reply, answer) = oneshot::channel();
        self.jobs
            .send(Job::Write {
                task: Box::new(task),
                reply,
            })
            .map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }

    /// Lets the writes already queued finish, empties the log into the database file, and
    /// waits for the writer's threads to end. Later writes answer `Unavailable`.
    pub fn shutdown(&self) {
        let _ = self.jobs.send(Job::Stop);
        self.thread.join();
    }
}

fn run(
    conn: &mut SqliteConnection,
    queue: &mpsc::Receiver<Job>,
    log: &mut Log,
    metrics: &StorageMetrics,
    last_failure: &LastFailure,
) {
    let mut stopping = false;
    while !stopping {
        let Ok(first) = queue.recv() else { break };
        let mut batch = Vec::new();
        for job in std::iter::once(first).chain(std::iter::from_fn(|| queue.try_recv().ok())) {
            match job {
                // A caller that gave up (its request timed out) is not written for: it was
                // told the write may not have happened, and should not find it happened later.
                Job::Write { reply, .. } if reply.is_closed() => {}
                Job::Write { task, reply } => batch.push((*task, reply)),
                Job::Stop => {
                    stopping = true;
                    break;
                }
            }
            if batch.len() >= MAX_BATCH {
                break;
            }
        }
        if batch.is_empty() {
            continue;
        }
        let (tasks, replies): (Vec<Task>, Vec<_>) = batch.into_iter().unzip();
        metrics.commit_batch.observe(tasks.len() as f64);
        let results = execute(conn, &tasks);
        last_failure.note(&results);
        for (reply, result) in replies.into_iter().zip(results) {
            // A caller that gave up (its request was dropped) no longer listens.
            let _ = reply.send(result);
        }
        log.reset_if_large(conn);
    }
}

/// The writer's side of keeping the write-ahead log bounded.
struct Log {
    /// The log's file, `<database>-wal`.
    path: PathBuf,
    /// Asks the checkpoint thread to copy the log now, with the request's number.
    requests: mpsc::Sender<u64>,
    /// Says which request's copy is done.
    copies: mpsc::Receiver<u64>,
    /// The copy asked for and not yet reported done.
    asked: Option<Asked>,
    /// Requests made so far.
    numbered: u64,
    /// Until when no reset is tried, after one that readers kept from the log.
    resting_until: Option<std::time::Instant>,
    /// Resets in a row that readers kept from the log (or that failed).
    kept: u32,
}

impl Log {
    /// The writer's side for the log at `path`, talking to the checkpoint thread through
    /// `requests` and `copies`; no copy asked for yet.
    fn new(path: PathBuf, requests: mpsc::Sender<u64>, copies: mpsc::Receiver<u64>) -> Self {
        Log {
            path,
            requests,
            copies,
            asked: None,
            numbered: 0,
            resting_until: None,
            kept: 0,
        }
    }

    /// Resets the log once it has grown past [`WAL_RESET_BYTES`], in two steps so the writer
    /// stops only briefly. First the checkpoint thread copies the log into the database file
    /// while batches go on (up to [`WAL_RESET_ROUNDS`] times, while more than
    /// [`WAL_RESET_LEFT_BYTES`] was committed during a copy); then the writer resets the log
    /// (a RESTART checkpoint): no write runs meanwhile, but only what was committed during the
    /// last copy is left to copy and sync. Should the log reach [`WAL_RESET_BYTES`] +
    /// [`WAL_RESET_SLACK_BYTES`] first (a copy held up by a long read, a slow disk), the
    /// writer waits for the copy under way and resets at once. A reset readers keep from the
    /// log (or that fails) is tried again after a pause (see [`WAL_RESET_RETRY`]), not at the
    /// next batch.
    fn reset_if_large(&mut self, conn: &mut SqliteConnection) {
        if self
            .resting_until
            .is_some_and(|until| std::time::Instant::now() < until)
        {
            return;
        }
        let size = std::fs::metadata(&self.path).map_or(0, |m| m.len());
        if !self.due(size) {
            return;
        }
        let done = match restart_log(conn) {
            Ok(None) => true,
            // SQLite says "busy" in the checkpoint's row, not as an error: readers still on
            // the log after the reset's wait, or a copy under way. The log stays as it is.
            Ok(Some(pages)) => {
                tracing::warn!(
                    wal_bytes = size,
                    wal_pages = pages,
                    "could not reset the write-ahead log: busy (a long read holds it); trying again later"
                );
                false
            }
            Err(e) => {
                tracing::warn!(error = %e, wal_bytes = size, "could not reset the write-ahead log");
                false
            }
        };
        self.kept = if done { 0 } else { self.kept + 1 };
        self.resting_until = (!done).then(|| std::time::Instant::now() + self.pause());
        self.asked = None;
    }

    /// The pause before the next reset after [`Log::kept`] kept ones in a row.
    fn pause(&self) -> std::time::Duration {
        let doublings = self.kept.saturating_sub(1).min(5);
        (WAL_RESET_RETRY * 2_u32.pow(doublings)).min(WAL_RESET_MAX_RETRY)
    }

    /// Whether the log, now `size` bytes, is to be reset now. Asks the checkpoint thread for
    /// copies as needed.
    fn due(&mut self, size: u64) -> bool {
        if size <= WAL_RESET_BYTES {
            // Never past the threshold, or SQLite restarted the log itself (a copy reached
            // its end while no write ran) and cut the file back: a copy asked for is no
            // longer needed, and its report, if it comes, is for no one.
            self.asked = None;
            return false;
        }
        let Some(asked) = self.asked else {
            // A checkpoint thread that has stopped cannot be asked: reset at once.
            return !self.ask(size, 1);
        };
        let past_slack = size > WAL_RESET_BYTES + WAL_RESET_SLACK_BYTES;
        if !self.copies.try_iter().any(|done| done == asked.number) {
            if !past_slack {
                return false;
            }
            // Grown too far: let the copy under way end (the reset could not run beside
            // it), then reset.
            while let Ok(done) = self.copies.recv() {
                if done == asked.number {
                    break;
                }
            }
            return true;
        }
        if size.saturating_sub(asked.size) > WAL_RESET_LEFT_BYTES
            && asked.round < WAL_RESET_ROUNDS
            && !past_slack
        {
            // Much was committed during the copy: copy that too before stopping.
            return !self.ask(size, asked.round + 1);
        }
        true
    }

    /// Asks the checkpoint thread for a copy of the log, now `size` bytes long; false if the
    /// thread has stopped.
    fn ask(&mut self, size: u64, round: u32) -> bool {
        self.numbered += 1;
        let number = self.numbered;
        self.asked = self.requests.send(number).is_ok().then_some(Asked {
            number,
            size,
            round,
        });
        self.asked.is_some()
    }
}

/// Resets the log (a RESTART checkpoint), waiting up to [`WAL_RESET_WAIT_MS`] for readers
/// still on it: `None` once done, or the log's size in pages when SQLite was kept from it
/// (busy). The connection's busy timeout is set back after.
fn restart_log(conn: &mut SqliteConnection) -> QueryResult<Option<i64>> {
    conn.batch_execute(&format!("PRAGMA busy_timeout = {WAL_RESET_WAIT_MS}"))?;
    let restarted = checkpoint(conn, "RESTART");
    let restore = format!("PRAGMA busy_timeout = {}", super::BUSY_TIMEOUT_MS);
    if let Err(e) = conn.batch_execute(&restore) {
        // (Setting it does no I/O: this is not expected.)
        tracing::error!(
            error = %e,
            "could not set the writer's busy timeout back; writes give up on other processes' locks after {WAL_RESET_WAIT_MS} ms"
        );
    }
    restarted
}

/// A checkpoint of `mode` (RESTART, TRUNCATE): `None` once done, or the log's size in pages
/// when SQLite was kept from it (busy), which it says in the checkpoint's row, not as an error.
fn checkpoint(conn: &mut SqliteConnection, mode: &'static str) -> QueryResult<Option<i64>> {
    #[derive(diesel::QueryableByName)]
    struct Checkpoint {
        #[diesel(sql_type = diesel::sql_types::Integer)]
        busy: i32,
        #[diesel(sql_type = diesel::sql_types::Integer)]
        log: i32,
    }
    let row = diesel::sql_query(format!("PRAGMA wal_checkpoint({mode})"))
        .get_result::<Checkpoint>(conn)?;
    Ok((row.busy != 0).then_some(i64::from(row.log)))
}

/// The checkpoint thread: copies the log into the database file once a second, and at once
/// when the writer asks (then reports the request's number when done), until the writer is
/// gone. Passive: it copies what no reader still needs and never blocks the writer.
fn copy_log(
    conn: &mut SqliteConnection,
    requested: &mpsc::Receiver<u64>,
    copied: &mpsc::Sender<u64>,
) {
    loop {
        let asked = match requested.recv_timeout(CHECKPOINT_EVERY) {
            Ok(request) => Some(request),
            Err(mpsc::RecvTimeoutError::Timeout) => None,
            Err(mpsc::RecvTimeoutError::Disconnected) => return,
        };
        if let Err(e) = conn.batch_execute("PRAGMA wal_checkpoint(PASSIVE)") {
            // The writer's reset copies what this could not; a disk error shows here first.
            tracing::warn!(error = %e, "could not copy the write-ahead log");
        }
        if let Some(request) = asked
            && copied.send(request).is_err()
        {
            return;
        }
    }
}

/// A copy the writer asked the checkpoint thread for.
#[derive(Debug, Clone, Copy)]
struct Asked {
    /// The request's number, which the thread's report repeats.
    number: u64,
    /// The log's size when it was asked for.
    size: u64,
    /// How many copies this reset has asked for, this one included.
    round: u32,
}

type Outcomes = Vec<Result<Written, RepositoryError>>;

/// Runs a batch in one transaction; the results line up with the tasks.
fn execute(conn: &mut SqliteConnection, batch: &[Task]) -> Outcomes {
    let failed = match attempt(conn, batch, false) {
        Ok(results) => return results,
        // A write failed: run the batch again, isolating each write in a savepoint.
        Err(Failure::Write(_)) => match attempt(conn, batch, true) {
            Ok(results) => return results,
            Err(Failure::Write(e) | Failure::Transaction(e)) => e,
        },
        // The transaction itself failed: trying again at once would fail the same way.
        Err(Failure::Transaction(e)) => e,
    };
    // A disk that is full, a file that became read-only, a lock held too long. Nothing of
    // the batch is to be seen, and its writes answer 503, which promises nothing either way:
    // a COMMIT that failed on an I/O error after its frames reached the log (a sync that
    // failed) may still be replayed from the log at the next start.
    tracing::warn!(error = %failed, writes = batch.len(), "sqlite batch failed");
    let message = failed.to_string();
    batch
        .iter()
        .map(|_| Err(RepositoryError::Unavailable(message.clone().into())))
        .collect()
}

/// Runs `task`; a panic in it (a bug in a write) is its failure, so that the batch is run
/// again with savepoints and this write alone fails (`Backend`, 500) while the others commit.
fn run_caught(
    task: &Task,
    conn: &mut SqliteConnection,
    ids: &mut ops::EventIds,
) -> QueryResult<Written> {
    std::panic::catch_unwind(AssertUnwindSafe(|| task.run(conn, ids))).unwrap_or_else(|panic| {
        let message = crate::panic_message(&*panic);
        tracing::error!(
            panic = message,
            "a sqlite write panicked (a bug); it is not written"
        );
        Err(diesel::result::Error::QueryBuilderError(
            format!("a write panicked: {message}").into(),
        ))
    })
}

/// Why a try at a batch failed as a whole.
enum Failure {
    /// `BEGIN` or `COMMIT` (or a savepoint statement) failed.
    Transaction(diesel::result::Error),
    /// A write failed, with no savepoint to contain it.
    Write(diesel::result::Error),
}

/// One try at a batch. Without savepoints, a failing write rolls back everything; with them,
/// a failing write is rolled back alone and reported in its result.
fn attempt(
    conn: &mut SqliteConnection,
    batch: &[Task],
    savepoints: bool,
) -> Result<Outcomes, Failure> {
    if let Err(e) = Sql("BEGIN IMMEDIATE").execute(conn) {
        // A transaction left open (a ROLLBACK that failed on a failing disk) would refuse
        // every later BEGIN: end it, so the next batch can start.
        let _ = Sql("ROLLBACK").execute(conn);
        return Err(Failure::Transaction(e));
    }
    let outcome = (|| {
        // Event ids: read once, written back once, for the whole batch.
        let mut ids = ops::EventIds::read(conn).map_err(Failure::Transaction)?;
        let mut results = Vec::with_capacity(batch.len());
        for task in batch {
            if !savepoints {
                results.push(Ok(run_caught(task, conn, &mut ids).map_err(Failure::Write)?));
                continue;
            }
            conn.batch_execute("SAVEPOINT job")
                .map_err(Failure::Transaction)?;
            let before = ids;
            let result = run_caught(task, conn, &mut ids);
            let end = if result.is_ok() {
                "RELEASE job"
            } else {
                // Its events were rolled back: so are its ids, so the log has no gap.
                ids = before;
                "ROLLBACK TO job; RELEASE job"
            };
            if let Err(e) = conn.batch_execute(end) {
                // SQLite rolls the whole transaction back on some failures (a full disk), and
                // then the savepoint is gone too: the write's own error says why.
                let gone = e.to_string().contains("no such savepoint");
                return Err(Failure::Transaction(match result {
                    Err(cause) if gone => cause,
                    _ => e,
                }));
            }
            results.push(result.map_err(crate::storage::classify));
        }
        ids.save(conn).map_err(Failure::Transaction)?;
        Sql("COMMIT").execute(conn).map_err(Failure::Transaction)?;
        Ok(results)
    })();
    if outcome.is_err() {
        let _ = Sql("ROLLBACK").execute(conn);
    }
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::write::Commit;
    use diesel::Connection;
    use diesel_migrations::MigrationHarness;
    use orchestrator_core::{
        Description, FeatureId, Metadata, TransitionContext, Trigger, Workflow, WorkflowState,
    };

    fn create(name: &str) -> (Workflow, Write) {
        let (workflow, first) = Workflow::start(
            FeatureId::parse(name).unwrap(),
            Description::parse("d").unwrap(),
            Metadata::default(),
            TransitionContext::at(chrono::Utc::now()),
        );
        let write = Write::create(&workflow, &first, None);
        (workflow, write)
    }

    /// An advance by `trigger`, judged in the writer's transaction.
    fn advance(name: &str, trigger: Trigger) -> Task {
        let judge = move |current: &Workflow| {
            let transition = current.apply(trigger, TransitionContext::at(chrono::Utc::now()))?;
            Ok(orchestrator_core::Decision::of(current, transition))
        };
        Task::Advance(FeatureId::parse(name).unwrap(), Box::new(judge))
    }

    /// The workflow an advance stored, or why it was refused.
    fn judged(
        result: &Result<Written, RepositoryError>,
    ) -> &Result<Workflow, orchestrator_core::Error> {
        match result {
            Ok(Written::Judged(outcome)) => outcome,
            other => panic!("not judged: {other:?}"),
        }
    }

    fn commit(workflow: &Workflow, expected: i64) -> Write {
        let transition = workflow
            .apply(
                Trigger::AgentComplete,
                TransitionContext::at(chrono::Utc::now()),
            )
            .unwrap();
        let mut next = workflow.clone();
        next.record(&transition);
        let mut commit = Commit::new(next.version() - 1, &next, &transition);
        commit.expected = expected;
        Write::Commit(commit)
    }

    /// The writer's side with no copy asked for, and the checkpoint thread's ends of its
    /// channels.
    fn log() -> (Log, mpsc::Receiver<u64>, mpsc::Sender<u64>) {
        log_at(PathBuf::from("unused"))
    }

    /// [`log`] for the log file at `path`.
    fn log_at(path: PathBuf) -> (Log, mpsc::Receiver<u64>, mpsc::Sender<u64>) {
        let (requests, requested) = mpsc::channel();
        let (copied, copies) = mpsc::channel();
        (Log::new(path, requests, copies), requested, copied)
    }

    const MIB: u64 = 1024 * 1024;

    #[test]
    fn the_writer_resets_the_log_once_the_checkpoint_thread_has_copied_nearly_all_of_it() {
        let (mut log, requested, copied) = log();
        let past = WAL_RESET_BYTES + MIB;
        assert!(!log.due(WAL_RESET_BYTES), "not past the threshold");
        assert!(requested.try_recv().is_err());
        // Past the reset size: a copy is asked for, and batches go on meanwhile.
        assert!(!log.due(past));
        let request = requested.try_recv().unwrap();
        assert!(!log.due(past + 100), "the copy is not done yet");
        assert!(requested.try_recv().is_err(), "one copy at a time");
        // Little was committed during the copy: reset now.
        copied.send(request).unwrap();
        assert!(log.due(past + 100));
    }

    #[test]
    fn much_committed_during_a_copy_is_copied_again_but_at_most_three_times() {
        let (mut log, requested, copied) = log();
        let mut size = WAL_RESET_BYTES + MIB;
        assert!(!log.due(size));
        for round in 2..=WAL_RESET_ROUNDS {
            size += 2 * WAL_RESET_LEFT_BYTES;
            copied.send(requested.try_recv().unwrap()).unwrap();
            assert!(!log.due(size), "round {round} copies again");
        }
        size += 2 * WAL_RESET_LEFT_BYTES;
        copied.send(requested.try_recv().unwrap()).unwrap();
        assert!(log.due(size), "the last round resets whatever is left");
        assert!(requested.try_recv().is_err());
    }

    #[test]
    fn a_log_past_the_slack_is_reset_once_the_copy_under_way_ends() {
        let (mut log, requested, copied) = log();
        assert!(!log.due(WAL_RESET_BYTES + 1));
        let request = requested.recv().unwrap();
        let reporter = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(20));
            copied.send(request).unwrap();
            copied
        });
        // Whether the report is in yet or not: no further copy past the slack, a reset.
        assert!(log.due(WAL_RESET_BYTES + WAL_RESET_SLACK_BYTES + 1));
        assert!(requested.try_recv().is_err());
        // It took the report: none is left for a later reset to mistake for its own.
        let _copied = reporter.join().unwrap();
        assert!(log.copies.try_recv().is_err());
    }

    #[test]
    fn a_report_for_a_log_that_restarted_on_its_own_is_not_taken_for_a_later_copy() {
        let (mut log, requested, copied) = log();
        assert!(!log.due(WAL_RESET_BYTES + 1));
        let old = requested.try_recv().unwrap();
        // The copy reached the log's end and SQLite restarted it: the file is cut back.
        copied.send(old).unwrap();
        assert!(!log.due(WAL_RESET_BYTES));
        // Past the threshold again: a new copy is asked for, and the old report is not it.
        assert!(!log.due(WAL_RESET_BYTES + 1));
        let new = requested.try_recv().unwrap();
        assert_ne!(new, old);
        assert!(
            !log.due(WAL_RESET_BYTES + 2),
            "the new copy is not done yet"
        );
        copied.send(new).unwrap();
        assert!(log.due(WAL_RESET_BYTES + 2));
    }

    #[test]
    fn without_a_checkpoint_thread_the_writer_resets_at_once() {
        let (mut log, requested, _copied) = log();
        drop(requested);
        assert!(log.due(WAL_RESET_BYTES + 1));
    }

    fn database() -> SqliteConnection {
        let mut conn = SqliteConnection::establish(":memory:").unwrap();
        conn.run_pending_migrations(super::super::MIGRATIONS)
            .unwrap();
        conn
    }

    fn count(conn: &mut SqliteConnection, table: &str) -> i64 {
        use diesel::RunQueryDsl;
        #[derive(diesel::QueryableByName)]
        struct Count {
            #[diesel(sql_type = diesel::sql_types::BigInt)]
            n: i64,
        }
        diesel::sql_query(format!("SELECT COUNT(*) AS n FROM {table}"))
            .get_result::<Count>(conn)
            .unwrap()
            .n
    }

    #[test]
    fn refused_writes_in_a_batch_fail_alone_and_the_rest_commit() {
        let mut conn = database();
        let (a, create_a) = create("a");
        let (_, create_a_again) = create("a");
        let (_, create_b) = create("b");
        let batch = [
            create_a,
            create_a_again,
            commit(&a, 1),
            commit(&a, 1), // the same version again: loses
            create_b,
        ]
        .map(Task::Write);
        let results = execute(&mut conn, &batch);
        assert!(matches!(results[0], Ok(Written::Done)));
        assert!(matches!(
            results[1],
            Ok(Written::Refused(RepositoryError::AlreadyExists(_)))
        ));
        assert!(matches!(results[2], Ok(Written::Done)));
        assert!(matches!(
            results[3],
            Ok(Written::Refused(RepositoryError::VersionConflict {
                expected: 1,
                actual: 2
            }))
        ));
        assert!(matches!(results[4], Ok(Written::Done)));
        assert_eq!(count(&mut conn, "workflows"), 2);
        assert_eq!(count(&mut conn, "transitions"), 3);
    }

    #[test]
    fn a_write_that_panics_fails_alone_and_the_writer_goes_on() {
        let mut conn = database();
        let batch = [
            Task::Write(create("a").1),
            Task::Panic,
            Task::Write(create("b").1),
        ];
        let results = execute(&mut conn, &batch);
        assert!(matches!(results[0], Ok(Written::Done)), "{results:?}");
        assert!(
            matches!(results[1], Err(RepositoryError::Backend(_))),
            "{results:?}"
        );
        assert!(matches!(results[2], Ok(Written::Done)), "{results:?}");
        assert_eq!(count(&mut conn, "workflows"), 2);
        // No transaction was left open: the next batch begins and commits.
        let results = execute(&mut conn, &[Task::Write(create("c").1)]);
        assert!(matches!(results[0], Ok(Written::Done)), "{results:?}");
        assert_eq!(count(&mut conn, "workflows"), 3);
    }

    /// A database in WAL mode (in the directory returned) whose writer, waiting
    /// `busy_timeout_ms` for locks, wrote to the log after a reader began a read it holds.
    fn log_a_read_holds(
        busy_timeout_ms: u32,
    ) -> (tempfile::TempDir, SqliteConnection, SqliteConnection) {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("db.sqlite").to_string_lossy().into_owned();
        let mut writer = SqliteConnection::establish(&target).unwrap();
        writer
            .batch_execute(&format!(
                "PRAGMA journal_mode = WAL; PRAGMA busy_timeout = {busy_timeout_ms};
                 CREATE TABLE t (x); INSERT INTO t VALUES (1);"
            ))
            .unwrap();
        let mut reader = SqliteConnection::establish(&target).unwrap();
        reader.batch_execute("BEGIN; SELECT * FROM t;").unwrap();
        writer.batch_execute("INSERT INTO t VALUES (2)").unwrap();
        (dir, writer, reader)
    }

    #[test]
    fn a_reset_a_reader_keeps_from_the_log_says_so() {
        let (_dir, mut writer, mut reader) = log_a_read_holds(0);
        assert!(restart_log(&mut writer).unwrap().is_some(), "busy");
        reader.batch_execute("COMMIT").unwrap();
        assert_eq!(restart_log(&mut writer).unwrap(), None, "done");
    }

    #[test]
    fn a_reset_a_long_read_holds_up_stops_the_writer_briefly_and_rests_before_the_next() {
        // A backup's (or a shell's) read, held.
        let (dir, mut writer, _reader) = log_a_read_holds(super::super::BUSY_TIMEOUT_MS);
        // A log as large as the reset asks for (sparse: nothing is written).
        let large = dir.path().join("large-wal");
        let file = std::fs::File::create(&large).unwrap();
        file.set_len(WAL_RESET_BYTES + MIB).unwrap();
        let (mut log, requested, copied) = log_at(large);
        log.reset_if_large(&mut writer);
        copied.send(requested.try_recv().unwrap()).unwrap();

        let began = std::time::Instant::now();
        log.reset_if_large(&mut writer);
        let stopped = began.elapsed();
        assert!(
            stopped
                < std::time::Duration::from_millis(u64::from(super::super::BUSY_TIMEOUT_MS) / 2),
            "the writer waited {stopped:?}, not its busy timeout"
        );
        assert!(
            log.resting_until.is_some(),
            "the reset was kept from the log"
        );
        // The next batches neither ask for a copy nor try again meanwhile.
        log.reset_if_large(&mut writer);
        assert!(requested.try_recv().is_err());
        // Once the pause is over, the next batch goes for a reset again (a copy first).
        log.resting_until = Some(std::time::Instant::now());
        log.reset_if_large(&mut writer);
        assert!(requested.try_recv().is_ok(), "tried again");
        // And the connection waits for other locks as long as before.
        let timeout: i64 = diesel::sql_query("PRAGMA busy_timeout")
            .get_result::<BusyTimeout>(&mut writer)
            .unwrap()
            .timeout;
        assert_eq!(timeout, i64::from(super::super::BUSY_TIMEOUT_MS));
    }

    #[test]
    fn the_pause_after_kept_resets_doubles_from_a_quarter_second_up_to_five() {
        let (mut log, _, _) = log();
        let pauses: Vec<u128> = (1..=8)
            .map(|kept| {
                log.kept = kept;
                log.pause().as_millis()
            })
            .collect();
        assert_eq!(pauses, [250, 500, 1000, 2000, 4000, 5000, 5000, 5000]);
    }

    #[derive(diesel::QueryableByName)]
    struct BusyTimeout {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        timeout: i64,
    }

    #[test]
    fn a_batch_begins_after_a_transaction_left_open() {
        let mut conn = database();
        Sql("BEGIN").execute(&mut conn).unwrap();
        let first = execute(&mut conn, &[Task::Write(create("a").1)]);
        assert!(first[0].is_err(), "BEGIN inside a transaction fails");
        let second = execute(&mut conn, &[Task::Write(create("a").1)]);
        assert!(matches!(second[0], Ok(Written::Done)), "{second:?}");
        assert_eq!(count(&mut conn, "workflows"), 1);
    }

    #[test]
    fn a_write_the_storage_refuses_is_remembered_for_a_while_and_a_refusal_is_not() {
        let mut conn = database();
        let last = LastFailure::default();
        let window = Duration::from_secs(60);
        let creates = |from: usize, to: usize| -> Vec<Task> {
            (from..to)
                .map(|n| Task::Write(create(&format!("w{n}")).1))
                .collect()
        };
        last.note(&execute(&mut conn, &creates(0, 10)));
        // A duplicate is refused by a rule: an answer, not a storage failure.
        last.note(&execute(&mut conn, &creates(0, 1)));
        assert_eq!(last.within(window), None);

        // The database may not grow any more, as on a full disk.
        #[derive(diesel::QueryableByName)]
        struct Pages {
            #[diesel(sql_type = diesel::sql_types::BigInt)]
            page_count: i64,
        }
        let pages = diesel::sql_query("PRAGMA page_count")
            .get_result::<Pages>(&mut conn)
            .unwrap()
            .page_count;
        conn.batch_execute(&format!("PRAGMA max_page_count = {pages}"))
            .unwrap();
        let results = execute(&mut conn, &creates(10, 500));
        // SQLite rolled the whole transaction back: the batch failed as a whole.
        assert!(
            results
                .iter()
                .all(|r| matches!(r, Err(RepositoryError::Unavailable(_)))),
            "{:?}",
            results.iter().find(|r| r.is_ok())
        );
        last.note(&results);
        let (ago, message) = last.within(window).expect("the failure is remembered");
        assert!(ago < window);
        // The cause, not the savepoint SQLite dropped with the transaction it rolled back.
        assert!(message.contains("full"), "{message}");
        // Past the window it is forgotten.
        assert_eq!(last.within(Duration::ZERO), None);
    }

    #[test]
    fn a_write_that_fails_is_rolled_back_alone() {
        let mut conn = database();
        let (a, create_a) = create("a");
        let (_, create_b) = create("b");
        // A history row whose seq exists already breaks the primary key: a database error.
        let mut broken = commit(&a, 1);
        if let Write::Commit(commit) = &mut broken {
            commit.history.seq = 1;
        }
        let results = execute(&mut conn, &[create_a, broken, create_b].map(Task::Write));
        assert!(matches!(results[0], Ok(Written::Done)));
        assert!(
            matches!(results[1], Err(RepositoryError::Backend(_))),
            "{:?}",
            results[1]
        );
        assert!(matches!(results[2], Ok(Written::Done)));
        // The broken commit's workflow update was rolled back with it.
        assert_eq!(count(&mut conn, "workflows"), 2);
        assert_eq!(count(&mut conn, "transitions"), 2);
        let version: i64 = {
            use crate::storage::schema::workflows;
            use diesel::prelude::*;
            workflows::table
                .find("a")
                .select(workflows::version)
                .first(&mut conn)
                .unwrap()
        };
        assert_eq!(version, 1);
    }

    #[test]
    fn an_advance_is_judged_on_the_workflow_as_the_batch_left_it() {
        let mut conn = database();
        let (_, create_a) = create("a");
        let batch = [
            Task::Write(create_a),
            advance("a", Trigger::AgentComplete), // PHASE_1 -> GATE_1
            advance("a", Trigger::AgentComplete), // not from GATE_1: refused by the rules
            advance("a", Trigger::HumanApproved), // GATE_1 -> PHASE_2
            advance("missing", Trigger::AgentComplete),
        ];
        let results = execute(&mut conn, &batch);
        let at_gate = judged(&results[1]).as_ref().unwrap();
        assert_eq!(at_gate.state(), WorkflowState::Gate1);
        assert_eq!(at_gate.version(), 2);
        assert!(matches!(
            judged(&results[2]),
            Err(orchestrator_core::Error::Transition(_))
        ));
        let approved = judged(&results[3]).as_ref().unwrap();
        assert_eq!(approved.state(), WorkflowState::Phase2);
        assert_eq!(approved.version(), 3);
        assert!(matches!(
            results[4],
            Ok(Written::Refused(RepositoryError::NotFound(_)))
        ));
        // The refused advance wrote nothing: three transitions, three events.
        assert_eq!(count(&mut conn, "transitions"), 3);
        assert_eq!(count(&mut conn, "events"), 3);
        let stored = ops::get(&mut conn, "a").unwrap().unwrap();
        assert_eq!((stored.state.as_str(), stored.version), ("PHASE_2", 3));
    }

    #[test]
    fn a_judge_that_panics_fails_its_advance_alone() {
        let mut conn = database();
        let (_, create_a) = create("a");
        let panics = Task::Advance(
            FeatureId::parse("a").unwrap(),
            Box::new(|_: &Workflow| panic!("a judge with a bug")),
        );
        let batch = [
            Task::Write(create_a),
            panics,
            advance("a", Trigger::AgentComplete),
        ];
        let results = execute(&mut conn, &batch);
        assert!(
            matches!(
                results[1],
                Ok(Written::Refused(RepositoryError::Backend(_)))
            ),
            "{:?}",
            results[1]
        );
        assert_eq!(judged(&results[2]).as_ref().unwrap().version(), 2);
        assert_eq!(count(&mut conn, "transitions"), 2);
    }

    #[test]
    fn an_advance_in_a_batch_run_again_with_savepoints_is_judged_again() {
        let mut conn = database();
        let (a, create_a) = create("a");
        // A database error (a duplicate history row) makes the writer run the batch again,
        // each task in its own savepoint; the advance after it is judged on that run's read.
        let mut broken = commit(&a, 1);
        if let Write::Commit(commit) = &mut broken {
            commit.history.seq = 1;
        }
        let batch = [
            Task::Write(create_a),
            Task::Write(broken),
            advance("a", Trigger::AgentComplete),
        ];
        let results = execute(&mut conn, &batch);
        assert!(matches!(results[1], Err(RepositoryError::Backend(_))));
        let advanced = judged(&results[2]).as_ref().unwrap();
        assert_eq!(
            (advanced.state(), advanced.version()),
            (WorkflowState::Gate1, 2)
        );
        assert_eq!(count(&mut conn, "transitions"), 2);
    }
}
