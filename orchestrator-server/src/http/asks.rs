//! Consultations whose Agent Hub call may outlive the request: the wait window, the cap on
//! asks in flight, finishing in the background, the sweep of abandoned asks, and the drain on
//! shutdown.
//!
//! A consultation is stored as a reservation first (no listing, event or gate sees it); the
//! hub is then given the wait window. An answer (or a failure) inside it settles
//! the request as before: 201 with the answer, or the error with nothing kept. Past it, the
//! reservation is published as `asking`, the request answers 202, and the same hub call goes
//! on in a background task that stores the outcome. From the reservation on, the ask runs in a
//! task of its own, so a request cut off meanwhile leaves nothing half done. The core holds the
//! steps; this module holds the clock and the tasks.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;
use orchestrator_core::hub::{HubAnswer, HubError};
use orchestrator_core::service::Error as CoreError;
use orchestrator_core::{Consult, Consultation, FeatureId, Orchestrator, RepositoryError, Seal};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tracing::Instrument;

use super::error::{ApiError, Result};
use super::handlers::consultations::consultation_answer;
use super::idempotency::Claimed;

/// How long a stopping server lets background asks finish before it marks them interrupted.
const DRAIN_GRACE: Duration = Duration::from_secs(10);

/// How often abandoned asks are looked for.
const SWEEP_EVERY: Duration = Duration::from_secs(60);

/// The rules for asking the hub.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AskPolicy {
    /// How long a request waits for the hub before answering 202; `None`: as long as the ask
    /// may take (a wait as long as the hub timeout would only race it).
    pub wait: Option<Duration>,
    /// Most asks in flight at once (waited for or in the background); past it, 503.
    pub max_in_flight: usize,
    /// The longest one ask may take in all: opening a session and asking (one call and one
    /// question), past which it fails as the hub not answering in time. An ask whose session
    /// expired opens another and asks again, two calls more, all within this.
    pub bound: Duration,
    /// An ask older than this has ended on whatever server made it (past `bound`): a row still
    /// `asking` is left over from a server that stopped.
    pub abandoned_after: Duration,
}

impl Default for AskPolicy {
    fn default() -> Self {
        // A 330 s question and a 30 s call: the server's defaults.
        let bound = Duration::from_secs(330 + 30);
        AskPolicy {
            wait: Some(Duration::from_secs(20)),
            max_in_flight: 64,
            bound,
            abandoned_after: bound + Duration::from_secs(60),
        }
    }
}

/// How a consultation request ended.
#[derive(Debug)]
pub enum Asked {
    /// The hub answered within the wait: 201.
    Answered(Consultation),
    /// Still `asking` when the wait ran out; finished in the background: 202.
    Accepted(Consultation),
}

/// The asks of one server.
#[derive(Debug)]
pub struct Asks {
    policy: AskPolicy,
    permits: Arc<Semaphore>,
    stopping: watch::Sender<bool>,
}

type AskFuture = Pin<Box<dyn Future<Output = Result<HubAnswer, CoreError>> + Send>>;

impl Asks {
    /// No asks in flight yet.
    pub fn new(policy: AskPolicy) -> Self {
        Asks {
            policy,
            permits: Arc::new(Semaphore::new(policy.max_in_flight)),
            stopping: watch::Sender::new(false),
        }
    }

    /// Asks the hub for `feature_id`, waiting at most the policy's wait for its answer.
    /// With `claimed` (the request's idempotency key), its answer — 201 or 202 with the
    /// consultation — is stored in the transaction that publishes the consultation.
    pub async fn consult(
        &self,
        orchestrator: &Orchestrator,
        feature_id: &FeatureId,
        consult: Consult,
        claimed: Option<&Claimed>,
    ) -> Result<Asked> {
        // Refused before anything is stored; a request that could never succeed (no such
        // workflow, or one that ended) hears why rather than "try again later".
        let Ok(permit) = self.permits.clone().try_acquire_owned() else {
            orchestrator.consultable(feature_id).await?;
            return Err(ApiError::TooManyAsks);
        };
        // The ask runs in a task of its own from its reservation on, to its end whether or not
        // the request still waits: a request cut off meanwhile (the client gone, the request
        // timeout) would otherwise leave its reservation behind — one being stored when the
        // request went is stored all the same — holding the gate until the sweep of
        // abandoned asks.
        let ask = Ask {
            orchestrator: orchestrator.clone(),
            feature_id: feature_id.clone(),
            consult,
            answered: claimed.map(|claimed| sealed(claimed, StatusCode::CREATED)),
            accepted: claimed.map(|claimed| sealed(claimed, StatusCode::ACCEPTED)),
            wait: self.policy.wait,
            bound: self.policy.bound,
            stopping: self.stopping.subscribe(),
            permit,
        };
        tokio::spawn(ask.run().in_current_span())
            .await
            .unwrap_or_else(|e| Err(ApiError::Internal(format!("an ask's task failed: {e}"))))
    }

    /// Fails the asks a stopped server left behind: every one made before now when this
    /// server is the only one (`sole` — SQLite), else those older than the policy's
    /// `abandoned_after` (PostgreSQL: the others may belong to a live replica).
    pub async fn recover(&self, orchestrator: &Orchestrator, sole: bool) {
        let now = orchestrator.now();
        let before = if sole {
            now
        } else {
            now - chrono::Duration::from_std(self.policy.abandoned_after)
                .unwrap_or_else(|_| chrono::Duration::hours(1))
        };
        match orchestrator.interrupt_asks(before).await {
            Ok(0) => {}
            Ok(n) => tracing::warn!(
                consultations = n,
                "asks left by a stopped server marked interrupted"
            ),
            Err(e) => tracing::warn!(error = %e, "could not look for abandoned asks"),
        }
    }

    /// Runs [`Asks::recover`] for abandoned asks once a minute until the server stops.
    pub async fn sweep(&self, orchestrator: Orchestrator) {
        let mut stopping = self.stopping.subscribe();
        loop {
            tokio::select! {
                () = tokio::time::sleep(SWEEP_EVERY) => self.recover(&orchestrator, false).await,
                () = stopped(&mut stopping) => return,
            }
        }
    }

    /// Lets background asks finish for a few seconds, then marks the rest `interrupted` and
    /// waits (briefly) for that to be stored.
    pub async fn drain(&self) {
        let all = u32::try_from(self.policy.max_in_flight).unwrap_or(u32::MAX);
        let in_flight = self.policy.max_in_flight - self.permits.available_permits();
        if in_flight > 0 {
            tracing::info!(in_flight, "waiting for background asks");
        }
        let finished = tokio::time::timeout(DRAIN_GRACE, self.permits.acquire_many(all)).await;
        self.stopping.send_replace(true);
        if finished.is_err() {
            tracing::warn!("background asks still running: marking them interrupted");
            let _ = tokio::time::timeout(DRAIN_GRACE, self.permits.acquire_many(all)).await;
        }
    }
}

/// One ask, from its reservation to its end: settled inside the wait, or published `asking`
/// and finished in the background.
struct Ask {
    orchestrator: Orchestrator,
    feature_id: FeatureId,
    consult: Consult,
    /// The request's answer to keep if the hub answers inside the wait (201).
    answered: Option<Seal<Consultation>>,
    /// The request's answer to keep if the wait runs out (202).
    accepted: Option<Seal<Consultation>>,
    wait: Option<Duration>,
    bound: Duration,
    stopping: watch::Receiver<bool>,
    /// This ask's place under the cap, held until it ends.
    permit: OwnedSemaphorePermit,
}

impl Ask {
    async fn run(self) -> Result<Asked> {
        let Ask {
            orchestrator,
            feature_id,
            consult,
            answered,
            accepted,
            wait,
            bound,
            mut stopping,
            permit,
        } = self;
        let reserved = orchestrator
            .reserve_consultation(&feature_id, consult)
            .await?;
        let mut ask: AskFuture = {
            let orchestrator = orchestrator.clone();
            let asking = reserved.clone();
            Box::pin(async move {
                tokio::time::timeout(bound, orchestrator.ask_hub(&asking))
                    .await
                    .unwrap_or_else(|_| {
                        Err(CoreError::Hub(HubError::Unavailable(
                            "the agent hub did not answer in time".to_owned(),
                        )))
                    })
            })
        };
        // The hub's answer, unless the wait ran out first — or the server stops meanwhile:
        // then the ask is published and, the server stopping, recorded `interrupted` at once
        // (a wait as long as the hub's timeout would outlast the stop, and leave the caller
        // no answer and the ask no record).
        let in_time = tokio::select! {
            // An answer in hand when the stop comes is kept, not recorded `interrupted`.
            biased;
            in_time = async {
                match wait {
                    None => Some((&mut ask).await),
                    Some(wait) => tokio::time::timeout(wait, &mut ask).await.ok(),
                }
            } => in_time,
            () = stopped(&mut stopping) => None,
        };
        if let Some(answer) = in_time {
            return Ok(Asked::Answered(
                orchestrator
                    .settle_sealed(reserved, answer, answered)
                    .await?,
            ));
        }
        let asking = orchestrator.publish_sealed(reserved, accepted).await?;
        let published = asking.clone();
        let finish = async move {
            let _permit = permit;
            let id = published.id;
            let outcome = tokio::select! {
                biased;
                answer = ask => {
                    if let Err(e) = &answer {
                        tracing::warn!(consultation = %id, error = %e, "a background ask failed");
                    }
                    let ended = orchestrator.ending(published, answer);
                    store_ending(&orchestrator, ended, &mut stopping).await
                }
                () = stopped(&mut stopping) => orchestrator.interrupt(published).await,
            };
            match outcome {
                Ok(c) => {
                    tracing::info!(consultation = %id, status = c.status.as_str(), "background ask ended")
                }
                Err(e) => {
                    tracing::error!(consultation = %id, error = %e, "a background ask's outcome was not stored")
                }
            }
        };
        tokio::spawn(finish.instrument(tracing::Span::current()));
        Ok(Asked::Accepted(asking))
    }
}

/// How long a background ask's ending is tried again while storage is unavailable, tries
/// included: then the hub's answer is given up (logged).
const STORE_RETRY_FOR: Duration = Duration::from_secs(30);
/// The first pause before an ask's ending is stored again; it doubles up to
/// [`STORE_RETRY_LONGEST`].
const STORE_RETRY_FIRST: Duration = Duration::from_millis(500);
/// The longest pause before an ask's ending is stored again.
const STORE_RETRY_LONGEST: Duration = Duration::from_secs(8);

/// Stores a background ask's ending, again after a pause while storage is unavailable (a
/// held lock, a database restarting) and the server runs, for up to [`STORE_RETRY_FOR`]:
/// given up, the hub's answer would be lost and the ask would hold the gate `asking` until the
/// sweep of abandoned asks failed it.
async fn store_ending(
    orchestrator: &Orchestrator,
    ended: Consultation,
    stopping: &mut watch::Receiver<bool>,
) -> Result<Consultation, CoreError> {
    let until = tokio::time::Instant::now() + STORE_RETRY_FOR;
    let mut pause = STORE_RETRY_FIRST;
    loop {
        match orchestrator.store_ending(ended.clone()).await {
            Err(CoreError::Storage(RepositoryError::Unavailable(e)))
                if tokio::time::Instant::now() + pause < until && !*stopping.borrow() =>
            {
                tracing::warn!(
                    consultation = %ended.id,
                    error = %e,
                    "an ask's outcome could not be stored yet; trying again"
                );
                tokio::select! {
                    () = tokio::time::sleep(pause) => pause = (pause * 2).min(STORE_RETRY_LONGEST),
                    // One more try, at once.
                    () = stopped(stopping) => {}
                }
            }
            outcome => return outcome,
        }
    }
}

/// The seal of a consultation answered with `status`, for a request that claimed its key.
fn sealed(claimed: &Claimed, status: StatusCode) -> Seal<Consultation> {
    claimed.seal(move |consultation| consultation_answer(status, consultation))
}

/// Completes once the server stops (or the sender is gone).
async fn stopped(stopping: &mut watch::Receiver<bool>) {
    // The guard `wait_for` returns is dropped here, not held across an await.
    let _ = stopping.wait_for(|stop| *stop).await;
}
