//! The workflow rows this server's commit queue wrote last, so that the next advance of such a
//! workflow is judged without reading its row back first (one round trip fewer per batch).
//!
//! A remembered row is a guess, never the truth: the batch statement's compare-and-set still
//! compares the stored version, so an advance judged on a row that another writer has changed
//! since (another replica on the same database) loses, and is judged again on a fresh read.
//! Every write of a workflow row's columns raises its version, so a row remembered at the
//! stored version is the stored row — while the database keeps every commit: after a batch
//! that could not reach it (a failover to a standby that missed the last commits may follow,
//! where a version can name another row), the memory starts over, and so it does whenever the
//! pool opens a connection to a server that started at another time than the last one's (a
//! failover that none of the queue's own batches saw). What a batch that began before the
//! memory started over wrote is not remembered: it may have gone to the server left behind.
//! (A batch begun after that on a connection still open to the server left behind is not told
//! apart; its statement fails there once that server is gone, which starts the memory over.)
//!
//! A workflow whose remembered row lost its compare-and-set is marked as written elsewhere as
//! well, and read before each of its advances from then on: behind a load balancer, consecutive
//! advances of one workflow land on different replicas, and each would otherwise pay a lost
//! statement instead of a read. (Rarely, a race between two of this server's own batches
//! marks a workflow the same way; that costs it the read it had before, nothing more.) At
//! most [`CAPACITY`] workflows are remembered; when full, the memory starts over, marks
//! included. A row larger than [`ROW_BYTES`] (a long description, large metadata) is not
//! remembered at all, its workflow read before its next advance instead, so the memory holds
//! at most a few MiB whatever clients store.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use crate::storage::models::WorkflowRow;

/// Most workflows remembered (a few hundred bytes each).
pub const CAPACITY: usize = 4096;

/// The largest row remembered, counting its text: at most [`CAPACITY`] × 2 KiB in all.
pub const ROW_BYTES: usize = 2048;

/// What is remembered of one workflow.
enum Entry {
    /// The row as this server last wrote it.
    Row(Box<WorkflowRow>),
    /// A remembered row was stale once: someone else writes this workflow too.
    Shared,
}

/// The rows this server wrote last (see the module documentation).
#[derive(Default)]
pub struct Recent {
    entries: Mutex<HashMap<String, Entry>>,
    /// When the server the pool's connections reach started, as the last one opened said.
    server_started: Mutex<Option<String>>,
    /// How many times the memory started over ([`Recent::clear`]); raised while the entries
    /// are locked.
    generation: AtomicU64,
}

/// The memory as a batch found it when it began ([`Recent::since`]): a row the batch wrote
/// is remembered only if the memory has not started over since — the batch may have written
/// it to a server since left behind (a failover under way), where its version names a row the
/// database no longer has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Since(u64);

impl Recent {
    /// The row of `feature_id` as this server last wrote it, if remembered; taken out, so
    /// that two batches in flight never judge on the same remembered row.
    pub fn take(&self, feature_id: &str) -> Option<WorkflowRow> {
        let mut entries = self.entries();
        if !matches!(entries.get(feature_id)?, Entry::Row(_)) {
            return None;
        }
        match entries.remove(feature_id)? {
            Entry::Row(row) => Some(*row),
            Entry::Shared => None,
        }
    }

    /// Where the memory stands now, for a batch about to begin.
    pub fn since(&self) -> Since {
        Since(self.generation.load(Ordering::SeqCst))
    }

    /// Remembers `row`, just committed by a batch that began at `since`, unless the memory
    /// started over meanwhile, its workflow is written elsewhere too, or a later version is
    /// remembered already (a batch that committed after this one answered first). A row over
    /// [`ROW_BYTES`] is not kept, nor any older one of its workflow.
    pub fn wrote(&self, row: WorkflowRow, since: Since) {
        let mut entries = self.entries();
        if self.since() != since {
            return;
        }
        match entries.get(&row.feature_id) {
            Some(Entry::Shared) => {}
            Some(Entry::Row(known)) if known.version >= row.version => {}
            _ if text_bytes(&row) > ROW_BYTES => {
                entries.remove(&row.feature_id);
            }
            _ => insert(
                &mut entries,
                row.feature_id.clone(),
                Entry::Row(Box::new(row)),
            ),
        }
    }

    /// A row remembered for `feature_id` was stale: read it before each advance from now on.
    pub fn stale(&self, feature_id: &str) {
        insert(&mut self.entries(), feature_id.to_owned(), Entry::Shared);
    }

    /// Forgets the row of `feature_id`: it is being written without being judged here (a
    /// compare-and-set its caller decided).
    pub fn forget(&self, feature_id: &str) {
        let mut entries = self.entries();
        if let Some(Entry::Row(_)) = entries.get(feature_id) {
            entries.remove(feature_id);
        }
    }

    /// Forgets every row and mark: the database may no longer be the one they were read from.
    pub fn clear(&self) {
        let mut entries = self.entries();
        entries.clear();
        self.generation.fetch_add(1, Ordering::SeqCst);
    }

    /// A new connection reached a server that started at `started`: if another server's
    /// connection came before it (another start time), the rows remembered came from that
    /// one, and are forgotten.
    pub fn connected_to(&self, started: String) {
        let mut known = self
            .server_started
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if known.as_ref().is_some_and(|known| *known != started) {
            self.clear();
        }
        *known = Some(started);
    }

    fn entries(&self) -> MutexGuard<'_, HashMap<String, Entry>> {
        // The map is consistent after every statement of these methods; a panic elsewhere
        // while holding the lock cannot leave it half-changed.
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The bytes of a row's text, which is most of what remembering it costs.
fn text_bytes(row: &WorkflowRow) -> usize {
    [
        &row.feature_id,
        &row.description,
        &row.metadata,
        &row.state,
        &row.time_in_state,
        &row.gate_policy,
    ]
    .iter()
    .map(|text| text.len())
    .sum::<usize>()
        + row.gate_stay.as_ref().map_or(0, String::len)
}

/// Puts `entry` in for `feature_id`, starting over first if a new workflow finds the map full.
fn insert(entries: &mut HashMap<String, Entry>, feature_id: String, entry: Entry) {
    if entries.len() >= CAPACITY && !entries.contains_key(&feature_id) {
        entries.clear();
    }
    entries.insert(feature_id, entry);
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use orchestrator_core::{Description, FeatureId, Metadata, TransitionContext, Workflow};

    pub(in crate::storage::postgres) fn row(feature_id: &str, version: i64) -> WorkflowRow {
        let (workflow, _) = Workflow::start(
            FeatureId::parse(feature_id).unwrap(),
            Description::parse("d").unwrap(),
            Metadata::default(),
            TransitionContext::at(chrono::Utc::now()),
        );
        WorkflowRow {
            version,
            ..WorkflowRow::from(&workflow)
        }
    }

    /// Remembers `row` as written by a batch that began just now.
    fn write(recent: &Recent, row: WorkflowRow) {
        recent.wrote(row, recent.since());
    }

    #[test]
    fn a_remembered_row_is_taken_once() {
        let recent = Recent::default();
        write(&recent, row("f", 2));
        assert_eq!(recent.take("f").map(|r| r.version), Some(2));
        assert!(recent.take("f").is_none(), "taken out");
        assert!(recent.take("g").is_none(), "never written");
    }

    #[test]
    fn an_older_row_never_replaces_a_newer_one() {
        let recent = Recent::default();
        write(&recent, row("f", 3));
        write(&recent, row("f", 2));
        assert_eq!(recent.take("f").map(|r| r.version), Some(3));
        write(&recent, row("f", 3));
        write(&recent, row("f", 4));
        assert_eq!(recent.take("f").map(|r| r.version), Some(4));
    }

    #[test]
    fn a_workflow_once_stale_is_never_remembered_again() {
        let recent = Recent::default();
        write(&recent, row("f", 2));
        recent.stale("f");
        assert!(recent.take("f").is_none());
        write(&recent, row("f", 5));
        assert!(recent.take("f").is_none(), "read before each advance");
    }

    #[test]
    fn a_forgotten_row_is_gone_but_a_shared_mark_stays() {
        let recent = Recent::default();
        write(&recent, row("f", 2));
        recent.forget("f");
        assert!(recent.take("f").is_none());
        recent.stale("g");
        recent.forget("g");
        write(&recent, row("g", 3));
        assert!(recent.take("g").is_none());
    }

    #[test]
    fn a_cleared_memory_holds_neither_rows_nor_marks() {
        let recent = Recent::default();
        write(&recent, row("f", 2));
        recent.stale("g");
        recent.clear();
        assert!(recent.take("f").is_none());
        write(&recent, row("g", 3));
        assert_eq!(recent.take("g").map(|r| r.version), Some(3));
    }

    /// A batch that began before the memory started over (a connection to another server
    /// meanwhile) may have written to the server left behind: its rows are not remembered.
    #[test]
    fn a_batch_that_began_before_the_memory_started_over_is_not_remembered() {
        let recent = Recent::default();
        let batch = recent.since();
        recent.connected_to("t0".into());
        recent.connected_to("t1".into());
        recent.wrote(row("f", 6), batch);
        assert!(recent.take("f").is_none(), "written before the failover");
        write(&recent, row("f", 6));
        assert!(recent.take("f").is_some(), "a batch begun since");
    }

    #[test]
    fn rows_are_forgotten_when_a_connection_reaches_another_server() {
        let recent = Recent::default();
        recent.connected_to("t0".into());
        write(&recent, row("f", 2));
        recent.connected_to("t0".into());
        assert!(recent.take("f").is_some(), "the same server");
        write(&recent, row("f", 3));
        recent.stale("g");
        recent.connected_to("t1".into());
        assert!(recent.take("f").is_none(), "another server");
        write(&recent, row("g", 4));
        assert!(recent.take("g").is_some(), "marks forgotten too");
    }

    #[test]
    fn a_large_row_is_not_remembered_and_drops_an_older_one() {
        let recent = Recent::default();
        write(&recent, row("f", 2));
        let large = WorkflowRow {
            metadata: format!("{{\"k\":\"{}\"}}", "x".repeat(ROW_BYTES)),
            ..row("f", 3)
        };
        write(&recent, large);
        assert!(recent.take("f").is_none(), "neither the large row nor v2");
        let small = row("g", 2);
        assert!(text_bytes(&small) <= ROW_BYTES);
        write(&recent, small);
        assert!(recent.take("g").is_some());
    }

    #[test]
    fn the_memory_starts_over_when_full() {
        let recent = Recent::default();
        for n in 0..CAPACITY {
            write(&recent, row(&format!("f{n}"), 1));
        }
        assert_eq!(recent.entries().len(), CAPACITY);
        write(&recent, row("f0", 2));
        assert_eq!(
            recent.entries().len(),
            CAPACITY,
            "a known workflow is replaced"
        );
        write(&recent, row("new", 1));
        assert_eq!(recent.entries().len(), 1, "a new one starts over");
        assert!(recent.take("new").is_some());
    }
}
