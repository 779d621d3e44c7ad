//! Webhook delivery: the target check made when a webhook is created, and the worker that
//! turns new events into deliveries and POSTs them, signed, on the retry schedule.
//!
//! Every [`POLL_EVERY`] the worker (one task per server) enqueues each webhook's new events
//! and claims the deliveries that are due; each claimed delivery is attempted by its own task
//! (at most [`MAX_IN_FLIGHT`] at once), and its outcome stored under the claim's lease. The
//! store makes a replica's claim exclusive (see `storage::webhooks`), so with several replicas
//! each delivery is attempted by one at a time.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use orchestrator_core::api::{CreateWebhookRequest, Webhook};
use orchestrator_core::webhook::{
    DeliveryStatus, RetrySchedule, ScheduledAttempt, WebhookSecret, is_public_address,
};
use orchestrator_core::{EventFilter, EventType, RepositoryError, Timestamp, ValidationError};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;

use super::App;
use super::error::ApiError;
use crate::dns::{CHECK_LOOKUPS, DELIVERY_LOOKUPS, Lookups, Resolver};
use crate::storage::{AttemptRecord, ClaimRoom, DueDelivery, WebhookRepository};

/// How often the worker looks for new events and due deliveries: a first attempt starts
/// within this of the event's commit.
pub const POLL_EVERY: Duration = Duration::from_millis(200);
/// How long an attempt may take to get an answer; slower is a failed attempt.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a claim holds a delivery: longer than an attempt and the writes around it (the
/// claim itself, an enqueue round before the outcome is stored, the store's write: each may
/// wait seconds on a slow database), so a live replica's attempt is not taken over; short
/// enough that a dead replica's is retried soon.
const LEASE: Duration = Duration::from_secs(60);
/// How long a connection to a receiver is kept idle for the next attempt: shorter than the
/// common servers' keep-alive (gunicorn's 2 s, Node's and uvicorn's 5 s), so that an attempt
/// does not go out on a connection its receiver is closing (failed, it would wait for its
/// retry). A burst of deliveries still shares its connections.
const IDLE_CONNECTION: Duration = Duration::from_secs(1);
/// Attempts in flight at once, per server.
pub const MAX_IN_FLIGHT: usize = 64;
/// Attempts of one webhook in flight at once, per server: a receiver that hangs or is slow
/// holds three quarters of the slots, and the other webhooks' deliveries go on in the rest
/// (while one busy webhook alone still has more attempts in flight than a server once had).
pub const PER_WEBHOOK: u32 = MAX_IN_FLIGHT as u32 / 4 * 3;
/// How long creating a webhook waits for a turn to look its host up, and then for the name
/// servers' answer (either way 503, retry later).
const CHECK_LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);
/// Events read per enqueue.
const ENQUEUE_BATCH: u32 = 500;
/// How long one round may spend enqueueing (then it ends after the batch under way): a
/// backlog (a burst of changes, many webhooks, a slow database) is worked off over several
/// rounds, so the claims and the outcomes of the attempts that ended wait for it no longer
/// than this and one batch more.
const ENQUEUE_BUDGET: Duration = Duration::from_secs(5);
/// How often every webhook's mark is looked at even when the log has not grown.
const FULL_PASS_EVERY: Duration = Duration::from_secs(60);
/// Longest URL.
const MAX_URL_LEN: usize = 2048;
/// Longest description.
const MAX_DESCRIPTION_LEN: usize = 500;
/// Longest `last_error` kept.
const MAX_ERROR_LEN: usize = 500;

/// Why an attempt failed as its delivery keeps it: on one line, no control character (a NUL
/// a TLS library quoted from a certificate would make PostgreSQL refuse the whole batch of
/// outcomes, at every try), at most [`MAX_ERROR_LEN`] characters.
fn last_error(why: &str) -> String {
    why.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(MAX_ERROR_LEN)
        .collect()
}

/// How webhooks are sent.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct WebhookPolicy {
    /// The delays between attempts (`WEBHOOK_RETRY_SCHEDULE`).
    pub schedule: RetrySchedule,
    /// Whether targets on loopback, private and link-local addresses are allowed
    /// (`WEBHOOK_ALLOW_PRIVATE_NETWORKS`).
    pub allow_private_networks: bool,
}

/// The webhook store, the policy and the HTTP client of the deliveries.
pub struct Webhooks {
    store: Arc<dyn WebhookRepository>,
    policy: WebhookPolicy,
    client: reqwest::Client,
    /// The lookups of the hosts of webhooks being created.
    checks: Lookups,
}

impl Webhooks {
    /// Deliveries from `store` under `policy`; fails only if the HTTP client cannot be built
    /// (its TLS roots cannot be loaded).
    pub fn new(
        store: Arc<dyn WebhookRepository>,
        policy: WebhookPolicy,
    ) -> Result<Self, reqwest::Error> {
        let client = reqwest::Client::builder()
            .timeout(ATTEMPT_TIMEOUT)
            .pool_idle_timeout(IDLE_CONNECTION)
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .user_agent(concat!("orchestrator-webhooks/", env!("CARGO_PKG_VERSION")))
            .dns_resolver(Arc::new(Resolver::new(
                !policy.allow_private_networks,
                Lookups::new(DELIVERY_LOOKUPS),
            )))
            .build()?;
        Ok(Webhooks {
            store,
            policy,
            client,
            checks: Lookups::new(CHECK_LOOKUPS),
        })
    }

    /// The store.
    pub fn store(&self) -> &dyn WebhookRepository {
        self.store.as_ref()
    }

    /// The policy.
    pub fn policy(&self) -> &WebhookPolicy {
        &self.policy
    }

    /// Checks a request to create a webhook: the URL (absolute http(s), and, unless private
    /// networks are allowed, a host whose every address is public), the event types and the
    /// description. Answers the webhook to store, made at `now`.
    pub async fn check(
        &self,
        request: CreateWebhookRequest,
        now: Timestamp,
    ) -> Result<Webhook, ApiError> {
        let url = check_url(&request.url)?;
        let mut event_types = Vec::new();
        for name in request.event_types.unwrap_or_default() {
            let event_type = EventType::parse_field("event_types", &name)?;
            if !event_types.contains(&event_type) {
                event_types.push(event_type);
            }
        }
        let description = request.description.filter(|d| !d.trim().is_empty());
        if let Some(text) = &description {
            // Free text as everywhere: NUL and the other control characters are refused on
            // every back end (PostgreSQL cannot store NUL in text).
            orchestrator_core::values::check_text(text, MAX_DESCRIPTION_LEN)
                .map_err(|rule| ValidationError::new("description", rule))?;
        }
        // Last: the other fields' mistakes are told without a lookup of the host's name
        // (which may be slow, or fail, and would hide them).
        if !self.policy.allow_private_networks {
            check_public(&url, &self.checks).await?;
        }
        Ok(Webhook {
            id: format!("wh_{}", uuid::Uuid::new_v4().simple()),
            url: url.to_string(),
            event_types,
            description,
            created_at: now,
        })
    }

    /// Warns, naming each, of the webhooks whose target deliveries now refuse: a loopback,
    /// private or link-local address written as such, or a `localhost` name, while private
    /// networks are not allowed (they were when it was made). Their deliveries fail on every
    /// attempt of the retry schedule; delete them or allow private networks again.
    pub async fn warn_of_refused_targets(&self) {
        if self.policy.allow_private_networks {
            return;
        }
        let webhooks = match self.store.webhooks().await {
            Ok(webhooks) => webhooks,
            Err(e) => {
                tracing::warn!(error = %e, "could not read the webhooks to check their targets");
                return;
            }
        };
        for webhook in webhooks {
            if let Some(target) = refused_target(&webhook.url) {
                tracing::warn!(
                    webhook = %webhook.id,
                    address = %target,
                    "a webhook's target is not a public address, and \
                     WEBHOOK_ALLOW_PRIVATE_NETWORKS is off: every delivery to it fails; delete \
                     the webhook or allow private networks"
                );
            }
        }
    }

    /// The outcome to store of an attempt of `delivery` that `posted` (its answer's status, or
    /// why there was none) and that ended at `ended`: the next attempt is timed from its end.
    fn outcome(
        &self,
        delivery: &DueDelivery,
        posted: Result<Answer, String>,
        ended: Timestamp,
    ) -> AttemptRecord {
        let attempt = ScheduledAttempt::after(delivery.attempts, delivery.schedule_from);
        let (status_code, error) = match posted {
            Ok(Answer { status, .. }) if (200..300).contains(&status) => (Some(status), None),
            Ok(Answer {
                status,
                location: Some(location),
            }) => (
                Some(status),
                Some(format!(
                    "the target answered {status}, a redirect, which is not followed (make a \
                     webhook of where it points and delete this one): {location}"
                )),
            ),
            Ok(Answer { status, .. }) => {
                (Some(status), Some(format!("the target answered {status}")))
            }
            Err(error) => (None, Some(error)),
        };
        let (status, next_attempt_at) =
            self.policy
                .schedule
                .after_attempt(attempt.position(), error.is_none(), ended);
        AttemptRecord {
            id: delivery.id.clone(),
            lease: delivery.lease,
            redeliveries: delivery.redeliveries,
            attempts: attempt.number,
            schedule_from: attempt.schedule_from,
            status,
            status_code,
            delivered_at: error.is_none().then_some(ended),
            error: error.as_deref().map(last_error),
            next_attempt_at,
        }
    }

    /// POSTs the delivery's payload with the Standard Webhooks headers: the answer, or why
    /// there was none.
    async fn post(&self, delivery: &DueDelivery, now: Timestamp) -> Result<Answer, String> {
        let secret = WebhookSecret::parse(&delivery.secret)
            .map_err(|e| format!("the stored secret is unusable: {e}"))?;
        let timestamp = now.timestamp();
        let signature = secret.sign(&delivery.id, timestamp, delivery.payload.as_bytes());
        if !self.policy.allow_private_networks {
            // A literal address skips the resolver.
            let url = reqwest::Url::parse(&delivery.url).map_err(|e| e.to_string())?;
            if let Some(address) = literal_address(&url)
                && !is_public_address(address)
            {
                return Err(format!("refused: {address} is not a public address"));
            }
        }
        let response = self
            .client
            .post(&delivery.url)
            .header(http::header::CONTENT_TYPE, "application/json")
            .header("webhook-id", &delivery.id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(delivery.payload.clone())
            .send()
            .await
            .map_err(describe)?;
        let status = response.status();
        // Resolved against the URL posted to (a `Location` may be relative), as a browser
        // would follow it.
        let location = status
            .is_redirection()
            .then(|| response.headers().get(http::header::LOCATION))
            .flatten()
            .map(|value| {
                let text = String::from_utf8_lossy(value.as_bytes());
                response
                    .url()
                    .join(&text)
                    .map_or_else(|_| text.into_owned(), String::from)
            });
        Ok(Answer {
            status: status.as_u16(),
            location,
        })
    }
}

/// What a receiver answered an attempt.
struct Answer {
    /// The status.
    status: u16,
    /// Where a redirect (3xx) pointed, which is not followed.
    location: Option<String>,
}

/// A reqwest failure in a sentence, with its causes.
fn describe(error: reqwest::Error) -> String {
    let mut text = if error.is_timeout() {
        format!("no answer within {} s", ATTEMPT_TIMEOUT.as_secs())
    } else if error.is_connect() {
        "could not connect".to_owned()
    } else {
        "the request failed".to_owned()
    };
    text.push_str(&crate::causes(&error));
    text
}

fn chrono_delay(delay: Duration) -> chrono::Duration {
    chrono::Duration::from_std(delay).unwrap_or(chrono::Duration::days(7))
}

/// An absolute `http` or `https` URL with a host, a port other than 0 and no credentials, of
/// at most 2048 characters as given and as stored (percent-encoded, which may make it longer).
fn check_url(text: &str) -> Result<reqwest::Url, ValidationError> {
    let bad = |rule: &str| ValidationError::new("url", rule);
    if text.chars().count() > MAX_URL_LEN {
        return Err(bad("must be at most 2048 characters"));
    }
    let url = reqwest::Url::parse(text).map_err(|_| bad("must be an absolute http(s) URL"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none_or(str::is_empty) {
        return Err(bad("must be an absolute http(s) URL"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(bad("must not carry credentials"));
    }
    if url.port() == Some(0) {
        return Err(bad("must not name port 0 (nothing can be reached there)"));
    }
    if url.as_str().len() > MAX_URL_LEN {
        return Err(bad(
            "must be at most 2048 characters once percent-encoded, as it is stored and sent (each non-ASCII character takes 6 to 12)",
        ));
    }
    Ok(url)
}

/// The host of `url` when deliveries to it are refused whatever its name servers say, where
/// private networks are not allowed: a non-public address written as such, or a `localhost`
/// name (which never resolves to a public one). `None` for every other URL, names that may
/// resolve somewhere private included (they are judged at each attempt).
fn refused_target(url: &str) -> Option<String> {
    let url = reqwest::Url::parse(url).ok()?;
    if let Some(address) = literal_address(&url) {
        return (!is_public_address(address)).then(|| address.to_string());
    }
    let host = url.host_str()?.trim_end_matches('.').to_ascii_lowercase();
    (host == "localhost" || host.ends_with(".localhost")).then_some(host)
}

/// The URL's host as an address, when it is written as one.
fn literal_address(url: &reqwest::Url) -> Option<IpAddr> {
    let host = url.host_str()?;
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .ok()
}

/// Refuses a URL whose host is, or resolves to, an address that is not public, or does not
/// resolve within [`CHECK_LOOKUP_TIMEOUT`] of its turn (503 if it waits that long for one).
async fn check_public(url: &reqwest::Url, lookups: &Lookups) -> Result<(), ApiError> {
    let refuse = |address: IpAddr| {
        ValidationError::new(
            "url",
            format!(
                "resolves to {address}, a loopback, private or link-local address (allowed only with WEBHOOK_ALLOW_PRIVATE_NETWORKS=true)"
            ),
        )
    };
    if let Some(address) = literal_address(url) {
        return if is_public_address(address) {
            Ok(())
        } else {
            Err(refuse(address).into())
        };
    }
    let host = url.host_str().unwrap_or_default();
    let port = url.port_or_known_default().unwrap_or(443);
    let turn = tokio::time::timeout(CHECK_LOOKUP_TIMEOUT, lookups.turn())
        .await
        .map_err(|_| ApiError::LookupsBusy)?
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    let addresses = match tokio::time::timeout(
        CHECK_LOOKUP_TIMEOUT,
        Lookups::lookup_in(turn, host, port),
    )
    .await
    {
        // The name servers did not answer (in time): a moment's trouble, not the URL's
        // fault, so 503 (retry), which an idempotency key does not keep.
        Err(_) => return Err(ApiError::LookupFailed(host.to_owned())),
        Ok(Err(e)) if crate::dns::is_temporary(&e) => {
            return Err(ApiError::LookupFailed(host.to_owned()));
        }
        // A name the resolver refuses is refused as a name with no address.
        Ok(result) => result.unwrap_or_default(),
    };
    match addresses.iter().find(|a| !is_public_address(a.ip())) {
        Some(private) => Err(refuse(private.ip()).into()),
        None if addresses.is_empty() => {
            Err(ValidationError::new("url", format!("the host '{host}' does not resolve")).into())
        }
        None => Ok(()),
    }
}

/// The worker: every [`POLL_EVERY`] until `stop` turns true, enqueues new events and attempts
/// due deliveries. The outcomes of the attempts that ended are stored together, in one write,
/// as soon as the worker sees them end. While more are due than it has slots for, it claims
/// again once half the slots are free (fewer, larger claims). In-flight attempts finish
/// (bounded by [`ATTEMPT_TIMEOUT`]), and their outcomes are stored, before it ends.
pub async fn run(app: App, mut stop: watch::Receiver<bool>) {
    let Some(webhooks) = app.webhooks() else {
        return;
    };
    let slots = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let mut flights = InFlight::default();
    let mut tick = tokio::time::interval(POLL_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut busy = false;
    // The log's last id when every webhook was last brought up to it.
    let mut enqueued_through = None;
    // The webhook the next enqueue starts with, when the last one ran out of time.
    let mut enqueue_from = 0;
    // When every webhook was last brought up to the log's end.
    let mut passed_at = tokio::time::Instant::now();
    let mut ended = Vec::new();
    loop {
        let ticked = tokio::select! {
            // Stopping comes first: no new round (and no new claim) once it is asked.
            biased;
            _ = stop.wait_for(|stop| *stop) => break,
            _ = tick.tick() => true,
            Some(done) = flights.attempts.join_next_with_id() => {
                ended.extend(flights.landed(done));
                false
            }
        };
        while let Some(done) = flights.attempts.try_join_next_with_id() {
            ended.extend(flights.landed(done));
        }
        record(webhooks, &mut ended).await;
        // More may be due: every slot was taken when it last claimed and half are free now, or
        // a webhook it stopped at its share has half its share free now.
        let claim_again =
            (busy && slots.available_permits() >= MAX_IN_FLIGHT / 2) || flights.share_freed();
        if !(ticked || claim_again) {
            continue;
        }
        let round = async {
            if ticked
                && !enqueue(
                    &app,
                    webhooks,
                    &mut enqueued_through,
                    &mut enqueue_from,
                    &mut passed_at,
                )
                .await?
            {
                return Ok(false);
            }
            // The outcomes of attempts that ended while it enqueued are stored before the
            // claim: a delivery sent, its outcome not stored and its lease run out, would be
            // claimed and sent again.
            while let Some(done) = flights.attempts.try_join_next_with_id() {
                ended.extend(flights.landed(done));
            }
            record(webhooks, &mut ended).await;
            if *stop.borrow() {
                return Ok(false);
            }
            claim(&app, webhooks, &slots, &mut flights).await
        };
        busy = round.await.unwrap_or_else(|e: RepositoryError| {
            tracing::warn!(error = %e, "webhook deliveries: storage failed; retrying");
            false
        });
    }
    while let Some(done) = flights.attempts.join_next_with_id().await {
        ended.extend(flights.landed(done));
    }
    record(webhooks, &mut ended).await;
}

/// The attempts in flight on this server, and how many are of each webhook.
#[derive(Default)]
struct InFlight {
    attempts: JoinSet<AttemptRecord>,
    /// Each attempt's webhook, by task.
    webhook_of: HashMap<tokio::task::Id, String>,
    /// Attempts in flight, by webhook.
    by_webhook: HashMap<String, u32>,
    /// The webhooks the last claim stopped at their share: more of theirs may be due.
    at_share: Vec<String>,
}

impl InFlight {
    fn start(
        &mut self,
        webhook_id: String,
        attempt: impl Future<Output = AttemptRecord> + Send + 'static,
    ) {
        let task = self.attempts.spawn(attempt).id();
        *self.by_webhook.entry(webhook_id.clone()).or_insert(0) += 1;
        self.webhook_of.insert(task, webhook_id);
    }

    /// Whether a webhook the last claim stopped at its share has half of it free again.
    fn share_freed(&self) -> bool {
        self.at_share
            .iter()
            .any(|webhook| self.by_webhook.get(webhook).copied().unwrap_or(0) <= PER_WEBHOOK / 2)
    }

    /// An attempt that ended: its outcome (none if its task failed), and its place freed.
    fn landed(
        &mut self,
        done: Result<(tokio::task::Id, AttemptRecord), tokio::task::JoinError>,
    ) -> Option<AttemptRecord> {
        let (task, record) = match done {
            Ok((task, record)) => (task, Some(record)),
            Err(failed) => (failed.id(), None),
        };
        if let Some(webhook) = self.webhook_of.remove(&task)
            && let Some(n) = self.by_webhook.get_mut(&webhook)
        {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.by_webhook.remove(&webhook);
            }
        }
        record
    }
}

/// Turns each webhook's new events into deliveries; false when there is no webhook. Writes
/// nothing when no event was committed since every webhook was last brought up to `through`
/// (the log's last id then; moved here), but for a pass over every webhook once a minute: a
/// webhook whose mark waits before an event of a type this version does not know (left a
/// while to a newer replica) is looked at again once the wait is over, new events or not.
/// One webhook's failure is logged and the others go on. Once [`ENQUEUE_BUDGET`] is spent
/// (checked after each batch), the round ends and the next starts with the webhook after the
/// last one served (`first`, an index into the list).
async fn enqueue(
    app: &App,
    webhooks: &Webhooks,
    through: &mut Option<u64>,
    first: &mut usize,
    passed_at: &mut tokio::time::Instant,
) -> Result<bool, RepositoryError> {
    let store = webhooks.store();
    // Read before the webhooks: an event committed after it makes the next round look again,
    // and a webhook created after it starts at the log's last id then, at or past this one.
    let last = app
        .orchestrator()
        .repository()
        .events(u64::MAX - 1, &EventFilter::default(), 1)
        .await?
        .last_id;
    if *through == Some(last) && passed_at.elapsed() < FULL_PASS_EVERY {
        return Ok(true);
    }
    let subscribed = store.webhooks().await?;
    if subscribed.is_empty() {
        return Ok(false);
    }
    let budget = tokio::time::Instant::now() + ENQUEUE_BUDGET;
    let mut every = true;
    let count = subscribed.len();
    for k in 0..count {
        let at = (*first + k) % count;
        let webhook = &subscribed[at];
        let brought = async {
            while store
                .enqueue_deliveries(&webhook.id, app.now(), ENQUEUE_BATCH)
                .await?
                >= u64::from(ENQUEUE_BATCH)
            {
                if tokio::time::Instant::now() >= budget {
                    return Ok(false);
                }
            }
            Ok::<_, RepositoryError>(true)
        };
        let finished = match brought.await {
            Ok(finished) => finished,
            Err(e) => {
                every = false;
                tracing::warn!(webhook = %webhook.id, error = %e, "could not enqueue a webhook's deliveries; retrying");
                true
            }
        };
        if !finished || (k + 1 < count && tokio::time::Instant::now() >= budget) {
            // Out of time: the next round starts with the webhook after this one, so a
            // backlog of one never keeps the others waiting for theirs.
            every = false;
            *first = (at + 1) % count;
            break;
        }
    }
    *through = every.then_some(last);
    if every {
        *passed_at = tokio::time::Instant::now();
    }
    Ok(true)
}

/// Claims as many due deliveries as there are free slots (at most [`PER_WEBHOOK`] of one
/// webhook in flight) and starts their attempts; true when every slot is taken (more may be
/// due). Notes the webhooks it stopped at their share, to claim again when theirs frees.
async fn claim(
    app: &App,
    webhooks: &Arc<Webhooks>,
    slots: &Arc<Semaphore>,
    flights: &mut InFlight,
) -> Result<bool, RepositoryError> {
    let free = u32::try_from(slots.available_permits()).unwrap_or(0);
    if free == 0 {
        return Ok(!flights.attempts.is_empty());
    }
    let now = app.now();
    let room = ClaimRoom {
        limit: free,
        per_webhook: PER_WEBHOOK,
        in_flight: flights.by_webhook.clone(),
    };
    let due = webhooks
        .store()
        .claim_deliveries(now, now + chrono_delay(LEASE), &room)
        .await?;
    let full = due.len() == free as usize;
    for delivery in due {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            break;
        };
        let (app, webhooks) = (app.clone(), webhooks.clone());
        flights.start(delivery.webhook_id.clone(), async move {
            let _slot = slot;
            deliver(&app, &webhooks, delivery).await
        });
    }
    flights.at_share = flights
        .by_webhook
        .iter()
        .filter(|(_, n)| **n >= PER_WEBHOOK)
        .map(|(webhook, _)| webhook.clone())
        .collect();
    Ok(full)
}

/// Attempts one delivery: the outcome to store.
async fn deliver(app: &App, webhooks: &Webhooks, delivery: DueDelivery) -> AttemptRecord {
    let started = Instant::now();
    let posted = webhooks.post(&delivery, app.now()).await;
    let record = webhooks.outcome(&delivery, posted, app.now());
    let outcome = match record.status {
        DeliveryStatus::Delivered => "delivered",
        DeliveryStatus::Pending => "retry",
        DeliveryStatus::Failed => "failed",
    };
    app.metrics().webhook_attempt(outcome, started.elapsed());
    tracing::debug!(
        delivery = %delivery.id,
        webhook = %delivery.webhook_id,
        attempts = record.attempts,
        outcome,
        error = record.error.as_deref().unwrap_or(""),
        "webhook delivery attempted"
    );
    record
}

/// Stores the outcomes of the attempts that ended, in one write, and empties `ended`; if the
/// write fails they are kept, to be stored by the next (each only while its claim holds).
async fn record(webhooks: &Webhooks, ended: &mut Vec<AttemptRecord>) {
    if ended.is_empty() {
        return;
    }
    match webhooks.store().record_attempts(ended).await {
        Ok(stored) if stored < ended.len() as u64 => tracing::debug!(
            attempts = ended.len(),
            stored,
            "some deliveries' claims had ended; their outcomes were not stored"
        ),
        Ok(_) => {}
        // Kept for the next write: sent and not stored, a delivery would be sent again once
        // its lease ended (at least once, but not twice for one slow write).
        Err(e) => {
            tracing::warn!(
                attempts = ended.len(),
                error = %e,
                "could not store webhook attempts; trying again"
            );
            // Past a few claims' worth, the oldest go: their leases are long over.
            let over = ended.len().saturating_sub(4 * MAX_IN_FLIGHT);
            ended.drain(..over);
            return;
        }
    }
    ended.clear();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn why_an_attempt_failed_is_kept_on_one_line_without_control_characters() {
        assert_eq!(
            last_error("certificate for a\0b.example\nis not valid"),
            "certificate for a b.example is not valid"
        );
        assert_eq!(last_error(&"é".repeat(600)).chars().count(), MAX_ERROR_LEN);
    }

    #[test]
    fn a_target_is_an_absolute_http_url_without_credentials() {
        for good in ["http://example.com/hook", "https://example.com:8443/x?y=1"] {
            assert!(check_url(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "example.com/hook",
            "/hook",
            "ftp://example.com/",
            "file:///etc/passwd",
            "https://user:pw@example.com/",
            "http://",
        ] {
            assert_eq!(check_url(bad).unwrap_err().field, "url", "{bad}");
        }
        assert!(check_url(&format!("https://example.com/{}", "a".repeat(2048))).is_err());
        assert!(check_url("https://example.com:0/").is_err());
        // 2048 characters, counted as given and once encoded as they are stored and sent.
        let longest = format!("https://example.com/{}", "a".repeat(2048 - 20));
        assert_eq!(check_url(&longest).unwrap().as_str().len(), 2048);
        let wide = format!("https://example.com/{}", "é".repeat(1_000));
        assert!(check_url(&wide).is_err_and(|e| e.rule.contains("percent-encoded")));
        let short = format!("https://example.com/{}", "é".repeat(300));
        assert!(check_url(&short).is_ok(), "1 800 bytes encoded");
        let many = format!("https://example.com/{}", "é".repeat(1_100));
        assert!(check_url(&many).is_err(), "percent-encoded past 2048");
    }

    #[test]
    fn a_target_refused_whatever_its_name_servers_say_is_found() {
        for (url, host) in [
            ("http://127.0.0.1:9000/hook", "127.0.0.1"),
            ("http://[::1]/hook", "::1"),
            ("https://10.1.2.3/", "10.1.2.3"),
            ("http://[::ffff:10.0.0.1]/", "::ffff:10.0.0.1"),
            ("http://localhost:8080/", "localhost"),
            ("http://Hooks.LocalHost./x", "hooks.localhost"),
        ] {
            assert_eq!(refused_target(url).as_deref(), Some(host), "{url}");
        }
        for url in [
            "https://93.184.215.14/hook",
            "https://hooks.example.com/",
            "https://localhost.example.com/",
            "not a url",
        ] {
            assert_eq!(refused_target(url), None, "{url}");
        }
    }

    #[tokio::test]
    async fn loopback_and_private_targets_are_refused() {
        let lookups = Lookups::new(CHECK_LOOKUPS);
        for private in [
            "http://127.0.0.1:9/",
            "http://localhost:9/",
            "http://10.0.0.1/",
            "http://[::1]/",
            "http://169.254.169.254/latest",
        ] {
            let url = check_url(private).unwrap();
            let Err(ApiError::Validation(error)) = check_public(&url, &lookups).await else {
                panic!("{private} is refused");
            };
            assert_eq!(error.field, "url", "{private}");
            assert!(
                error.rule.contains("WEBHOOK_ALLOW_PRIVATE_NETWORKS"),
                "{private}"
            );
        }
        let public = check_url("http://93.184.216.34/").unwrap();
        assert!(check_public(&public, &lookups).await.is_ok());
    }

    #[test]
    fn a_lookup_the_name_servers_did_not_answer_is_503() {
        let response = ApiError::LookupFailed("hooks.example.com".into()).into_response();
        assert_eq!(response.status(), 503);
        assert_eq!(response.headers()["retry-after"], "5");
    }

    #[tokio::test(start_paused = true)]
    async fn a_host_that_waits_too_long_for_a_lookup_is_told_to_retry() {
        let lookups = Lookups::new(CHECK_LOOKUPS);
        // Every turn taken, as by a lookup the name servers never answer.
        let _held = lookups.turn().await.unwrap();
        let url = check_url("https://hooks.example.com/in").unwrap();
        let waited = check_public(&url, &lookups).await;
        assert!(matches!(waited, Err(ApiError::LookupsBusy)), "{waited:?}");
        let response = ApiError::LookupsBusy.into_response();
        assert_eq!(response.status(), 503);
        assert_eq!(response.headers()["retry-after"], "5");
    }
}
