//! Reading the event log: a page after an id, refused when retention deleted what follows it.

use super::{Error, Orchestrator, Result};
use crate::event::{Event, EventFilter};
use crate::workflow::Timestamp;

/// A page of the log as a reader sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct EventPage {
    /// The events, in id order.
    pub events: Vec<Event>,
    /// Where the next read starts: the last event's id (or the last row passed over after
    /// it, or where a store stopped short of the limit with more after it, at the end of the
    /// ids a bounded read looked at or of a page of large events: [`EventSlice::scanned_through`](crate::EventSlice::scanned_through)),
    /// or on an empty page the `after` read from (without one, the last id retention deleted,
    /// 0 if none).
    pub next_after: u64,
    /// The newest event's id when the page was read.
    pub last_id: u64,
    /// Whether more may follow at once: the read found as many rows as it could take (rows
    /// passed over included), or the store stopped it short with more after it.
    pub full: bool,
}

impl Orchestrator {
    /// Up to `limit` events passing `filter` after `after` (`None`: from the oldest retained
    /// one). [`Error::EventsExpired`] when events after `after` were deleted by retention:
    /// resuming there would skip them; [`Error::EventsAhead`] when `after` is past the newest
    /// event, an id this log never had (a reader never sees an id before it is committed, so
    /// only a store restored from an older copy, or replaced, leaves a reader ahead).
    pub async fn events(
        &self,
        after: Option<u64>,
        filter: &EventFilter,
        limit: u32,
    ) -> Result<EventPage> {
        let from = after.unwrap_or(0);
        let slice = self
            .repository
            .events(from, filter, limit)
            .await
            .map_err(Error::from)?;
        // The bounds were read after the events: a purge that raced the read shows here.
        if after.is_some() && from < slice.purged_through {
            return Err(Error::EventsExpired {
                after: from,
                purged_through: slice.purged_through,
            });
        }
        if after.is_some() && from > slice.last_id {
            return Err(Error::EventsAhead {
                after: from,
                last_id: slice.last_id,
            });
        }
        // An empty page read from the oldest event kept resumes where retention ended, not at
        // 0: every id up to there is gone, and `after=0` would be refused as expired.
        let empty = match after {
            Some(after) => after,
            None => slice.purged_through,
        };
        let last_event = slice.events.last().map(|e| e.id);
        let next_after = last_event
            .into_iter()
            .chain(slice.unreadable.last().copied())
            .chain(slice.scanned_through)
            .max()
            .unwrap_or(empty);
        let read = slice.events.len() + slice.unreadable.len();
        Ok(EventPage {
            // A read that stopped at the end of the range it looked at has more after it.
            full: read >= limit as usize || slice.scanned_through.is_some(),
            events: slice.events,
            next_after,
            last_id: slice.last_id,
        })
    }

    /// The newest event's id: where a reader that wants only new events starts.
    pub async fn last_event_id(&self) -> Result<u64> {
        let slice = self
            .repository
            .events(u64::MAX - 1, &EventFilter::default(), 1)
            .await
            .map_err(Error::from)?;
        Ok(slice.last_id)
    }

    /// Deletes the events made before `before` (retention); returns how many.
    pub async fn purge_events(&self, before: Timestamp) -> Result<u64> {
        self.repository
            .purge_events(before)
            .await
            .map_err(Error::from)
    }
}
