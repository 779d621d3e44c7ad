//! Group commit for SQLite: one thread owns the only writing connection. It takes every write
//! waiting, runs each in its own savepoint inside one `BEGIN IMMEDIATE` transaction, commits
//! once (one sync for the whole batch), and only then answers each caller. A write that is
//! refused or fails rolls back to its savepoint and fails alone; the others commit.

use std::sync::mpsc;

use diesel::SqliteConnection;
use diesel::connection::SimpleConnection;
use orchestrator_core::RepositoryError;
use tokio::sync::oneshot;

use super::ops::{self, Write, Written};

/// Most writes one transaction takes; bounds the latency a batch adds.
const MAX_BATCH: usize = 256;

struct Job {
    write: Write,
    reply: oneshot::Sender<Result<Written, RepositoryError>>,
}

/// The handle to the writer thread; the thread ends when the last handle is dropped.
#[derive(Clone)]
pub struct Writer {
    jobs: mpsc::Sender<Job>,
}

impl Writer {
    /// Starts the writer thread on `conn`, which must already be configured and migrated.
    pub fn start(conn: SqliteConnection) -> std::io::Result<Writer> {
        let (jobs, queue) = mpsc::channel();
        std::thread::Builder::new()
            .name("sqlite-writer".to_owned())
            .spawn(move || run(conn, &queue))?;
        Ok(Writer { jobs })
    }

    /// Carries out `write` in the next batch; answers once the batch is on disk.
    pub async fn submit(&self, write: Write) -> Result<Written, RepositoryError> {
        let (reply, answer) = oneshot::channel();
        self.jobs
            .send(Job { write, reply })
            .map_err(|_| RepositoryError::Unavailable("the sqlite writer has stopped".into()))?;
        answer
            .await
            .map_err(|_| RepositoryError::Unavailable("the sqlite writer has stopped".into()))?
    }
}

fn run(mut conn: SqliteConnection, queue: &mpsc::Receiver<Job>) {
    while let Ok(first) = queue.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let results = execute(&mut conn, &batch);
        for (job, result) in batch.into_iter().zip(results) {
            // A caller that gave up (its request was dropped) no longer listens.
            let _ = job.reply.send(result);
        }
    }
}

/// Runs a batch in one transaction; the results line up with the jobs.
fn execute(conn: &mut SqliteConnection, batch: &[Job]) -> Vec<Result<Written, RepositoryError>> {
    let failed = |e: &diesel::result::Error| -> Vec<Result<Written, RepositoryError>> {
        batch
            .iter()
            .map(|_| Err(RepositoryError::Unavailable(format!("sqlite: {e}").into())))
            .collect()
    };
    if let Err(e) = conn.batch_execute("BEGIN IMMEDIATE") {
        return failed(&e);
    }
    let mut results = Vec::with_capacity(batch.len());
    for job in batch {
        let result = conn
            .batch_execute("SAVEPOINT job")
            .and_then(|()| ops::sqlite::apply(conn, &job.write));
        let keep = matches!(result, Ok(Written::Done | Written::Session(_)));
        let closed = if keep {
            conn.batch_execute("RELEASE job")
        } else {
            conn.batch_execute("ROLLBACK TO job; RELEASE job")
        };
        if let Err(e) = closed {
            let _ = conn.batch_execute("ROLLBACK");
            return failed(&e);
        }
        results.push(result.map_err(|e| RepositoryError::Backend(Box::new(e))));
    }
    if let Err(e) = conn.batch_execute("COMMIT") {
        let _ = conn.batch_execute("ROLLBACK");
        return failed(&e);
    }
    results
}
