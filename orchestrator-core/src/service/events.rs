//! Reading the event log: a page after an id, refused when retention deleted what follows it.

use super::{Error, Orchestrator, Result};
use crate::event::{Event, EventFilter, EventSlice};
use crate::workflow::Timestamp;

/// How many reads a page whose reads found nothing may take before it answers empty with its
/// `next_after` past what they looked at. A store bounds a read of a rare type over every
/// workflow to a range of ids (the SQL stores, to 10 000), so that no request walks the
/// whole log; a page reads on through ten such ranges, so it comes back empty with more after
/// it only past 100 000 ids of other types.
const READS_PER_EMPTY_PAGE: usize = 10;

/// How many times, at most, a page from the oldest event (no `after`) is read, while
/// retention deleted its first events as it was being read (see [`raced_a_purge`]); the last
/// read stands.
const READS_FROM_THE_OLDEST: usize = 5;

/// Whether a read from the oldest event kept (no `after`) met a purge: its first event is
/// among those retention has deleted since. The read is made of several statements, so one
/// that began before the purge and went on after it may have passed from events now deleted
/// to the first kept, with a hole between; read again, it starts after the purge.
fn raced_a_purge(slice: &EventSlice) -> bool {
    slice
        .events
        .first()
        .map(|e| e.id)
        .into_iter()
        .chain(slice.unreadable.first().copied())
        .min()
        .is_some_and(|first| first <= slice.purged_through)
}

/// A page of the log as a reader sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct EventPage {
    /// The events, in id order.
    pub events: Vec<Event>,
    /// Where the next read starts: the last event's id (or the last row passed over after
    /// it, or where a store stopped short of the limit with more after it, at the end of the
    /// ids a bounded read looked at — after ten reads that found nothing —
    /// or of a page of large events: [`EventSlice::scanned_through`](crate::EventSlice::scanned_through)),
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
        let mut slice = self.read_events(from, filter, limit).await?;
        if after.is_none() {
            for _ in 1..READS_FROM_THE_OLDEST {
                if !raced_a_purge(&slice) {
                    break;
                }
                slice = self.read_events(from, filter, limit).await?;
            }
        }
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
        // A bounded read that found nothing reads on through the next range, so that an empty
        // page nearly always means there is nothing more: a reader that stops at one misses
        // nothing. A purge that overtakes it stops it; the next page from its `next_after` is
        // then told (410).
        let mut looked_through = None;
        for _ in 1..READS_PER_EMPTY_PAGE {
            let Some(through) = slice.scanned_through.filter(|_| slice.events.is_empty()) else {
                break;
            };
            let next = self.read_events(through, filter, limit).await?;
            if through < next.purged_through {
                break;
            }
            slice = next;
            looked_through = Some(through);
        }
        // An empty page read from the oldest event kept resumes where retention ended, not at
        // 0: every id up to there is gone, and `after=0` would be refused as expired. One that
        // read through ranges with nothing in them resumes after them: the next poll of a
        // quiet type starts at the last range, not at the first again.
        let empty = match after {
            Some(after) => after,
            None => slice.purged_through,
        }
        .max(looked_through.unwrap_or(0));
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

    async fn read_events(
        &self,
        after: u64,
        filter: &EventFilter,
        limit: u32,
    ) -> Result<EventSlice> {
        self.repository
            .events(after, filter, limit)
            .await
            .map_err(Error::from)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{EventType, NewEvent};
    use crate::values::FeatureId;

    fn slice(ids: &[u64], unreadable: &[u64], purged_through: u64) -> EventSlice {
        let event = |id| Event {
            id,
            event: NewEvent {
                event_type: EventType::GateOverdue,
                subject: FeatureId::parse("f").unwrap(),
                time: chrono::DateTime::UNIX_EPOCH,
                data: "{}".to_owned(),
            },
        };
        EventSlice {
            events: ids.iter().copied().map(event).collect(),
            purged_through,
            last_id: 100,
            unreadable: unreadable.to_vec(),
            scanned_through: None,
        }
    }

    /// A read from the oldest event whose first row retention has deleted since began before
    /// the purge and may have skipped from there to the first row kept; one that starts after
    /// what was purged, or found nothing, did not.
    #[test]
    fn a_read_from_the_oldest_event_raced_a_purge_when_it_found_a_purged_one() {
        assert!(raced_a_purge(&slice(&[1, 2, 51], &[], 50)));
        assert!(raced_a_purge(&slice(&[51], &[50], 50)));
        assert!(!raced_a_purge(&slice(&[51, 52], &[], 50)));
        assert!(!raced_a_purge(&slice(&[1, 2], &[], 0)));
        assert!(!raced_a_purge(&slice(&[], &[], 50)));
    }
}
