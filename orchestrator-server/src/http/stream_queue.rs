//! One event stream's queue toward its connection, bounded in chunks and in bytes: a chunk
//! may be one small event or a run of large ones (a hub's answer is up to 256 KiB), so a count
//! alone let a slow reader hold its whole count of the largest.
//!
//! A chunk holds its share of the byte budget from the moment it is queued until the body
//! hands it to the connection (a chunk larger than the whole budget takes all of it, and
//! waits for the queue to empty).

use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};

/// A queue of at most `chunks` chunks and about `bytes` bytes.
pub fn channel(chunks: usize, bytes: u32) -> (Sender, Receiver) {
    let (sender, receiver) = mpsc::channel(chunks);
    let sender = Sender {
        chunks: sender,
        room: Arc::new(Semaphore::new(bytes as usize)),
        budget: bytes,
    };
    (sender, Receiver { chunks: receiver })
}

/// A chunk in the queue, with its room in the budget.
struct Queued {
    bytes: Bytes,
    _room: OwnedSemaphorePermit,
}

/// The stream's end of the queue.
pub struct Sender {
    chunks: mpsc::Sender<Queued>,
    room: Arc<Semaphore>,
    budget: u32,
}

impl Sender {
    /// Queues `bytes`, waiting for room: false once the connection's end is gone.
    #[cfg(test)]
    pub async fn send(&self, bytes: Bytes) -> bool {
        let weight = bytes.len();
        self.send_weighing(bytes, weight).await
    }

    /// Queues `bytes` as if it were `weight` bytes (a slice that keeps a larger buffer alive
    /// weighs its share of that buffer), waiting for room: false once the connection's end is
    /// gone.
    pub async fn send_weighing(&self, bytes: Bytes, weight: usize) -> bool {
        let weight = self.weight(weight);
        let room = tokio::select! {
            // Nobody closes the semaphore.
            room = self.room.clone().acquire_many_owned(weight) => match room {
                Ok(room) => room,
                Err(_) => return false,
            },
            () = self.chunks.closed() => return false,
        };
        let queued = Queued { bytes, _room: room };
        self.chunks.send(queued).await.is_ok()
    }

    /// Queues `bytes` if there is room now.
    pub fn try_send(&self, bytes: Bytes) -> Result<(), TrySendError<()>> {
        if self.chunks.is_closed() {
            return Err(TrySendError::Closed(()));
        }
        let room = self
            .room
            .clone()
            .try_acquire_many_owned(self.weight(bytes.len()))
            .map_err(|_| TrySendError::Full(()))?;
        let queued = Queued { bytes, _room: room };
        self.chunks.try_send(queued).map_err(|e| match e {
            TrySendError::Full(_) => TrySendError::Full(()),
            TrySendError::Closed(_) => TrySendError::Closed(()),
        })
    }

    /// Completes when the connection's end is gone.
    pub async fn closed(&self) {
        self.chunks.closed().await;
    }

    /// The room `weight` bytes take: the whole budget at most.
    fn weight(&self, weight: usize) -> u32 {
        u32::try_from(weight).map_or(self.budget, |weight| weight.min(self.budget))
    }
}

/// The connection's end of the queue.
pub struct Receiver {
    chunks: mpsc::Receiver<Queued>,
}

impl Receiver {
    /// The next chunk, its room given back.
    pub fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<Bytes>> {
        self.chunks
            .poll_recv(cx)
            .map(|queued| queued.map(|queued| queued.bytes))
    }

    /// The next chunk, its room given back; `None` once the stream's end is gone and the
    /// queue is empty.
    #[cfg(test)]
    pub async fn recv(&mut self) -> Option<Bytes> {
        std::future::poll_fn(|cx| self.poll_recv(cx)).await
    }

    /// The next chunk if one is queued.
    #[cfg(test)]
    pub fn try_recv(&mut self) -> Option<Bytes> {
        self.chunks.try_recv().ok().map(|queued| queued.bytes)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn a_queue_is_bounded_in_bytes_as_well_as_in_chunks() {
        let (sender, mut receiver) = channel(64, 1000);
        assert!(sender.send(Bytes::from(vec![b'a'; 600])).await);
        // Room for many more chunks, not for 600 more bytes.
        assert!(matches!(
            sender.try_send(Bytes::from(vec![b'b'; 600])),
            Err(TrySendError::Full(()))
        ));
        let sender = Arc::new(sender);
        let waiting = tokio::spawn({
            let sender = sender.clone();
            async move { sender.send(Bytes::from(vec![b'b'; 600])).await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiting.is_finished(), "it waits for room");
        assert_eq!(receiver.recv().await.map(|b| b.len()), Some(600));
        assert!(waiting.await.unwrap(), "the room given back lets it in");
        // A chunk larger than the budget takes all of it, once the queue is empty.
        let large = tokio::spawn({
            let sender = sender.clone();
            async move { sender.send(Bytes::from(vec![b'c'; 5000])).await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!large.is_finished(), "it waits for the queue to empty");
        assert_eq!(receiver.recv().await.map(|b| b.len()), Some(600));
        assert!(large.await.unwrap());
        assert_eq!(receiver.try_recv().map(|b| b.len()), Some(5000));
        assert!(sender.try_send(Bytes::from_static(b"small")).is_ok());
        // A slice weighs what it is said to keep alive, not its length.
        assert_eq!(receiver.try_recv().as_deref(), Some(&b"small"[..]));
        assert!(sender.send_weighing(Bytes::from_static(b"x"), 900).await);
        assert!(matches!(
            sender.try_send(Bytes::from(vec![b'y'; 200])),
            Err(TrySendError::Full(()))
        ));
    }

    #[tokio::test]
    async fn a_sender_waiting_for_room_learns_that_the_connection_is_gone() {
        let (sender, receiver) = channel(64, 10);
        assert!(sender.send(Bytes::from_static(b"0123456789")).await);
        let waiting = tokio::spawn(async move { sender.send(Bytes::from_static(b"more")).await });
        tokio::time::sleep(Duration::from_millis(50)).await;
        drop(receiver);
        assert!(!waiting.await.unwrap());
    }
}
