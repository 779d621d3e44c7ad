//! Group commit for PostgreSQL: concurrent advances share one statement and one transaction.
//!
//! Every advance is queued here: a compare-and-set already decided (`Commit`), or a decision
//! still to make on the stored workflow (`Judge`). A task takes whatever is waiting (at most
//! one advance per workflow per batch; while another batch is in flight, only once enough
//! are waiting to be worth a statement of their own), reads the workflows the judges need in
//! one query (except those whose row this server wrote last and remembers, `recent`), judges
//! them, and runs every accepted change as one statement: the batch's rows
//! are sent as arrays and unnested, the workflow rows are locked in feature-id order (so two
//! batches, also from two replicas, can never deadlock), each row is updated only if its
//! version is still the expected one, and a history row is inserted for exactly the updates
//! that happened. Each compare-and-set is judged on its own: one caller's conflict never
//! fails another's. A judged advance whose workflow changed between the read and the
//! statement (another batch, another replica) is judged again in a later batch, up to
//! [`MAX_TRIES`] times. Each winner's `workflow.transitioned` event is numbered and inserted
//! by the same statement, which takes the event log's row lock last (see
//! `ops::append_events`). One statement is one transaction, committed before anyone is
//! answered.
//!
//! An approval judged by the gate's rules (`Commit::gated`) is the exception: it does not
//! wait here but runs in a transaction of its own, which locks its workflow row and checks
//! that no consultation blocks the gate before the batch statement commits it alone
//! (`apply_gated`).
//!
//! New workflows wait in the same queue (so a creation and an advance of one workflow never
//! share a batch): a batch's creations run first, as a statement of their own (`creates`),
//! then its advances.
//!
//! The batch statement skips a workflow row another transaction holds locked (an operator's
//! session, a replica whose connection hangs inside a transaction) rather than wait for it:
//! the rest of the batch commits at once, and the advance of that workflow is tried again in
//! a later batch, shortly, until it has waited [`LOCKED_ROW_WAIT`] (then 503). One stuck row
//! so holds up its own advances, not every advance of the server.
//!
//! If the database refuses the statement as a whole (a constraint one advance broke, or a
//! lock it waited for past the statement timeout), each advance of the batch is run again
//! alone, so a failing one fails alone; a statement whose fate is unknown (the connection
//! lost) is not run again.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;

use diesel::pg::Pg;
use diesel::query_builder::AstPass;
use diesel::result::QueryResult;
use diesel::sql_types::{Array, BigInt, Bool, Nullable, Text};
use diesel::{QueryDsl, SelectableHelper};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use orchestrator_core::{FeatureId, Judge, RepositoryError};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
use tokio::time::{Duration, Instant};

use super::creates::{self, Creation};
use super::recent::{Recent, Since};
use super::{PgPool, Prepared, Statement, bind_array, column, ops, run};
use crate::storage::StorageMetrics;
use crate::storage::models::{ReceiptRow, TransitionRow, WorkflowRow};
use crate::storage::queries;
use crate::storage::write::{Commit, Verdict, Written, conflict, judge_advance, taken_over};

/// Most advances one statement takes.
const MAX_BATCH: usize = 256;
/// Batches running at once. Two let one batch be built and sent while the previous one waits
/// for its commit to reach the disk (the second once it holds [`SECOND_BATCH_MIN`] writes).
const IN_FLIGHT: usize = 2;
/// Fewest writes (advances, new workflows) a batch starts with while another batch is in
/// flight. Each batch costs the database a fixed amount (starting the statement's plan, a
/// commit) that a lone advance would pay alone: measured at 32 clients, letting the second
/// batch go with whatever was waiting (often one advance) cost a quarter of the throughput
/// (docs/PERFORMANCE.md).
const SECOND_BATCH_MIN: usize = 16;
/// Most batches a judged advance takes part in: past this many lost compare-and-sets (its
/// workflow changed under it each time) it answers the last conflict.
pub const MAX_TRIES: u32 = 8;
/// Longest an advance waits, batch after batch, for a workflow row another transaction holds
/// locked (as long as a statement may wait for a lock): then it answers 503.
pub const LOCKED_ROW_WAIT: Duration = super::STATEMENT_TIMEOUT;

/// A write waiting for a batch.
enum Task {
    /// An advance of an existing workflow.
    Advance(Advance),
    /// A new workflow (a batch of creations runs as a statement of its own, `creates`).
    Create(Box<Creation>),
}

/// An advance waiting for a batch.
enum Advance {
    /// A compare-and-set decided by the caller.
    Commit(Box<Commit>),
    /// A decision to make on the workflow as read for the batch; `tries` batches so far.
    Judge {
        feature_id: FeatureId,
        judge: Judge,
        tries: u32,
    },
}

impl Task {
    fn feature_id(&self) -> &FeatureId {
        match self {
            Task::Advance(Advance::Commit(commit)) => &commit.feature_id,
            Task::Advance(Advance::Judge { feature_id, .. }) => feature_id,
            Task::Create(creation) => &creation.feature_id,
        }
    }
}

/// A write (`Task` in the queue; one part of a batch's writes once the batch splits them) and
/// who waits for its answer.
struct Job<T = Task> {
    task: T,
    reply: oneshot::Sender<Result<Written, RepositoryError>>,
    /// Since when its workflow's row has been found locked by another transaction.
    locked_since: Option<Instant>,
}

impl<T> Job<T> {
    fn new(task: T, reply: oneshot::Sender<Result<Written, RepositoryError>>) -> Self {
        Job {
            task,
            reply,
            locked_since: None,
        }
    }
}

/// The writes of one kind, which a batch runs as a statement of their own.
trait Part: Sized {
    /// Runs `batch` as one statement; the steps line up with it. The rows it writes are
    /// remembered in `recent` (unless it started over `since` the batch began).
    async fn decide(
        conn: &mut AsyncPgConnection,
        batch: &[Job<Self>],
        recent: &Recent,
        since: Since,
    ) -> QueryResult<Vec<Step>>;

    /// What to queue again for a write whose workflow changed under it, if it has tries left.
    fn again(self) -> Option<Task>;

    /// The write as the queue holds it.
    fn task(self) -> Task;
}

impl Part for Box<Creation> {
    async fn decide(
        conn: &mut AsyncPgConnection,
        batch: &[Job<Self>],
        recent: &Recent,
        since: Since,
    ) -> QueryResult<Vec<Step>> {
        let creations: Vec<&Creation> = batch.iter().map(|job| &*job.task).collect();
        let results = creates::apply(conn, &creations).await?;
        for (creation, result) in creations.iter().zip(&results) {
            if matches!(result, Written::Done) {
                recent.wrote(creation.row.clone(), since);
            }
        }
        Ok(results.into_iter().map(Step::Answer).collect())
    }

    fn again(self) -> Option<Task> {
        None
    }

    fn task(self) -> Task {
        Task::Create(self)
    }
}

impl Part for Advance {
    async fn decide(
        conn: &mut AsyncPgConnection,
        batch: &[Job<Self>],
        recent: &Recent,
        since: Since,
    ) -> QueryResult<Vec<Step>> {
        decide_advances(conn, batch, recent, since).await
    }

    /// A judged advance is judged again, up to [`MAX_TRIES`] batches; a caller's own
    /// compare-and-set never is.
    fn again(self) -> Option<Task> {
        match self {
            Advance::Judge {
                feature_id,
                judge,
                tries,
            } if tries + 1 < MAX_TRIES => Some(Task::Advance(Advance::Judge {
                feature_id,
                judge,
                tries: tries + 1,
            })),
            _ => None,
        }
    }

    fn task(self) -> Task {
        Task::Advance(self)
    }
}

/// The queue of advances waiting to be committed.
#[derive(Clone)]
pub struct Committer {
    jobs: mpsc::UnboundedSender<Job>,
    recent: Arc<Recent>,
}

impl Committer {
    /// Starts the task that commits batches on connections of `pool`, remembering the rows
    /// it writes in `recent`.
    pub fn start(pool: PgPool, metrics: Arc<StorageMetrics>, recent: Arc<Recent>) -> Self {
        let (jobs, queue) = mpsc::unbounded_channel();
        // Weak: judged advances that lost go back into the queue, but the queue ends once
        // the last `Committer` is gone.
        tokio::spawn(batches(
            pool,
            metrics,
            recent.clone(),
            queue,
            jobs.downgrade(),
        ));
        Committer { jobs, recent }
    }

    /// Forgets the row remembered for `feature_id`: a write outside the queue changes it.
    pub fn forget(&self, feature_id: &FeatureId) {
        self.recent.forget(feature_id.as_str());
    }

    /// Commits `commit` in the next batch; answers once the batch is committed.
    pub async fn submit(&self, commit: Commit) -> Result<Written, RepositoryError> {
        self.queue(Task::Advance(Advance::Commit(Box::new(commit))))
            .await
    }

    /// Creates a workflow in the next batch: `Done`, or `AlreadyExists`.
    pub async fn create(&self, creation: Creation) -> Result<Written, RepositoryError> {
        self.queue(Task::Create(Box::new(creation))).await
    }

    /// Judges an advance of `feature_id` on the workflow as the next batch reads it, and
    /// commits what `judge` decided in that batch: `Judged`, or a refusal.
    pub async fn advance(
        &self,
        feature_id: FeatureId,
        judge: Judge,
    ) -> Result<Written, RepositoryError> {
        self.queue(Task::Advance(Advance::Judge {
            feature_id,
            judge,
            tries: 0,
        }))
        .await
    }

    /// Whether the task that commits the batches still runs (if it ended, every advance and
    /// start would answer 503: the health check says so too).
    pub fn running(&self) -> bool {
        !self.jobs.is_closed()
    }

    async fn queue(&self, task: Task) -> Result<Written, RepositoryError> {
        let stopped = || RepositoryError::Unavailable("the commit queue has stopped".into());
        let (reply, answer) = oneshot::channel();
        self.jobs
            .send(Job::new(task, reply))
            .map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

async fn batches(
    pool: PgPool,
    metrics: Arc<StorageMetrics>,
    recent: Arc<Recent>,
    mut queue: mpsc::UnboundedReceiver<Job>,
    requeue: mpsc::WeakUnboundedSender<Job>,
) {
    let slots = Arc::new(Semaphore::new(IN_FLIGHT));
    // Told each time a batch ends, so a small batch waiting for company can go.
    let done = Arc::new(Notify::new());
    // Advances that found their workflow already in the batch being built: the next batch's.
    let mut waiting: VecDeque<Job> = VecDeque::new();
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        if waiting.is_empty() {
            match queue.recv().await {
                Some(job) => waiting.push_back(job),
                None => return,
            }
        }
        while let Ok(job) = queue.try_recv() {
            waiting.push_back(job);
        }
        // While another batch is in flight, a small one would pay for a statement and a
        // commit of its own: it gathers more, or goes once the other batch is done.
        while !goes_now(
            waiting.len(),
            (IN_FLIGHT - 1).saturating_sub(slots.available_permits()),
        ) {
            tokio::select! {
                job = queue.recv() => match job {
                    Some(job) => waiting.push_back(job),
                    None => break,
                },
                () = done.notified() => {}
            }
            while let Ok(job) = queue.try_recv() {
                waiting.push_back(job);
            }
        }
        let mut seen = HashSet::new();
        let mut batch = Vec::new();
        let mut later = VecDeque::new();
        for job in waiting.drain(..) {
            // A caller that gave up (its request timed out) is not written for: it was told
            // the write may not have happened, and should not find it happened much later.
            if job.reply.is_closed() {
                continue;
            }
            if batch.len() < MAX_BATCH && seen.insert(job.task.feature_id().clone()) {
                batch.push(job);
            } else {
                later.push_back(job);
            }
        }
        waiting = later;
        if batch.is_empty() {
            continue;
        }
        let pool = pool.clone();
        let metrics = metrics.clone();
        let recent = recent.clone();
        let requeue = requeue.clone();
        let running = Running {
            slot: Some(slot),
            done: done.clone(),
        };
        tokio::spawn(async move {
            commit_batch(&pool, &metrics, &recent, batch, &requeue).await;
            drop(running);
        });
    }
}

/// A batch's place among those in flight: given back when the batch ends (also if its task
/// panics), and then a batch waiting for company is told it may go.
struct Running {
    slot: Option<OwnedSemaphorePermit>,
    done: Arc<Notify>,
}

impl Drop for Running {
    fn drop(&mut self) {
        drop(self.slot.take());
        self.done.notify_one();
    }
}

/// Whether a batch of the `waiting` advances starts now, with `in_flight` other batches
/// running: at once when none is, otherwise only once it is worth a statement of its own.
/// (A batch that waits goes anyway when the one in flight ends.)
fn goes_now(waiting: usize, in_flight: usize) -> bool {
    in_flight == 0 || waiting >= SECOND_BATCH_MIN
}

/// What a batch decided for one advance.
enum Step {
    /// The answer.
    Answer(Written),
    /// A judged advance whose workflow changed under it: judge it again.
    Again(RepositoryError),
    /// An advance whose workflow's row another transaction holds locked: try it again shortly.
    Locked,
}

/// Commits one batch and answers each of its callers: its creations as one statement, then
/// its advances as another.
async fn commit_batch(
    pool: &PgPool,
    metrics: &StorageMetrics,
    recent: &Recent,
    batch: Vec<Job>,
    requeue: &mpsc::WeakUnboundedSender<Job>,
) {
    let mut creations = Vec::new();
    let mut advances = Vec::new();
    for Job {
        task,
        reply,
        locked_since,
    } in batch
    {
        match task {
            Task::Create(task) => creations.push(Job {
                task,
                reply,
                locked_since,
            }),
            Task::Advance(task) => advances.push(Job {
                task,
                reply,
                locked_since,
            }),
        }
    }
    if !creations.is_empty() {
        commit_part(pool, metrics, recent, creations, requeue).await;
    }
    if !advances.is_empty() {
        commit_part(pool, metrics, recent, advances, requeue).await;
    }
}

/// Commits a batch's writes of one kind as one statement; a statement the database refused
/// is run again for each of its jobs alone.
async fn commit_part<T: Part>(
    pool: &PgPool,
    metrics: &StorageMetrics,
    recent: &Recent,
    batch: Vec<Job<T>>,
    requeue: &mpsc::WeakUnboundedSender<Job>,
) {
    metrics.commit_batch.observe(batch.len() as f64);
    // Before a connection is taken: one opened to another server starts the memory over.
    let since = recent.since();
    let mut refused = false;
    // Whether the statement was sent at all (not when no connection was free).
    let mut sent = false;
    let outcome = run(pool, metrics, async |conn| {
        sent = true;
        let decided = T::decide(conn, &batch, recent, since).await;
        refused = decided.as_ref().is_err_and(super::answered_with_an_error);
        decided
    })
    .await;
    match outcome {
        // The database refused the statement, so it wrote nothing: a constraint one advance
        // broke, or a wait for a lock that ran out of time (an idempotency key's, the event
        // log's: workflow rows are skipped, not waited for), a serialization failure.
        // Each is run alone, so that one fails alone. A statement whose fate is unknown (the
        // connection lost, the answer not in time, an answer that did not decode after the
        // commit) is not run again: it may have landed.
        Err(_) if batch.len() > 1 && refused => {
            for job in batch {
                // Its caller gave up meanwhile (the first try waited out a timeout): not
                // written for, as in `batches`.
                if job.reply.is_closed() {
                    continue;
                }
                let one = std::slice::from_ref(&job);
                let outcome = run(pool, metrics, async |conn| {
                    T::decide(conn, one, recent, since).await
                })
                .await;
                reply(vec![job], outcome, requeue, metrics);
            }
        }
        outcome => {
            // The database stopped answering a statement sent to it: it may come back as
            // another (a failover to a standby that missed the last commits, a restore), where
            // a remembered row's version may name another row. Start over from reads. (A pool
            // with no free connection says nothing about the database.)
            if sent && !refused && outcome.is_err() {
                recent.clear();
            }
            reply(batch, outcome, requeue, metrics);
        }
    }
}

/// Answers each write of `batch` with its step, or all of them with the batch's failure.
fn reply<T: Part>(
    batch: Vec<Job<T>>,
    outcome: Result<Vec<Step>, RepositoryError>,
    requeue: &mpsc::WeakUnboundedSender<Job>,
    metrics: &StorageMetrics,
) {
    let failure = match outcome {
        Ok(steps) => {
            for (job, step) in batch.into_iter().zip(steps) {
                answer(job, step, requeue, metrics);
            }
            return;
        }
        Err(failure) => failure,
    };
    // The first caller gets the failure itself, the others the same in words.
    let message = failure.to_string();
    let unavailable = matches!(failure, RepositoryError::Unavailable(_));
    let mut failure = Some(failure);
    for job in batch {
        let failure = failure.take().unwrap_or_else(|| {
            let message = message.clone().into();
            if unavailable {
                RepositoryError::Unavailable(message)
            } else {
                RepositoryError::Backend(message)
            }
        });
        let _ = job.reply.send(Err(failure));
    }
}

/// Answers `job` with what its batch decided, or puts a judged advance that lost back in the
/// queue (while it has tries left and the queue is still there).
fn answer<T: Part>(
    job: Job<T>,
    step: Step,
    requeue: &mpsc::WeakUnboundedSender<Job>,
    metrics: &StorageMetrics,
) {
    let lost = match step {
        Step::Answer(written) => {
            let _ = job.reply.send(Ok(written));
            return;
        }
        Step::Again(lost) => lost,
        Step::Locked => {
            metrics.advances_deferred.inc();
            return wait_for_lock(job, requeue);
        }
    };
    // Its row was not held this time: a later wait for it starts anew.
    let Job { task, reply, .. } = job;
    let Some(again) = task.again() else {
        let _ = reply.send(Ok(Written::Refused(lost)));
        return;
    };
    if let Some(queue) = requeue.upgrade() {
        metrics.advances_rejudged.inc();
        // If the queue has just ended, the reply is dropped with the job: "stopped".
        let _ = queue.send(Job::new(again, reply));
    }
}

/// Puts `job`, whose workflow's row another transaction holds locked, back in the queue after
/// a pause that grows with its wait (5 ms to 250 ms); answers 503 once it has found the row
/// held, batch after batch, for [`LOCKED_ROW_WAIT`]. Its tries are not spent: it was not
/// judged.
fn wait_for_lock<T: Part>(job: Job<T>, requeue: &mpsc::WeakUnboundedSender<Job>) {
    let Job {
        task,
        reply,
        locked_since,
    } = job;
    let since = locked_since.unwrap_or_else(Instant::now);
    let waited = since.elapsed();
    if waited >= LOCKED_ROW_WAIT {
        let _ = reply.send(Err(RepositoryError::Unavailable(
            "the workflow's row stayed locked by another transaction".into(),
        )));
        return;
    }
    let pause = (waited / 8).clamp(Duration::from_millis(5), Duration::from_millis(250));
    let requeue = requeue.clone();
    let task = task.task();
    tokio::spawn(async move {
        tokio::time::sleep(pause).await;
        // If the queue has ended meanwhile, the reply is dropped with the job: "stopped".
        if let Some(queue) = requeue.upgrade() {
            let _ = queue.send(Job {
                task,
                reply,
                locked_since: Some(since),
            });
        }
    });
}

/// Reads the workflows the batch's judges need (one query; none for the rows `recent`
/// remembers), judges them, and commits every accepted advance as one statement; the steps
/// line up with `batch`.
async fn decide_advances(
    conn: &mut AsyncPgConnection,
    batch: &[Job<Advance>],
    recent: &Recent,
    since: Since,
) -> QueryResult<Vec<Step>> {
    // Judged first on the rows remembered: an accepted advance needs no read (its
    // compare-and-set catches a stale row). A refusal may come from a stale row, so that
    // advance is judged again on its row as read, with those not remembered. Per advance:
    // its verdict if accepted on a remembered row.
    let remembered: Vec<Option<Verdict>> = batch
        .iter()
        .map(|job| match &job.task {
            Advance::Judge {
                feature_id, judge, ..
            } => recent
                .take(feature_id.as_str())
                .map(|row| judge_advance(feature_id, Some(row), judge))
                .filter(|verdict| matches!(verdict, Verdict::Commit(..))),
            Advance::Commit(commit) => {
                recent.forget(commit.feature_id.as_str());
                None
            }
        })
        .collect();
    let unread: Vec<&str> = batch
        .iter()
        .zip(&remembered)
        .filter_map(|(job, verdict)| match &job.task {
            Advance::Judge { feature_id, .. } if verdict.is_none() => Some(feature_id.as_str()),
            _ => None,
        })
        .collect();
    let mut rows: HashMap<String, WorkflowRow> = if unread.is_empty() {
        HashMap::new()
    } else {
        queries::workflows_of(unread)
            .select(WorkflowRow::as_select())
            .load::<WorkflowRow>(conn)
            .await?
            .into_iter()
            .map(|row| (row.feature_id.clone(), row))
            .collect()
    };
    // Per advance: its answer already (`Err`), or a commit to run, with (for a judged one)
    // the workflow it answers if the commit lands and whether it was judged on a remembered
    // row.
    let mut commits = Vec::new();
    let mut pending = Vec::with_capacity(batch.len());
    for (job, remembered) in batch.iter().zip(remembered) {
        let (commit, next) = match &job.task {
            Advance::Commit(commit) => (Commit::clone(commit), None),
            Advance::Judge {
                feature_id, judge, ..
            } => {
                let from_memory = remembered.is_some();
                let verdict = remembered.unwrap_or_else(|| {
                    judge_advance(feature_id, rows.remove(feature_id.as_str()), judge)
                });
                match verdict {
                    Verdict::Commit(commit, next) => (*commit, Some((next, from_memory))),
                    Verdict::Answer(written) => {
                        pending.push(Err(written));
                        continue;
                    }
                }
            }
        };
        commits.push(commit);
        pending.push(Ok(next));
    }
    let mut results = if commits.is_empty() {
        Vec::new()
    } else {
        apply(conn, &commits).await?
    }
    .into_iter();
    Ok(pending
        .into_iter()
        .map(|pending| {
            let next = match pending {
                Ok(next) => next,
                Err(written) => return Step::Answer(written),
            };
            let missing = || Applied::Written(Written::Refused(left_out()));
            let result = match results.next().unwrap_or_else(missing) {
                Applied::Written(written) => written,
                Applied::Locked => return Step::Locked,
            };
            match (result, next) {
                (Written::Done, Some((next, _))) => {
                    recent.wrote(WorkflowRow::from(&next), since);
                    Step::Answer(Written::Judged(Box::new(Ok(next))))
                }
                (
                    Written::Refused(lost @ RepositoryError::VersionConflict { .. }),
                    Some((next, from_memory)),
                ) => {
                    if from_memory {
                        recent.stale(next.feature_id().as_str());
                    }
                    Step::Again(lost)
                }
                (result, _) => Step::Answer(result),
            }
        })
        .collect())
}

/// Commits an approval judged by the gate's rules (`Commit::gated`), outside the queue, in a
/// transaction of its own, if no consultation of its workflow blocks the gate. The workflow
/// row is locked first, by a statement of its own, so the check after it reads (in a later
/// snapshot) every consultation committed before the lock: a consultation is stored holding
/// that row `FOR SHARE` (`ops::apply`), so none can be stored between the check and this
/// commit, and one stored after it finds the gate's new state. Approvals are rare beside the
/// other advances, which keep their shared statement.
pub(super) async fn apply_gated(
    conn: &mut AsyncPgConnection,
    commit: &Commit,
) -> QueryResult<Written> {
    use diesel::OptionalExtension;

    let id = commit.feature_id.as_str();
    // Read committed whatever the server's default: the check must read in a snapshot taken
    // after the lock was granted, which a repeatable-read transaction would not.
    conn.build_transaction()
        .read_committed()
        .run(async |conn| {
            // The key first, as every write with a receipt checks it (and locks it before the
            // workflow).
            if let Some(refusal) = ops::key_refusal(conn, commit.receipt.as_ref()).await? {
                return Ok(Written::Refused(refusal));
            }
            queries::state(id)
                .for_update()
                .get_result::<String>(conn)
                .await
                .optional()?;
            if !ops::gate_blockers(conn, vec![id]).await?.is_empty() {
                return Ok(Written::Refused(RepositoryError::GateBlocked(
                    commit.feature_id.clone(),
                )));
            }
            // The row is this transaction's (locked above): never skipped.
            apply_locked(conn, commit).await
        })
        .await
}

/// How both batch statements begin: their rows `v`, unnested from the array parameters that
/// follow. The advance batch statement (lock, compare-and-set, history, events, in one round
/// trip) is this head, its parameters, [`BATCH_COLUMNS`] and [`ENTRY_COLUMNS`] (the names of
/// `v`'s columns), [`HELD`], [`BATCH_TAIL`], [`WRITTEN`] and [`BATCH_RESULT`].
/// `Batch::walk` binds its 25 columns as arrays after the head; the feature ids come first,
/// so the lock reads them as `$1`.
pub(super) const ROWS_HEAD: &str = "WITH v AS (\n    SELECT * FROM unnest(";
/// The names of the advance batch's own columns in `v`; [`ENTRY_COLUMNS`] follow.
const BATCH_COLUMNS: &str = ")
        AS v(feature_id, expected, state, version, rework_count, time_in_state, updated_at,
             completed_at, gate_stay, gate_due_at, ";
/// The names of [`Entries`]' columns in `v`, which close its column list; a statement's own
/// columns come before them.
pub(super) const ENTRY_COLUMNS: &str = "seq, from_state, to_state, trigger, actor, reason,
             metadata, at, actor_kind, on_behalf_of, gate_override, receipt_scope,
             receipt_name, receipt_answer, receipt_lease)
";
/// The rows of `v` whose idempotency keys their claims still hold (unanswered, under the lease
/// the receipt names), the keys locked until the commit: a row whose key a retry took over is
/// refused whole (`KeyTakenOver`), and a retry taking a key over meanwhile waits, then takes
/// nothing. A look-up of its key (by primary key) per keyed row of `v`, none for the others
/// (the lateral join runs only for them; what the step costs a batch without keys is in
/// docs/PERFORMANCE.md). Both batch
/// statements begin their tails with it and lock these keys first: a single write with a
/// receipt (`ops::key_refusal`, `apply_gated`) also locks its key before its workflow.
pub(super) const HELD: &str = r#"), held AS MATERIALIZED (
    SELECT v.feature_id
    FROM v CROSS JOIN LATERAL (
        SELECT k.scope, k.name FROM idempotency_keys k
        WHERE k.scope = v.receipt_scope AND k.name = v.receipt_name
          AND k.answer IS NULL AND k.lease_until = v.receipt_lease
        FOR UPDATE
    ) k
    WHERE v.receipt_scope IS NOT NULL
"#;
/// The batch statement after its parameters, up to `won`, the rows it updated. `won`
/// repeats `w.feature_id = ANY($1)` (the ids `v` holds): without it the plan PostgreSQL
/// keeps for the prepared statement hashes `v` and scans all of `workflows`, every dead row
/// version included (docs/PERFORMANCE.md).
const BATCH_TAIL: &str = r#"), locked AS MATERIALIZED (
    -- After `held` (the reference makes it run first): keys, then workflows. A row another
    -- transaction holds is skipped, not waited for: its advance is tried again later.
    SELECT w.feature_id, w.version FROM workflows w
    WHERE w.feature_id = ANY($1::text[]) AND (SELECT count(*) FROM held) >= 0
    ORDER BY w.feature_id
    FOR UPDATE SKIP LOCKED
), won AS (
    UPDATE workflows w
    SET state = v.state, version = v.version, rework_count = v.rework_count,
        time_in_state = v.time_in_state, updated_at = v.updated_at,
        completed_at = v.completed_at, gate_stay = v.gate_stay, gate_due_at = v.gate_due_at
    FROM v, locked
    WHERE w.feature_id = ANY($1::text[])
      AND locked.feature_id = w.feature_id AND w.feature_id = v.feature_id
      AND w.version = v.expected
      AND (v.receipt_scope IS NULL
           OR EXISTS (SELECT 1 FROM held WHERE held.feature_id = v.feature_id))
    RETURNING w.feature_id
"#;

/// What a batch writes beside its workflow rows, for each row `won` returns: the answer kept
/// for its idempotency key, its `workflow.transitioned` event, numbered under the event log's
/// row lock, and its history entry, which names the event (a workflow's transitioned events
/// are found through its entries). Shared by the advance batch and the creation batch
/// (`creates`), whose `v` has the columns named here.
pub(super) const WRITTEN: &str = r#"), answered AS (
    UPDATE idempotency_keys k SET answer = v.receipt_answer
    FROM v JOIN won ON won.feature_id = v.feature_id
    WHERE k.scope = v.receipt_scope AND k.name = v.receipt_name AND k.answer IS NULL
      AND k.lease_until = v.receipt_lease
    RETURNING 1
), ev AS MATERIALIZED (
    SELECT v.feature_id, v.at, v.seq,
           row_number() OVER (ORDER BY v.feature_id) AS n
    FROM v JOIN won ON won.feature_id = v.feature_id
), numbered AS (
    -- The event log's row lock, taken last (after every other row this statement locks,
    -- which the reference to `answered` makes sure of) and only when an event is written;
    -- through `take_event_ids`, so that waiting for it re-checks that update alone.
    SELECT take_event_ids(e.n) AS last_id
    FROM (SELECT count(*) AS n FROM ev) e
    WHERE e.n > 0 AND (SELECT count(*) FROM answered) >= 0
), ids AS (
    SELECT ev.feature_id, ev.at, ev.seq, numbered.last_id - (SELECT count(*) FROM ev) + ev.n AS id
    FROM ev, numbered
), history AS (
    INSERT INTO transitions (feature_id, seq, from_state, to_state, trigger, actor, reason,
                             metadata, at, actor_kind, on_behalf_of, gate_override, event_id)
    SELECT v.feature_id, v.seq, v.from_state, v.to_state, v.trigger, v.actor, v.reason,
           v.metadata, v.at, v.actor_kind, v.on_behalf_of, v.gate_override, ids.id
    FROM v JOIN ids ON ids.feature_id = v.feature_id
), logged AS (
    -- The event refers to its history entry (its data is rebuilt from it when read).
    INSERT INTO events (id, event_type, subject, time, data, seq)
    SELECT ids.id, 'workflow.transitioned', ids.feature_id, ids.at, '', ids.seq
    FROM ids
)
"#;
/// The batch statement's result: per advance, whether it won, the version it found, whether
/// its key's claim (if it had one) still held the key, and whether its workflow exists but was
/// skipped, locked by another transaction.
const BATCH_RESULT: &str = r#"SELECT v.feature_id, locked.version AS current, won.feature_id IS NOT NULL AS won,
       (v.receipt_scope IS NULL
        OR EXISTS (SELECT 1 FROM held WHERE held.feature_id = v.feature_id)) AS held,
       (locked.feature_id IS NULL
        AND EXISTS (SELECT 1 FROM workflows b
                    WHERE b.feature_id = ANY($1::text[]) AND b.feature_id = v.feature_id)) AS skipped
FROM v
LEFT JOIN locked ON locked.feature_id = v.feature_id
LEFT JOIN won ON won.feature_id = v.feature_id
"#;

/// One batch's columns, bound to the batch statement (prepared once per connection).
struct Batch {
    feature_id: Vec<String>,
    expected: Vec<i64>,
    state: Vec<String>,
    version: Vec<i64>,
    rework_count: Vec<i64>,
    time_in_state: Vec<String>,
    updated_at: Vec<i64>,
    completed_at: Vec<Option<i64>>,
    gate_stay: Vec<Option<String>>,
    gate_due_at: Vec<Option<i64>>,
    entries: Entries,
}

impl Batch {
    fn new(commits: &[Commit]) -> Self {
        Batch {
            feature_id: column(commits, |c| c.feature_id.to_string()),
            expected: column(commits, |c| c.expected),
            state: column(commits, |c| c.changes.state.clone()),
            version: column(commits, |c| c.changes.version),
            rework_count: column(commits, |c| c.changes.rework_count),
            time_in_state: column(commits, |c| c.changes.time_in_state.clone()),
            updated_at: column(commits, |c| c.changes.updated_at),
            completed_at: column(commits, |c| c.changes.completed_at),
            gate_stay: column(commits, |c| c.changes.gate_stay.clone()),
            gate_due_at: column(commits, |c| c.changes.gate_due_at),
            entries: Entries::new(&column(commits, |c| (&c.history, c.receipt.as_ref()))),
        }
    }
}

/// The columns both batch statements write beside the workflow rows: each row's history
/// entry and the answer kept for its idempotency key. Bound as arrays after a statement's
/// own columns, and named in its `v` by [`ENTRY_COLUMNS`].
pub(super) struct Entries {
    seq: Vec<i64>,
    from_state: Vec<String>,
    to_state: Vec<String>,
    trigger: Vec<String>,
    actor: Vec<Option<String>>,
    reason: Vec<Option<String>>,
    metadata: Vec<String>,
    at: Vec<i64>,
    actor_kind: Vec<Option<String>>,
    on_behalf_of: Vec<Option<String>>,
    gate_override: Vec<bool>,
    receipt_scope: Vec<Option<String>>,
    receipt_name: Vec<Option<String>>,
    receipt_answer: Vec<Option<String>>,
    receipt_lease: Vec<Option<i64>>,
}

impl Entries {
    /// The columns of `rows`: each row's history entry, and its key's answer if any.
    pub(super) fn new(rows: &[(&TransitionRow, Option<&ReceiptRow>)]) -> Self {
        let receipt = |f: fn(&ReceiptRow) -> String| column(rows, |(_, r)| r.map(f));
        Entries {
            seq: column(rows, |(e, _)| e.seq),
            from_state: column(rows, |(e, _)| e.from_state.clone()),
            to_state: column(rows, |(e, _)| e.to_state.clone()),
            trigger: column(rows, |(e, _)| e.trigger.clone()),
            actor: column(rows, |(e, _)| e.actor.clone()),
            reason: column(rows, |(e, _)| e.reason.clone()),
            metadata: column(rows, |(e, _)| e.metadata.clone()),
            at: column(rows, |(e, _)| e.at),
            actor_kind: column(rows, |(e, _)| e.actor_kind.clone()),
            on_behalf_of: column(rows, |(e, _)| e.on_behalf_of.clone()),
            gate_override: column(rows, |(e, _)| e.gate_override),
            receipt_scope: receipt(|r| r.scope.clone()),
            receipt_name: receipt(|r| r.name.clone()),
            receipt_answer: receipt(|r| r.answer.clone()),
            receipt_lease: column(rows, |(_, r)| r.map(|r| r.lease_until)),
        }
    }

    /// Binds the columns: the statement's last parameters.
    pub(super) fn walk<'b>(&'b self, out: &mut AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        type MaybeTexts = Array<Nullable<Text>>;
        bind_array::<Array<BigInt>, _>(out, &self.seq, "::bigint[], ")?;
        bind_array::<Array<Text>, _>(out, &self.from_state, "::text[], ")?;
        bind_array::<Array<Text>, _>(out, &self.to_state, "::text[], ")?;
        bind_array::<Array<Text>, _>(out, &self.trigger, "::text[], ")?;
        bind_array::<MaybeTexts, _>(out, &self.actor, "::text[], ")?;
        bind_array::<MaybeTexts, _>(out, &self.reason, "::text[], ")?;
        bind_array::<Array<Text>, _>(out, &self.metadata, "::text[], ")?;
        bind_array::<Array<BigInt>, _>(out, &self.at, "::bigint[], ")?;
        bind_array::<MaybeTexts, _>(out, &self.actor_kind, "::text[], ")?;
        bind_array::<MaybeTexts, _>(out, &self.on_behalf_of, "::text[], ")?;
        bind_array::<Array<Bool>, _>(out, &self.gate_override, "::bool[], ")?;
        bind_array::<MaybeTexts, _>(out, &self.receipt_scope, "::text[], ")?;
        bind_array::<MaybeTexts, _>(out, &self.receipt_name, "::text[], ")?;
        bind_array::<MaybeTexts, _>(out, &self.receipt_answer, "::text[], ")?;
        bind_array::<Array<Nullable<BigInt>>, _>(out, &self.receipt_lease, "::bigint[]")
    }
}

impl Statement for Batch {
    fn walk<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        out.push_sql(ROWS_HEAD);
        bind_array::<Array<Text>, _>(&mut out, &self.feature_id, "::text[], ")?;
        bind_array::<Array<BigInt>, _>(&mut out, &self.expected, "::bigint[], ")?;
        bind_array::<Array<Text>, _>(&mut out, &self.state, "::text[], ")?;
        bind_array::<Array<BigInt>, _>(&mut out, &self.version, "::bigint[], ")?;
        bind_array::<Array<BigInt>, _>(&mut out, &self.rework_count, "::bigint[], ")?;
        bind_array::<Array<Text>, _>(&mut out, &self.time_in_state, "::text[], ")?;
        bind_array::<Array<BigInt>, _>(&mut out, &self.updated_at, "::bigint[], ")?;
        bind_array::<Array<Nullable<BigInt>>, _>(&mut out, &self.completed_at, "::bigint[], ")?;
        bind_array::<Array<Nullable<Text>>, _>(&mut out, &self.gate_stay, "::text[], ")?;
        bind_array::<Array<Nullable<BigInt>>, _>(&mut out, &self.gate_due_at, "::bigint[], ")?;
        self.entries.walk(&mut out)?;
        out.push_sql(BATCH_COLUMNS);
        out.push_sql(ENTRY_COLUMNS);
        out.push_sql(HELD);
        out.push_sql(BATCH_TAIL);
        out.push_sql(WRITTEN);
        out.push_sql(BATCH_RESULT);
        Ok(())
    }
}

/// What the statement decided for one write: whether it won, and the version it found (the
/// latest committed one, read under the row lock; none when the workflow does not exist).
#[derive(diesel::QueryableByName)]
struct Judged {
    #[diesel(sql_type = Text)]
    feature_id: String,
    #[diesel(sql_type = Nullable<BigInt>)]
    current: Option<i64>,
    #[diesel(sql_type = Bool)]
    won: bool,
    #[diesel(sql_type = Bool)]
    held: bool,
    #[diesel(sql_type = Bool)]
    skipped: bool,
}

/// What the batch statement did with one commit.
pub enum Applied {
    /// Written, or refused: `Done`, `KeyTakenOver` for one whose key a retry took over, or
    /// the refusal of a compare-and-set that lost.
    Written(Written),
    /// Nothing: its workflow's row is locked by another transaction.
    Locked,
}

/// Runs `commit` in a transaction that holds its workflow row locked already (so the batch
/// statement does not skip it): its result as [`apply`] has it.
pub(super) async fn apply_locked(
    conn: &mut AsyncPgConnection,
    commit: &Commit,
) -> QueryResult<Written> {
    Ok(
        match apply(conn, std::slice::from_ref(commit)).await?.pop() {
            Some(Applied::Written(written)) => written,
            Some(Applied::Locked) => Written::Refused(RepositoryError::Backend(
                "a row this transaction locked was skipped as locked by another".into(),
            )),
            None => Written::Refused(left_out()),
        },
    )
}

/// The refusal of a write a batch statement gave no result for (a bug).
fn left_out() -> RepositoryError {
    RepositoryError::Backend("a batch left out a result".into())
}

/// Runs `commits` (distinct workflows) as one statement on `conn`; the results line up with
/// them.
pub async fn apply(conn: &mut AsyncPgConnection, commits: &[Commit]) -> QueryResult<Vec<Applied>> {
    let judged: Vec<Judged> = Prepared(Batch::new(commits)).load(conn).await?;
    // Everything was decided in the one statement that committed it: no second round trip
    // can fail after the commit and misreport a write that landed.
    let judged: HashMap<String, Judged> = judged
        .into_iter()
        .map(|j| (j.feature_id.clone(), j))
        .collect();
    Ok(commits
        .iter()
        .map(|c| match judged.get(c.feature_id.as_str()) {
            Some(j) if j.won => Applied::Written(Written::Done),
            Some(j) if j.skipped => Applied::Locked,
            Some(j) if !j.held => {
                Applied::Written(Written::Refused(taken_over(c.receipt.as_ref())))
            }
            Some(j) => Applied::Written(Written::Refused(conflict(
                &c.feature_id,
                c.expected,
                j.current,
            ))),
            None => Applied::Written(Written::Refused(conflict(&c.feature_id, c.expected, None))),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use orchestrator_core::Workflow;

    fn judged(
        tries: u32,
    ) -> (
        Job<Advance>,
        oneshot::Receiver<Result<Written, RepositoryError>>,
    ) {
        let (reply, answer) = oneshot::channel();
        let judge: Judge = Box::new(|_: &Workflow| unreachable!("not judged here"));
        let task = Advance::Judge {
            feature_id: FeatureId::parse("f").unwrap(),
            judge,
            tries,
        };
        (Job::new(task, reply), answer)
    }

    fn lost() -> RepositoryError {
        RepositoryError::VersionConflict {
            expected: 1,
            actual: 2,
        }
    }

    /// An advance whose row another transaction holds is queued again after a pause, its
    /// tries unspent, and answered 503 once it has waited [`LOCKED_ROW_WAIT`].
    #[tokio::test(start_paused = true)]
    async fn an_advance_whose_row_is_held_waits_batch_after_batch_then_fails() {
        let (queue, mut queued) = mpsc::unbounded_channel();
        let (job, mut answered) = judged(3);
        let metrics = StorageMetrics::default();
        answer(job, Step::Locked, &queue.downgrade(), &metrics);
        assert_eq!(metrics.advances_deferred.get(), 1);
        assert!(queued.try_recv().is_err(), "after a pause");
        tokio::time::sleep(Duration::from_millis(10)).await;
        let again = queued.try_recv().expect("queued again");
        assert!(matches!(
            again.task,
            Task::Advance(Advance::Judge { tries: 3, .. })
        ));
        assert!(again.locked_since.is_some());
        let Job {
            task: Task::Advance(task),
            reply,
            locked_since,
        } = again
        else {
            panic!("an advance")
        };
        tokio::time::advance(LOCKED_ROW_WAIT).await;
        wait_for_lock(
            Job {
                task,
                reply,
                locked_since,
            },
            &queue.downgrade(),
        );
        assert!(matches!(
            answered.try_recv(),
            Ok(Err(RepositoryError::Unavailable(_)))
        ));
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(queued.try_recv().is_err(), "not queued again");
    }

    #[test]
    fn a_batch_goes_at_once_alone_and_beside_another_only_when_it_is_large_enough() {
        assert!(goes_now(1, 0), "nothing in flight: even one advance goes");
        assert!(!goes_now(1, 1));
        assert!(!goes_now(SECOND_BATCH_MIN - 1, 1));
        assert!(goes_now(SECOND_BATCH_MIN, 1));
    }

    #[tokio::test]
    async fn a_batch_that_ends_even_by_panicking_gives_its_slot_back_and_wakes_the_queue() {
        let slots = Arc::new(Semaphore::new(1));
        let done = Arc::new(Notify::new());
        let running = Running {
            slot: Some(slots.clone().acquire_owned().await.unwrap()),
            done: done.clone(),
        };
        assert_eq!(slots.available_permits(), 0);
        let batch = tokio::spawn(async move {
            let _running = running;
            panic!("a batch task that panics");
        });
        assert!(batch.await.unwrap_err().is_panic());
        assert_eq!(slots.available_permits(), 1, "the slot is free again");
        // The queue, waiting for company, is told (`notify_one` keeps the wake-up for a
        // waiter that comes later).
        tokio::time::timeout(std::time::Duration::from_secs(5), done.notified())
            .await
            .expect("the queue is woken");
    }

    #[test]
    fn a_judged_advance_that_lost_goes_back_to_the_queue_until_its_last_try() {
        let metrics = StorageMetrics::default();
        let (queue, mut queued) = mpsc::unbounded_channel();
        let requeue = queue.downgrade();

        let (mut job, mut answer) = judged(0);
        // One that waited for its row before: a wait after this try starts anew.
        job.locked_since = Some(Instant::now());
        answer_job(job, &requeue, &metrics);
        let again = queued.try_recv().expect("queued again");
        assert!(matches!(
            again.task,
            Task::Advance(Advance::Judge { tries: 1, .. })
        ));
        assert_eq!(again.locked_since, None);
        assert!(answer.try_recv().is_err(), "not answered yet");
        assert_eq!(metrics.advances_rejudged.get(), 1);

        // The last try answers the conflict instead.
        let (job, mut answer) = judged(MAX_TRIES - 1);
        answer_job(job, &requeue, &metrics);
        assert!(queued.try_recv().is_err());
        assert!(matches!(
            answer.try_recv(),
            Ok(Ok(Written::Refused(
                RepositoryError::VersionConflict { .. }
            )))
        ));
        assert_eq!(metrics.advances_rejudged.get(), 1);
    }

    #[test]
    fn a_commit_decided_by_its_caller_is_never_judged_again() {
        let metrics = StorageMetrics::default();
        let (queue, mut queued) = mpsc::unbounded_channel();
        let (reply, mut answered) = oneshot::channel();
        let (workflow, first) = Workflow::start(
            FeatureId::parse("f").unwrap(),
            orchestrator_core::Description::parse("d").unwrap(),
            orchestrator_core::Metadata::default(),
            orchestrator_core::TransitionContext::at(chrono::Utc::now()),
        );
        let commit = Commit::new(0, &workflow, &first);
        let job = Job::new(Advance::Commit(Box::new(commit)), reply);
        answer(job, Step::Again(lost()), &queue.downgrade(), &metrics);
        assert!(queued.try_recv().is_err());
        assert!(matches!(
            answered.try_recv(),
            Ok(Ok(Written::Refused(
                RepositoryError::VersionConflict { .. }
            )))
        ));
        assert_eq!(metrics.advances_rejudged.get(), 0);
    }

    /// A creation batch whose statement fails as a whole by a rule of the database (here a
    /// check the test adds: no request reaches such a refusal, core validates every value) is
    /// run again one creation at a time, so only the bad one fails.
    #[tokio::test(flavor = "multi_thread")]
    async fn a_creation_that_breaks_its_batch_fails_alone() {
        let Ok(admin_url) = std::env::var("TEST_DATABASE_URL") else {
            return;
        };
        let name = format!("orchestrator_unit_{}", uuid::Uuid::new_v4().simple());
        let mut admin = <AsyncPgConnection as diesel_async::AsyncConnection>::establish(&admin_url)
            .await
            .expect("TEST_DATABASE_URL is reachable");
        diesel::sql_query(format!("CREATE DATABASE {name}"))
            .execute(&mut admin)
            .await
            .unwrap();
        let (server, _) = admin_url
            .rsplit_once('/')
            .expect("a URL ending in /database");
        // The checks run in a task of their own, so the database is dropped even when one fails.
        let tested = tokio::spawn(bad_creation_fails_alone(format!("{server}/{name}"))).await;
        diesel::sql_query(format!("DROP DATABASE {name} WITH (FORCE)"))
            .execute(&mut admin)
            .await
            .unwrap();
        if let Err(failed) = tested {
            std::panic::resume_unwind(failed.into_panic());
        }
    }

    /// The checks of [`a_creation_that_breaks_its_batch_fails_alone`] on the database at `url`.
    async fn bad_creation_fails_alone(url: String) {
        let repository = super::super::PgRepository::connect(&url, 2).await.unwrap();
        repository
            .run(async |conn| {
                diesel::sql_query(
                    "ALTER TABLE workflows ADD CONSTRAINT not_bad CHECK (description <> 'bad')",
                )
                .execute(conn)
                .await
            })
            .await
            .unwrap();

        let creation = |id: &str, description: &str| {
            let (workflow, first) = Workflow::start(
                FeatureId::parse(id).unwrap(),
                orchestrator_core::Description::parse("d").unwrap(),
                orchestrator_core::Metadata::default(),
                orchestrator_core::TransitionContext::at(chrono::Utc::now()),
            );
            let mut row = WorkflowRow::from(&workflow);
            row.description = description.into();
            let (reply, answer) = oneshot::channel();
            let task = Box::new(Creation {
                feature_id: workflow.feature_id().clone(),
                row,
                first: TransitionRow::new(workflow.feature_id(), &first),
                receipt: None,
            });
            (Job::new(task, reply), answer)
        };
        let (good, good_answer) = creation("good", "fine");
        let (bad, bad_answer) = creation("bad", "bad");
        let metrics = StorageMetrics::default();
        let (queue, _queued) = mpsc::unbounded_channel();
        commit_part(
            &repository.pool,
            &metrics,
            &Recent::default(),
            vec![bad, good],
            &queue.downgrade(),
        )
        .await;

        let good = good_answer.await.unwrap();
        assert!(matches!(good, Ok(Written::Done)), "{good:?}");
        let bad = bad_answer.await.unwrap();
        assert!(matches!(bad, Err(RepositoryError::Backend(_))), "{bad:?}");
        let stored: Vec<String> = repository
            .run(async |conn| {
                crate::storage::schema::workflows::table
                    .select(crate::storage::schema::workflows::feature_id)
                    .load(conn)
                    .await
            })
            .await
            .unwrap();
        assert_eq!(stored, ["good"]);
    }

    /// `answer` for a job whose compare-and-set lost.
    fn answer_job(
        job: Job<Advance>,
        requeue: &mpsc::WeakUnboundedSender<Job>,
        metrics: &StorageMetrics,
    ) {
        answer(job, Step::Again(lost()), requeue, metrics);
    }
}
