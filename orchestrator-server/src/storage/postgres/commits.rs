//! Group commit for PostgreSQL: concurrent advances share one statement and one transaction.
//!
//! Every advance's compare-and-set is queued here. A task takes whatever is waiting (at most
//! one write per workflow per batch) and runs it as one statement: the batch's rows are sent
//! as arrays and unnested, the workflow rows are locked in feature-id order (so two batches,
//! also from two replicas, can never deadlock), each row is updated only if its version is
//! still the expected one, and a history row is inserted for exactly the updates that
//! happened. Each compare-and-set is judged on its own: one caller's conflict never fails
//! another's. Each winner's `workflow.transitioned` event is numbered and inserted by the same
//! statement, which takes the event log's row lock last (see `ops::append_events`). One
//! statement is one transaction, committed before anyone is answered.
//!
//! If the statement fails as a whole for a reason other than the database being unavailable,
//! each write of the batch is run again alone, so a failing write fails alone.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;

use diesel::result::QueryResult;
use diesel::sql_types::{Array, BigInt, Nullable, Text};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use orchestrator_core::RepositoryError;
use tokio::sync::{Semaphore, mpsc, oneshot};

use super::{PgPool, run};
use crate::storage::StorageMetrics;
use crate::storage::models::ReceiptRow;
use crate::storage::write::{Commit, Written, conflict};

/// Most advances one statement takes.
const MAX_BATCH: usize = 256;
/// Batches running at once. Two let one batch be built and sent while the previous one waits
/// for its commit to reach the disk.
const IN_FLIGHT: usize = 2;

struct Job {
    commit: Commit,
    reply: oneshot::Sender<Result<Written, RepositoryError>>,
}

/// The queue of advances waiting to be committed.
#[derive(Clone)]
pub struct Committer {
    jobs: mpsc::UnboundedSender<Job>,
}

impl Committer {
    /// Starts the task that commits batches on connections of `pool`.
    pub fn start(pool: PgPool, metrics: Arc<StorageMetrics>) -> Self {
        let (jobs, queue) = mpsc::unbounded_channel();
        tokio::spawn(batches(pool, metrics, queue));
        Committer { jobs }
    }

    /// Commits `commit` in the next batch; answers once the batch is committed.
    pub async fn submit(&self, commit: Commit) -> Result<Written, RepositoryError> {
        let stopped = || RepositoryError::Unavailable("the commit queue has stopped".into());
        let (reply, answer) = oneshot::channel();
        self.jobs
            .send(Job { commit, reply })
            .map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

async fn batches(
    pool: PgPool,
    metrics: Arc<StorageMetrics>,
    mut queue: mpsc::UnboundedReceiver<Job>,
) {
    let slots = Arc::new(Semaphore::new(IN_FLIGHT));
    // Writes that found their workflow already in the batch being built: the next batch's.
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
        let mut seen = HashSet::new();
        let mut batch = Vec::new();
        let mut later = VecDeque::new();
        for job in waiting.drain(..) {
            // A caller that gave up (its request timed out) is not written for: it was told
            // the write may not have happened, and should not find it happened much later.
            if job.reply.is_closed() {
                continue;
            }
            if batch.len() < MAX_BATCH && seen.insert(job.commit.feature_id.clone()) {
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
        tokio::spawn(async move {
            metrics.commit_batch.observe(batch.len() as f64);
            commit_batch(&pool, &metrics, batch).await;
            drop(slot);
        });
    }
}

/// Commits one batch and answers each of its callers.
async fn commit_batch(pool: &PgPool, metrics: &StorageMetrics, batch: Vec<Job>) {
    let commits: Vec<Commit> = batch.iter().map(|job| job.commit.clone()).collect();
    let outcome = run(pool, metrics, async |conn| apply(conn, &commits).await).await;
    match outcome {
        Ok(results) => {
            for (job, result) in batch.into_iter().zip(results) {
                let _ = job.reply.send(Ok(result));
            }
        }
        Err(RepositoryError::Unavailable(e)) => {
            let message = e.to_string();
            for job in batch {
                let _ = job
                    .reply
                    .send(Err(RepositoryError::Unavailable(message.clone().into())));
            }
        }
        Err(e) if batch.len() == 1 => {
            if let Some(job) = batch.into_iter().next() {
                let _ = job.reply.send(Err(e));
            }
        }
        Err(_) => {
            // One write broke the statement: run each alone, so it fails alone.
            for job in batch {
                let commit = job.commit.clone();
                let result = run(pool, metrics, async |conn| {
                    apply(conn, std::slice::from_ref(&commit)).await
                })
                .await
                .map(|mut results| results.pop().unwrap_or(Written::Done));
                let _ = job.reply.send(result);
            }
        }
    }
}

/// The batch statement: lock, compare-and-set, history, in one round trip.
const BATCH: &str = r#"
WITH v AS (
    SELECT * FROM unnest($1::text[], $2::bigint[], $3::text[], $4::bigint[], $5::bigint[],
                         $6::text[], $7::bigint[], $8::bigint[], $9::bigint[], $10::text[],
                         $11::text[], $12::text[], $13::text[], $14::text[], $15::text[],
                         $16::bigint[], $17::text[], $18::text[], $19::text[], $20::bool[],
                         $21::bigint[], $22::text[], $23::text[], $24::text[])
        AS v(feature_id, expected, state, version, rework_count,
             time_in_state, updated_at, completed_at, seq, from_state,
             to_state, trigger, actor, reason, metadata,
             at, actor_kind, on_behalf_of, gate_stay, gate_override,
             gate_due_at, receipt_scope, receipt_name, receipt_answer)
), locked AS MATERIALIZED (
    SELECT w.feature_id, w.version FROM workflows w
    WHERE w.feature_id = ANY($1::text[])
    ORDER BY w.feature_id
    FOR UPDATE
), won AS (
    UPDATE workflows w
    SET state = v.state, version = v.version, rework_count = v.rework_count,
        time_in_state = v.time_in_state, updated_at = v.updated_at,
        completed_at = v.completed_at, gate_stay = v.gate_stay, gate_due_at = v.gate_due_at
    FROM v, locked
    WHERE locked.feature_id = w.feature_id AND w.feature_id = v.feature_id
      AND w.version = v.expected
    RETURNING w.feature_id
), history AS (
    INSERT INTO transitions (feature_id, seq, from_state, to_state, trigger, actor, reason,
                             metadata, at, actor_kind, on_behalf_of, gate_override)
    SELECT v.feature_id, v.seq, v.from_state, v.to_state, v.trigger, v.actor, v.reason,
           v.metadata, v.at, v.actor_kind, v.on_behalf_of, v.gate_override
    FROM v JOIN won ON won.feature_id = v.feature_id
), answered AS (
    UPDATE idempotency_keys k SET answer = v.receipt_answer
    FROM v JOIN won ON won.feature_id = v.feature_id
    WHERE k.scope = v.receipt_scope AND k.name = v.receipt_name AND k.answer IS NULL
    RETURNING 1
), ev AS MATERIALIZED (
    SELECT v.feature_id, v.at, v.seq,
           row_number() OVER (ORDER BY v.feature_id) AS n
    FROM v JOIN won ON won.feature_id = v.feature_id
), numbered AS (
    -- The event log's row lock, taken last (after every other row this statement locks,
    -- which the reference to `answered` makes sure of) and only when an event is written.
    UPDATE event_log SET last_id = last_id + (SELECT count(*) FROM ev)
    WHERE id = 1 AND (SELECT count(*) FROM ev) > 0 AND (SELECT count(*) FROM answered) >= 0
    RETURNING last_id
), logged AS (
    -- The event refers to the history entry `won` wrote (its data is rebuilt when read).
    INSERT INTO events (id, event_type, subject, time, data, seq)
    SELECT numbered.last_id - (SELECT count(*) FROM ev) + ev.n, 'workflow.transitioned',
           ev.feature_id, ev.at, '', ev.seq
    FROM ev, numbered
)
SELECT v.feature_id, locked.version AS current, won.feature_id IS NOT NULL AS won
FROM v
LEFT JOIN locked ON locked.feature_id = v.feature_id
LEFT JOIN won ON won.feature_id = v.feature_id
"#;

/// What the statement decided for one write: whether it won, and the version it found (the
/// latest committed one, read under the row lock; none when the workflow does not exist).
#[derive(diesel::QueryableByName)]
struct Judged {
    #[diesel(sql_type = Text)]
    feature_id: String,
    #[diesel(sql_type = Nullable<BigInt>)]
    current: Option<i64>,
    #[diesel(sql_type = diesel::sql_types::Bool)]
    won: bool,
}

/// Runs `commits` (distinct workflows) as one statement on `conn`; the results line up with
/// them: `Done`, or the refusal of a compare-and-set that lost.
pub async fn apply(conn: &mut AsyncPgConnection, commits: &[Commit]) -> QueryResult<Vec<Written>> {
    let column = |f: fn(&Commit) -> String| commits.iter().map(f).collect::<Vec<_>>();
    let number = |f: fn(&Commit) -> i64| commits.iter().map(f).collect::<Vec<_>>();
    let optional_text =
        |f: fn(&Commit) -> Option<String>| commits.iter().map(f).collect::<Vec<_>>();
    let receipt = |f: fn(&ReceiptRow) -> String| {
        commits
            .iter()
            .map(|c| c.receipt.as_ref().map(f))
            .collect::<Vec<_>>()
    };
    let judged: Vec<Judged> = diesel::sql_query(BATCH)
        .bind::<Array<Text>, _>(column(|c| c.feature_id.to_string()))
        .bind::<Array<BigInt>, _>(number(|c| c.expected))
        .bind::<Array<Text>, _>(column(|c| c.changes.state.clone()))
        .bind::<Array<BigInt>, _>(number(|c| c.changes.version))
        .bind::<Array<BigInt>, _>(number(|c| c.changes.rework_count))
        .bind::<Array<Text>, _>(column(|c| c.changes.time_in_state.clone()))
        .bind::<Array<BigInt>, _>(number(|c| c.changes.updated_at))
        .bind::<Array<Nullable<BigInt>>, _>(
            commits
                .iter()
                .map(|c| c.changes.completed_at)
                .collect::<Vec<_>>(),
        )
        .bind::<Array<BigInt>, _>(number(|c| c.history.seq))
        .bind::<Array<Text>, _>(column(|c| c.history.from_state.clone()))
        .bind::<Array<Text>, _>(column(|c| c.history.to_state.clone()))
        .bind::<Array<Text>, _>(column(|c| c.history.trigger.clone()))
        .bind::<Array<Nullable<Text>>, _>(optional_text(|c| c.history.actor.clone()))
        .bind::<Array<Nullable<Text>>, _>(optional_text(|c| c.history.reason.clone()))
        .bind::<Array<Text>, _>(column(|c| c.history.metadata.clone()))
        .bind::<Array<BigInt>, _>(number(|c| c.history.at))
        .bind::<Array<Nullable<Text>>, _>(optional_text(|c| c.history.actor_kind.clone()))
        .bind::<Array<Nullable<Text>>, _>(optional_text(|c| c.history.on_behalf_of.clone()))
        .bind::<Array<Nullable<Text>>, _>(optional_text(|c| c.changes.gate_stay.clone()))
        .bind::<Array<diesel::sql_types::Bool>, _>(
            commits
                .iter()
                .map(|c| c.history.gate_override)
                .collect::<Vec<_>>(),
        )
        .bind::<Array<Nullable<BigInt>>, _>(
            commits
                .iter()
                .map(|c| c.changes.gate_due_at)
                .collect::<Vec<_>>(),
        )
        .bind::<Array<Nullable<Text>>, _>(receipt(|r| r.scope.clone()))
        .bind::<Array<Nullable<Text>>, _>(receipt(|r| r.name.clone()))
        .bind::<Array<Nullable<Text>>, _>(receipt(|r| r.answer.clone()))
        .load(conn)
        .await?;
    // Everything was decided in the one statement that committed it: no second round trip
    // can fail after the commit and misreport a write that landed.
    let judged: HashMap<String, Judged> = judged
        .into_iter()
        .map(|j| (j.feature_id.clone(), j))
        .collect();
    Ok(commits
        .iter()
        .map(|c| match judged.get(c.feature_id.as_str()) {
            Some(j) if j.won => Written::Done,
            Some(j) => Written::Refused(conflict(&c.feature_id, c.expected, j.current)),
            None => Written::Refused(conflict(&c.feature_id, c.expected, None)),
        })
        .collect())
}
