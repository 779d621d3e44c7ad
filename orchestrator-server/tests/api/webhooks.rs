//! Webhooks: subscriptions through the typed client, deliveries received by a real HTTP
//! receiver and checked with the client's signature helper, the retry schedule, redelivery,
//! refusals, a redelivery during an attempt, a receiver that never answers beside a healthy
//! one, delivery after `kill -9` with the receiver down, and two PostgreSQL replicas
//! delivering each event once.

use std::collections::{BTreeMap, VecDeque};
use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::HeaderMap;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use orchestrator_client::Client;
use orchestrator_client::webhooks::{SignatureError, verify_signature};
use orchestrator_core::EventType;
use orchestrator_core::api::{
    AdvanceRequest, CreateWebhookRequest, DeliveriesQuery, Delivery, ErrorCode,
    StartWorkflowRequest, Webhook,
};
use orchestrator_core::webhook::{DeliveryStatus, RetrySchedule};
use orchestrator_server::storage::{ClaimRoom, DatabaseUrl};
use serde_json::Value;
use tempfile::TempDir;
use tokio::net::TcpListener;
use tokio::sync::mpsc;

use crate::helpers::{
    TestApp, free_port, id, run_sql, silent_server, spawn_app, spawn_app_with, sqlite_server,
    stub_server, wait_healthy,
};
use crate::postgres::TestDatabase;

/// One POST a receiver got.
#[derive(Debug, Clone)]
struct Received {
    headers: HeaderMap,
    body: Bytes,
}

impl Received {
    fn event(&self) -> Value {
        serde_json::from_slice(&self.body).expect("a JSON body")
    }

    fn webhook_id(&self) -> String {
        self.headers["webhook-id"].to_str().unwrap().to_owned()
    }
}

/// An HTTP receiver on loopback: records every request and answers the scripted statuses in
/// turn (then 200), after the scripted holds (then at once); it notes the most requests it
/// had in hand at once.
struct Receiver {
    url: String,
    got: mpsc::UnboundedReceiver<Received>,
    answers: Arc<Mutex<VecDeque<u16>>>,
    holds: Arc<Mutex<VecDeque<Duration>>>,
    most_at_once: Arc<AtomicUsize>,
}

impl Receiver {
    async fn start() -> Receiver {
        Self::on(TcpListener::bind("127.0.0.1:0").await.unwrap())
    }

    fn on(listener: TcpListener) -> Receiver {
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let (sender, got) = mpsc::unbounded_channel();
        let answers = Arc::new(Mutex::new(VecDeque::new()));
        let holds = Arc::new(Mutex::new(VecDeque::new()));
        let most_at_once = Arc::new(AtomicUsize::new(0));
        let at_once = Arc::new(AtomicUsize::new(0));
        let script = (
            answers.clone(),
            holds.clone(),
            at_once,
            most_at_once.clone(),
        );
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (sender, script) = (sender.clone(), script.clone());
                let service = service_fn(move |request: http::Request<hyper::body::Incoming>| {
                    let (sender, (answers, holds, at_once, most)) =
                        (sender.clone(), script.clone());
                    async move {
                        let now = at_once.fetch_add(1, Ordering::SeqCst) + 1;
                        most.fetch_max(now, Ordering::SeqCst);
                        let (parts, body) = request.into_parts();
                        let body = body
                            .collect()
                            .await
                            .map(|b| b.to_bytes())
                            .unwrap_or_default();
                        let _ = sender.send(Received {
                            headers: parts.headers,
                            body,
                        });
                        let hold = holds.lock().unwrap().pop_front();
                        if let Some(hold) = hold {
                            tokio::time::sleep(hold).await;
                        }
                        at_once.fetch_sub(1, Ordering::SeqCst);
                        let status = answers.lock().unwrap().pop_front().unwrap_or(200);
                        let mut response = http::Response::new(Full::new(Bytes::new()));
                        *response.status_mut() = http::StatusCode::from_u16(status).unwrap();
                        Ok::<_, Infallible>(response)
                    }
                });
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service),
                );
            }
        });
        Receiver {
            url,
            got,
            answers,
            holds,
            most_at_once,
        }
    }

    fn answer(&self, statuses: &[u16]) {
        self.answers.lock().unwrap().extend(statuses);
    }

    /// The next requests are answered after these holds, in turn.
    fn hold(&self, holds: &[Duration]) {
        self.holds.lock().unwrap().extend(holds);
    }

    /// The next request, within 15 s.
    async fn next(&mut self) -> Received {
        tokio::time::timeout(Duration::from_secs(15), self.got.recv())
            .await
            .expect("a delivery within 15 s")
            .expect("the receiver runs")
    }

    /// No request within `wait`.
    async fn quiet(&mut self, wait: Duration) {
        if let Ok(Some(extra)) = tokio::time::timeout(wait, self.got.recv()).await {
            panic!("unexpected delivery: {}", extra.event());
        }
    }
}

/// Waits (up to 20 s) until a delivery of `webhook` satisfies `done`; answers them all.
async fn deliveries_until(
    client: &Client,
    webhook: &str,
    done: impl Fn(&[Delivery]) -> bool,
) -> Vec<Delivery> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let page = client
            .list_deliveries(webhook, &DeliveriesQuery::default())
            .await
            .expect("deliveries");
        if done(&page.items) {
            return page.items;
        }
        assert!(
            Instant::now() < deadline,
            "deliveries now: {:?}",
            page.items
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits (up to 20 s) until `webhook`'s newest delivery is delivered; answers them all.
async fn newest_delivered(client: &Client, webhook: &str) -> Vec<Delivery> {
    deliveries_until(client, webhook, |items| {
        items
            .first()
            .is_some_and(|d| d.status == DeliveryStatus::Delivered)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn each_matching_event_is_posted_signed_and_recorded_as_delivered() {
    let app = spawn_app().await;
    let mut receiver = Receiver::start().await;
    app.start_workflow("before-the-webhook").await;
    let created = app
        .client
        .create_webhook(&CreateWebhookRequest {
            url: receiver.url.clone(),
            event_types: Some(vec!["workflow.transitioned".into()]),
            description: Some("the tests' receiver".into()),
        })
        .await
        .unwrap();
    assert!(created.webhook.id.starts_with("wh_"));
    assert!(created.secret.starts_with("whsec_"));
    assert_eq!(created.webhook.event_types.len(), 1);

    app.start_workflow("hooked").await;
    app.client
        .advance_workflow(&id("hooked"), &AdvanceRequest::new("agent_complete"))
        .await
        .unwrap();
    app.client
        .create_consultation(
            &id("hooked"),
            &orchestrator_core::api::ConsultRequest {
                topic: "testing".into(),
                question: "Is this covered?".into(),
                ..Default::default()
            },
        )
        .await
        .unwrap();

    // Deliveries are attempted side by side: they may arrive in any order.
    let mut got = [receiver.next().await, receiver.next().await];
    got.sort_by_key(|r| r.event()["id"].as_str().unwrap().parse::<u64>().unwrap());
    let [first, second] = got;
    for (received, state) in [(&first, "PHASE_1"), (&second, "GATE_1")] {
        let event = received.event();
        assert_eq!(event["type"], "workflow.transitioned");
        assert_eq!(event["subject"], "hooked");
        assert_eq!(event["data"]["state"], state);
        assert_eq!(received.headers["content-type"], "application/json");
        assert_eq!(
            verify_signature(&created.secret, &received.headers, &received.body),
            Ok(())
        );
    }
    // The event before the webhook existed, and the consultation's, are not sent.
    receiver.quiet(Duration::from_millis(800)).await;

    // A body changed on the way, or another webhook's secret, is detected.
    let mut forged = first.body.to_vec();
    forged.extend_from_slice(b" ");
    assert_eq!(
        verify_signature(&created.secret, &first.headers, &forged),
        Err(SignatureError::Mismatch)
    );
    let other = app
        .client
        .create_webhook(&CreateWebhookRequest::new(receiver.url.clone()))
        .await
        .unwrap();
    assert_eq!(
        verify_signature(&other.secret, &first.headers, &first.body),
        Err(SignatureError::Mismatch)
    );

    let deliveries = deliveries_until(&app.client, &created.webhook.id, |items| {
        items.len() == 2 && items.iter().all(|d| d.status == DeliveryStatus::Delivered)
    })
    .await;
    // Newest event first; the webhook-id header is the delivery's id.
    assert_eq!(deliveries[0].id, second.webhook_id());
    assert_eq!(deliveries[1].id, first.webhook_id());
    assert_eq!(deliveries[0].event_id, second.event()["id"]);
    for delivery in &deliveries {
        assert_eq!(delivery.attempts, 1);
        assert_eq!(delivery.last_status_code, Some(200));
        assert!(delivery.delivered_at.is_some() && delivery.next_attempt_at.is_none());
        // Made when its event was turned into it, before it was delivered.
        assert!(
            Some(delivery.created_at) <= delivery.delivered_at,
            "{delivery:?}"
        );
    }
    let made_at = |received: &Received| {
        let time = received.event()["time"].as_str().unwrap().to_owned();
        chrono::DateTime::parse_from_rfc3339(&time).unwrap()
    };
    assert!(
        deliveries[1].created_at >= made_at(&first),
        "{deliveries:?}"
    );
    let metrics = app.metrics().await;
    for series in [
        "orchestrator_webhook_attempts_total{outcome=\"delivered\"} 2",
        "orchestrator_webhook_deliveries_pending 0",
        "orchestrator_webhook_oldest_due_seconds 0",
        "orchestrator_webhook_oldest_unenqueued_seconds 0",
    ] {
        assert!(
            metrics.contains(series),
            "{series} missing from:\n{metrics}"
        );
    }
}

/// A server that retries a failed delivery twice, a second apart, and a receiver subscribed
/// to it that answers `statuses` in turn.
async fn retried_every_second(statuses: &[u16]) -> (TestApp, Receiver, Webhook) {
    let app = spawn_app_with(|c| {
        c.webhook_retry_schedule = RetrySchedule::parse("1s,1s").unwrap();
    })
    .await;
    let receiver = Receiver::start().await;
    receiver.answer(statuses);
    let webhook = app
        .client
        .create_webhook(&CreateWebhookRequest::new(receiver.url.clone()))
        .await
        .unwrap()
        .webhook;
    (app, receiver, webhook)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failing_target_is_retried_on_the_schedule_then_failed_and_can_be_redelivered() {
    let (app, mut receiver, webhook) = retried_every_second(&[503, 500, 502]).await;
    app.start_workflow("flaky").await;

    let first = receiver.next().await;
    // Answered 503 and due again in a second: pending, and not yet late.
    let metrics = app.metrics().await;
    for series in [
        "orchestrator_webhook_deliveries_pending 1",
        "orchestrator_webhook_oldest_due_seconds 0",
    ] {
        assert!(
            metrics.contains(series),
            "{series} missing from:\n{metrics}"
        );
    }
    let attempts = [first, receiver.next().await, receiver.next().await];
    let ids: Vec<String> = attempts.iter().map(Received::webhook_id).collect();
    assert!(
        ids.iter().all(|id| *id == ids[0]),
        "one delivery id: {ids:?}"
    );
    // Each attempt signed when it is made (a retry past the receivers' five minutes would be
    // refused with the first attempt's time): a second apart, so are their timestamps.
    let stamps: Vec<i64> = attempts
        .iter()
        .map(|a| {
            a.headers["webhook-timestamp"]
                .to_str()
                .unwrap()
                .parse()
                .unwrap()
        })
        .collect();
    assert!(stamps.windows(2).all(|w| w[1] > w[0]), "{stamps:?}");
    let delivery = deliveries_until(&app.client, &webhook.id, |items| {
        items
            .first()
            .is_some_and(|d| d.status == DeliveryStatus::Failed)
    })
    .await
    .remove(0);
    assert_eq!(delivery.attempts, 3);
    assert_eq!(delivery.last_status_code, Some(502));
    assert_eq!(
        delivery.last_error.as_deref(),
        Some("the target answered 502")
    );
    receiver.quiet(Duration::from_millis(1500)).await;

    let failed = app
        .client
        .list_deliveries(
            &webhook.id,
            &DeliveriesQuery {
                status: Some(DeliveryStatus::Failed),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(failed.items.len(), 1);

    // Redelivered: the same webhook-id, the attempts counting on, and a failure retried on
    // the schedule from its start (not failed at once for being past its last delay).
    receiver.answer(&[500]);
    app.client
        .redeliver(&webhook.id, &delivery.id)
        .await
        .unwrap();
    assert_eq!(receiver.next().await.webhook_id(), delivery.id);
    assert_eq!(receiver.next().await.webhook_id(), delivery.id);
    let delivered = newest_delivered(&app.client, &webhook.id).await.remove(0);
    assert_eq!(delivered.attempts, 5);
    assert_eq!(delivered.last_error, None);
    assert!(delivered.delivered_at.is_some());
    let metrics = app.metrics().await;
    assert!(metrics.contains("orchestrator_webhook_attempts_total{outcome=\"retry\"} 3"));
    assert!(metrics.contains("orchestrator_webhook_attempts_total{outcome=\"failed\"} 1"));

    // Redelivered again to a receiver that now fails: the record of the success stays.
    receiver.answer(&[500, 500, 500]);
    app.client
        .redeliver(&webhook.id, &delivery.id)
        .await
        .unwrap();
    let failed = deliveries_until(&app.client, &webhook.id, |items| {
        items
            .first()
            .is_some_and(|d| d.status == DeliveryStatus::Failed)
    })
    .await
    .remove(0);
    assert_eq!((failed.attempts, failed.last_status_code), (8, Some(500)));
    assert_eq!(failed.delivered_at, delivered.delivered_at);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_redelivery_asked_during_an_attempt_waits_for_it() {
    let app = spawn_app_with(|c| {
        c.webhook_retry_schedule = RetrySchedule::parse("60s").unwrap();
    })
    .await;
    let mut receiver = Receiver::start().await;
    receiver.hold(&[Duration::from_secs(2)]);
    // The attempt in flight succeeds; the redelivery's attempt fails.
    receiver.answer(&[200, 500]);
    let webhook = app
        .client
        .create_webhook(&CreateWebhookRequest::new(receiver.url.clone()))
        .await
        .unwrap()
        .webhook;
    app.start_workflow("slow-receiver").await;
    let first = receiver.next().await;
    // The first attempt is in the receiver's hands: redeliver now.
    app.client
        .redeliver(&webhook.id, &first.webhook_id())
        .await
        .unwrap();
    let second = receiver.next().await;
    assert_eq!(second.webhook_id(), first.webhook_id());
    assert_eq!(
        receiver.most_at_once.load(Ordering::SeqCst),
        1,
        "the redelivery was attempted while the first attempt was in flight"
    );
    let retried = deliveries_until(&app.client, &webhook.id, |items| {
        items.first().is_some_and(|d| d.attempts == 2)
    })
    .await;
    assert_eq!(retried.len(), 1);
    let retried = &retried[0];
    assert_eq!(
        (retried.status, retried.last_status_code),
        (DeliveryStatus::Pending, Some(500))
    );
    // The 2xx of the attempt that was in flight is on the record.
    assert!(retried.delivered_at.is_some(), "{retried:?}");
    receiver.quiet(Duration::from_millis(500)).await;
}

/// A receiver that answers with a redirect has failed the attempt: the redirect is not
/// followed (it could lead anywhere, a private address included, which a followed request
/// would reach unchecked).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_redirect_is_a_failed_attempt_and_is_not_followed() {
    let app = spawn_app().await;
    let mut elsewhere = Receiver::start().await;
    let location: &'static str = Box::leak(format!("location: {}\r\n", elsewhere.url).into());
    let redirecting = stub_server(move |_| (302, location, "")).await;
    let webhook = app
        .client
        .create_webhook(&CreateWebhookRequest::new(format!("{redirecting}/hook")))
        .await
        .unwrap()
        .webhook;
    app.start_workflow("redirected").await;
    let failed = deliveries_until(&app.client, &webhook.id, |items| {
        items.first().is_some_and(|d| d.attempts >= 1)
    })
    .await;
    assert_eq!(
        (failed[0].status, failed[0].last_status_code),
        (DeliveryStatus::Pending, Some(302)),
        "{failed:?}"
    );
    // Where it pointed is told, resolved, to make a webhook of.
    let error = failed[0].last_error.as_deref().unwrap_or_default();
    assert!(
        error.starts_with("the target answered 302, a redirect, which is not followed"),
        "{error}"
    );
    assert!(error.ends_with(&format!(": {}", elsewhere.url)), "{error}");
    elsewhere.quiet(Duration::from_millis(500)).await;

    // A relative one, as the address it leads to.
    let moving = stub_server(move |_| (301, "location: /v2/hook\r\n", "")).await;
    let webhook = app
        .client
        .create_webhook(&CreateWebhookRequest::new(format!("{moving}/hook")))
        .await
        .unwrap()
        .webhook;
    app.start_workflow("moved").await;
    let failed = deliveries_until(&app.client, &webhook.id, |items| {
        items.first().is_some_and(|d| d.attempts >= 1)
    })
    .await;
    let error = failed[0].last_error.as_deref().unwrap_or_default();
    assert!(error.ends_with(&format!(": {moving}/v2/hook")), "{error}");
}

/// A webhook deleted while its delivery waits for a retry: nothing more is sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_deleted_webhook_is_not_retried() {
    let (app, mut receiver, webhook) = retried_every_second(&[500, 500, 500]).await;
    app.start_workflow("deleted-meanwhile").await;
    receiver.next().await;
    deliveries_until(&app.client, &webhook.id, |items| {
        items.first().is_some_and(|d| d.attempts == 1)
    })
    .await;
    app.client.delete_webhook(&webhook.id).await.unwrap();
    receiver.quiet(Duration::from_secs(3)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_receiver_that_never_answers_does_not_hold_up_the_other_webhooks() {
    let app = spawn_app().await;
    // Takes connections and never answers: each attempt holds its slot until it times out.
    let hung_url = format!("{}/hook", silent_server().await);
    let stuck = app
        .client
        .create_webhook(&CreateWebhookRequest::new(hung_url))
        .await
        .unwrap()
        .webhook;
    // More deliveries due for it than the server has slots.
    for n in 0..70 {
        app.start_workflow(&format!("backlog-{n}")).await;
    }
    let mut receiver = Receiver::start().await;
    let healthy = app
        .client
        .create_webhook(&CreateWebhookRequest::new(receiver.url.clone()))
        .await
        .unwrap()
        .webhook;
    app.start_workflow("after-the-backlog").await;
    assert_eq!(
        receiver.next().await.event()["subject"],
        "after-the-backlog"
    );
    newest_delivered(&app.client, &healthy.id).await;
    // ...while every attempt at the hung receiver is still waiting for its answer: the
    // healthy webhook did not wait for their timeouts.
    let stuck_id = stuck.id;
    let stuck = app
        .client
        .list_deliveries(
            &stuck_id,
            &DeliveriesQuery {
                limit: Some(100),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert!(stuck.items.len() > 64, "{} deliveries", stuck.items.len());
    assert!(
        stuck.items.iter().all(|d| d.attempts == 0),
        "{:?}",
        stuck.items
    );
    // Ten seconds on, the attempts give up waiting: counted, why said, due again.
    let timed_out = deliveries_until(&app.client, &stuck_id, |items| {
        items.iter().any(|d| d.attempts > 0)
    })
    .await;
    let gave_up = timed_out.iter().find(|d| d.attempts > 0).unwrap();
    assert_eq!(gave_up.status, DeliveryStatus::Pending, "{gave_up:?}");
    assert_eq!(gave_up.last_status_code, None, "{gave_up:?}");
    assert!(
        gave_up
            .last_error
            .as_deref()
            .is_some_and(|e| e.starts_with("no answer within 10 s")),
        "{gave_up:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn webhooks_are_listed_paged_deleted_and_bad_requests_refused() {
    let app = spawn_app().await;
    let receiver = Receiver::start().await;
    let code = |result: orchestrator_client::Result<_>| result.map(|_: ()| ()).unwrap_err().code();

    for (request, field) in [
        (CreateWebhookRequest::new("not a url"), "url"),
        (CreateWebhookRequest::new("ftp://example.com/"), "url"),
        (
            CreateWebhookRequest::new("https://user:pw@example.com/"),
            "url",
        ),
        (
            CreateWebhookRequest {
                url: receiver.url.clone(),
                event_types: Some(vec!["workflow.exploded".into()]),
                description: None,
            },
            "event_types",
        ),
        (
            CreateWebhookRequest {
                url: receiver.url.clone(),
                event_types: None,
                description: Some("ops\u{0}pager".into()),
            },
            "description",
        ),
    ] {
        let error = app.client.create_webhook(&request).await.unwrap_err();
        assert_eq!(error.code(), Some(ErrorCode::ValidationError));
        let details = error.body().unwrap().details.clone().unwrap();
        assert!(details[0].starts_with(field), "{details:?}");
    }
    assert!(app.client.list_webhooks().await.unwrap().items.is_empty());

    let kept = app
        .client
        .create_webhook(&CreateWebhookRequest::new(receiver.url.clone()))
        .await
        .unwrap()
        .webhook;
    let listed = app.client.list_webhooks().await.unwrap().items;
    assert_eq!(listed, vec![kept.clone()]);
    assert_eq!(app.client.get_webhook(&kept.id).await.unwrap(), kept);
    // Read raw: the typed client would drop a field it does not know.
    for path in [
        "/webhooks".to_owned(),
        format!("/webhooks/{}", kept.id),
        format!("/webhooks/{}/deliveries", kept.id),
    ] {
        let raw = app.text(&path).await;
        assert!(
            !raw.contains("whsec_"),
            "the secret is shown only once: {path}: {raw}"
        );
    }

    // Three events, one page of two and one of one.
    for name in ["p1", "p2", "p3"] {
        app.start_workflow(name).await;
    }
    deliveries_until(&app.client, &kept.id, |items| items.len() == 3).await;
    let first = app
        .client
        .list_deliveries(
            &kept.id,
            &DeliveriesQuery {
                limit: Some(2),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(first.items.len(), 2);
    let rest = app
        .client
        .list_deliveries(
            &kept.id,
            &DeliveriesQuery {
                limit: Some(2),
                cursor: first.next_cursor.clone(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(rest.items.len(), 1);
    assert_eq!(rest.next_cursor, None);
    assert!(first.items[1].event_id > rest.items[0].event_id);

    for query in ["status=lost", "limit=0", "limit=501", "cursor=nope"] {
        let response = reqwest::get(app.url(&format!("/webhooks/{}/deliveries?{query}", kept.id)))
            .await
            .unwrap();
        assert_eq!(response.status(), 400, "{query}");
    }

    let missing = "wh_00000000000000000000000000000000";
    assert_eq!(
        app.client.get_webhook(missing).await.unwrap_err().code(),
        Some(ErrorCode::WebhookNotFound)
    );
    assert_eq!(
        code(app.client.delete_webhook(missing).await),
        Some(ErrorCode::WebhookNotFound)
    );
    assert_eq!(
        code(app.client.redeliver(missing, "msg_1").await),
        Some(ErrorCode::WebhookNotFound)
    );
    assert_eq!(
        code(app.client.redeliver(&kept.id, "msg_1").await),
        Some(ErrorCode::DeliveryNotFound)
    );
    app.client.delete_webhook(&kept.id).await.unwrap();
    assert_eq!(
        app.client
            .list_deliveries(&kept.id, &DeliveriesQuery::default())
            .await
            .unwrap_err()
            .code(),
        Some(ErrorCode::WebhookNotFound)
    );
    assert!(app.client.list_webhooks().await.unwrap().items.is_empty());
}

#[tokio::test]
async fn private_targets_are_refused_unless_allowed() {
    let app = spawn_app_with(|c| c.webhook_allow_private_networks = false).await;
    for url in [
        "http://127.0.0.1:8080/hook",
        "http://localhost/hook",
        "http://10.1.2.3/hook",
        "http://[::1]/hook",
        "http://169.254.169.254/latest/meta-data",
        // Other spellings of a private address: an IPv4 address inside IPv6, and the decimal
        // and hexadecimal forms URL parsing turns into 127.0.0.1.
        "http://[::ffff:127.0.0.1]/hook",
        "http://2130706433/hook",
        "http://0x7f.1/hook",
        "http://[64:ff9b::a01:203]/hook",
    ] {
        let error = app
            .client
            .create_webhook(&CreateWebhookRequest::new(url))
            .await
            .unwrap_err();
        assert_eq!(error.code(), Some(ErrorCode::ValidationError), "{url}");
        let detail = &error.body().unwrap().details.as_ref().unwrap()[0];
        assert!(
            detail.contains("WEBHOOK_ALLOW_PRIVATE_NETWORKS"),
            "{detail}"
        );
    }
    // The other fields are checked before the address is judged (and a name looked up): their
    // mistake is told.
    let request = CreateWebhookRequest {
        url: "http://10.1.2.3/hook".into(),
        event_types: Some(vec!["workflow.exploded".into()]),
        description: None,
    };
    let error = app.client.create_webhook(&request).await.unwrap_err();
    let detail = &error.body().unwrap().details.as_ref().unwrap()[0];
    assert!(detail.starts_with("event_types"), "{detail}");
    assert!(app.client.list_webhooks().await.unwrap().items.is_empty());
}

/// The rule against private targets holds when a delivery connects, not only when a webhook
/// is created: webhooks stored while private networks were allowed, one naming its host and
/// one a literal address, get no request once the server runs without that allowance, and
/// their deliveries say why.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn deliveries_to_private_targets_are_refused_when_they_are_not_allowed() {
    let mut app = spawn_app().await;
    let mut receiver = Receiver::start().await;
    let by_name = receiver.url.replace("127.0.0.1", "localhost");
    let mut webhooks = Vec::new();
    for url in [by_name, receiver.url.clone()] {
        let created = app
            .client
            .create_webhook(&CreateWebhookRequest::new(url))
            .await
            .unwrap();
        webhooks.push(created.webhook.id);
    }
    app.config.webhook_allow_private_networks = false;
    let app = app.restart().await;
    app.start_workflow("private").await;
    for webhook in &webhooks {
        let delivery = deliveries_until(&app.client, webhook, |items| {
            items.first().is_some_and(|d| d.attempts >= 1)
        })
        .await
        .remove(0);
        assert_eq!(delivery.status, DeliveryStatus::Pending, "retried later");
        assert_eq!(delivery.last_status_code, None);
        let why = delivery.last_error.unwrap_or_default();
        assert!(why.contains("refused"), "{webhook}: {why}");
    }
    receiver.quiet(Duration::from_millis(500)).await;
}

/// A SQLite database's one server, killed during an attempt, makes it again as soon as it is
/// back, not once the dead attempt's lease (a minute) has ended: no other server can be
/// making it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_sqlite_server_killed_during_an_attempt_makes_it_again_when_back() {
    let dir = TempDir::new().unwrap();
    let database = dir.path().join("webhooks.db");
    let port = free_port();
    let mut receiver = Receiver::start().await;
    receiver.hold(&[Duration::from_secs(60)]);
    let server = || {
        let mut command = sqlite_server(&database, port);
        command.env("WEBHOOK_ALLOW_PRIVATE_NETWORKS", "true");
        command.spawn().expect("server binary starts")
    };
    let client = Client::new(format!("http://127.0.0.1:{port}")).unwrap();
    let mut first = server();
    wait_healthy(&client).await;
    let webhook = client
        .create_webhook(&CreateWebhookRequest::new(receiver.url.clone()))
        .await
        .unwrap()
        .webhook;
    client
        .start_workflow(&StartWorkflowRequest::new("held", "attempted at a crash"))
        .await
        .unwrap();
    let attempted = receiver.next().await;

    first.kill().expect("SIGKILL");
    first.wait().unwrap();
    let mut second = server();
    wait_healthy(&client).await;
    // Within `next`'s 15 s, well before the minute.
    let again = receiver.next().await;
    assert_eq!(again.webhook_id(), attempted.webhook_id());
    let delivered = newest_delivered(&client, &webhook.id).await;
    assert_eq!(delivered.len(), 1);
    second.kill().unwrap();
    second.wait().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_delivery_survives_kill_9_while_its_receiver_is_down() {
    let dir = TempDir::new().unwrap();
    let database = dir.path().join("webhooks.db");
    let (port, receiver_port) = (free_port(), free_port());
    let server = |port| {
        let mut command = sqlite_server(&database, port);
        command
            .env("WEBHOOK_ALLOW_PRIVATE_NETWORKS", "true")
            .env("WEBHOOK_RETRY_SCHEDULE", "1s");
        command.spawn().expect("server binary starts")
    };
    let client = Client::builder()
        .base_url(format!("http://127.0.0.1:{port}"))
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let mut first = server(port);
    wait_healthy(&client).await;
    let webhook = client
        .create_webhook(&CreateWebhookRequest::new(format!(
            "http://127.0.0.1:{receiver_port}/hook"
        )))
        .await
        .unwrap()
        .webhook;
    client
        .start_workflow(&StartWorkflowRequest::new(
            "kept",
            "delivered after a crash",
        ))
        .await
        .unwrap();
    // Attempted once, against nobody: pending, due again a second later.
    let pending = deliveries_until(&client, &webhook.id, |items| {
        items.first().is_some_and(|d| d.attempts >= 1)
    })
    .await
    .remove(0);
    assert_eq!(pending.status, DeliveryStatus::Pending);
    assert!(pending.last_error.is_some());

    first.kill().expect("SIGKILL");
    first.wait().unwrap();
    let mut receiver = Receiver::on(
        TcpListener::bind(("127.0.0.1", receiver_port))
            .await
            .expect("the receiver's port is free again"),
    );
    let mut second = server(port);
    wait_healthy(&client).await;
    let received = receiver.next().await;
    assert_eq!(received.webhook_id(), pending.id);
    assert_eq!(received.event()["subject"], "kept");
    let delivered = newest_delivered(&client, &webhook.id).await;
    assert_eq!(delivered.len(), 1);
    second.kill().unwrap();
    second.wait().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_postgres_replicas_deliver_every_event_once() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let url = DatabaseUrl::Postgres(db.url.clone());
    let (a, b): (TestApp, TestApp) = tokio::join!(
        spawn_app_with(|c| c.database_url = url.clone()),
        spawn_app_with(|c| c.database_url = url.clone()),
    );
    let mut receiver = Receiver::start().await;
    // Each attempt held for several of the other replica's claim rounds (five a second): a
    // claim that took a leased delivery would send it again while it is held.
    receiver.hold(&[Duration::from_millis(1500); 40]);
    a.client
        .create_webhook(&CreateWebhookRequest::new(receiver.url.clone()))
        .await
        .unwrap();
    // Writers on both replicas: 20 workflows, two events each.
    let writers: Vec<_> = (0..20)
        .map(|n| {
            let client = if n % 2 == 0 {
                a.client.clone()
            } else {
                b.client.clone()
            };
            tokio::spawn(async move {
                let name = format!("replicated-{n}");
                client
                    .start_workflow(&StartWorkflowRequest::new(&name, "two replicas"))
                    .await
                    .unwrap();
                client
                    .advance_workflow(&id(&name), &AdvanceRequest::new("agent_complete"))
                    .await
                    .unwrap();
            })
        })
        .collect();
    for writer in writers {
        writer.await.unwrap();
    }

    let mut seen: BTreeMap<String, String> = BTreeMap::new();
    while seen.len() < 40 {
        let received = receiver.next().await;
        let event_id = received.event()["id"].as_str().unwrap().to_owned();
        let previous = seen.insert(event_id.clone(), received.webhook_id());
        assert!(previous.is_none(), "event {event_id} delivered twice");
    }
    receiver.quiet(Duration::from_secs(2)).await;
    let ids: Vec<u64> = seen.keys().map(|id| id.parse().unwrap()).collect();
    let mut sorted = ids.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, (1..=40).collect::<Vec<u64>>());
}

/// The store's side on both back ends: a webhook takes only the events after its creation,
/// each once however often it is enqueued; a claim holds a delivery until its outcome is
/// stored under the same lease; only settled deliveries are purged.
async fn the_store_queues_each_event_once(
    store: std::sync::Arc<dyn orchestrator_server::storage::DurableRepository>,
) {
    use orchestrator_server::storage::AttemptRecord;
    let orchestrator = orchestrator_core::Orchestrator::new(store.clone());
    let start = |name: &str| {
        orchestrator.start(
            StartWorkflowRequest::new(name, "store test")
                .try_into()
                .unwrap(),
        )
    };
    start("before").await.unwrap();
    let webhook = orchestrator_core::api::Webhook {
        id: "wh_00000000000000000000000000000001".into(),
        url: "http://127.0.0.1:9/hook".into(),
        event_types: Vec::new(),
        description: None,
        created_at: chrono::Utc::now(),
    };
    let secret = orchestrator_core::webhook::WebhookSecret::from_key([3; 32]);
    // The answer to the request's idempotency key is kept with the webhook: a retry of the
    // request then finds it, never creates a second webhook.
    use orchestrator_core::{IdempotencyKey, KeyClaim, Receipt};
    let key = IdempotencyKey {
        scope: "*".to_owned(),
        key: "create-the-webhook".to_owned(),
    };
    let claimed_at = chrono::Utc::now();
    let claim_of = async |key: &IdempotencyKey| {
        let now = claimed_at;
        store
            .claim_key(
                key,
                "fp",
                now,
                now + chrono::Duration::seconds(65),
                now - chrono::Duration::hours(24),
            )
            .await
            .unwrap()
    };
    let claim = async || claim_of(&key).await;
    assert_eq!(claim().await, KeyClaim::Claimed);
    let receipt = Receipt {
        key: key.clone(),
        lease_until: claimed_at + chrono::Duration::seconds(65),
        answer: "the webhook's 201".to_owned(),
    };
    store
        .create_webhook(&webhook, &secret, Some(&receipt))
        .await
        .unwrap();
    assert_eq!(
        claim().await,
        KeyClaim::Answered("the webhook's 201".to_owned())
    );
    start("after-1").await.unwrap();
    start("after-2").await.unwrap();
    // Retention keeps what the webhook has yet to enqueue: only the event before it goes.
    let much_later = chrono::Utc::now() + chrono::Duration::minutes(1);
    assert_eq!(store.purge_events(much_later).await.unwrap(), 1);
    // Two events no delivery row shows yet: the backlog says how long the older has waited.
    let waited = store
        .backlog(chrono::Utc::now() + chrono::Duration::seconds(61))
        .await
        .unwrap()
        .oldest_unenqueued;
    assert!((61..70).contains(&waited.as_secs()), "{waited:?}");

    let now = chrono::Utc::now();
    assert_eq!(
        store.enqueue_deliveries(&webhook.id, now, 1).await.unwrap(),
        1
    );
    assert_eq!(
        store
            .enqueue_deliveries(&webhook.id, now, 500)
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        store
            .enqueue_deliveries(&webhook.id, now, 500)
            .await
            .unwrap(),
        0
    );
    // Enqueued: retention may take them now.
    assert_eq!(store.purge_events(much_later).await.unwrap(), 2);
    let page = orchestrator_core::api::DeliveriesQuery::parse_query([]).unwrap();
    let queued = store.deliveries(&webhook.id, &page).await.unwrap();
    assert_eq!(
        queued.len(),
        2,
        "only the events after the webhook: {queued:?}"
    );

    // The backlog: both pending, due since `now`.
    use orchestrator_server::storage::Backlog;
    let backlog = |at| {
        let store = store.clone();
        async move { store.backlog(at).await.unwrap() }
    };
    let minute_on = now + chrono::Duration::seconds(61);
    // Every event enqueued: none waits for it.
    let due_a_minute = Backlog {
        pending: 2,
        oldest_due: std::time::Duration::from_secs(61),
        oldest_unenqueued: std::time::Duration::ZERO,
    };
    assert_eq!(backlog(minute_on).await, due_a_minute);
    // Not yet due: nothing waits past its time.
    let before = now - chrono::Duration::seconds(1);
    assert_eq!(backlog(before).await.oldest_due, std::time::Duration::ZERO);

    // A claim at a time of up to ten deliveries, leased until another.
    let room = ClaimRoom::up_to(10);
    let claim = |at, until| store.claim_deliveries(at, until, &room);
    let lease = now + chrono::Duration::seconds(30);
    let claimed = claim(now, lease).await.unwrap();
    assert_eq!(claimed.len(), 2);
    // Being attempted: pending still, but not waiting (until the lease ends).
    let held = backlog(now + chrono::Duration::seconds(10)).await;
    assert_eq!((held.pending, held.oldest_due.as_secs()), (2, 0));
    assert_eq!(backlog(minute_on).await, due_a_minute);
    assert_eq!(claimed[0].secret, secret.expose());
    // Claimed already: a second claim (another replica) gets nothing until the lease ends.
    assert!(claim(now, lease).await.unwrap().is_empty());
    let delivered = AttemptRecord {
        id: claimed[0].id.clone(),
        lease: claimed[0].lease,
        redeliveries: 0,
        attempts: 1,
        schedule_from: 0,
        status: DeliveryStatus::Delivered,
        status_code: Some(200),
        error: None,
        next_attempt_at: None,
        delivered_at: Some(now),
    };
    // Under another lease (taken over), the outcome is not stored.
    let stale = AttemptRecord {
        lease: claimed[0].lease - 1,
        ..delivered.clone()
    };
    assert_eq!(store.record_attempts(&[stale]).await.unwrap(), 0);
    assert_eq!(store.record_attempts(&[]).await.unwrap(), 0);
    // Several in one write, each judged by its own lease.
    let pending = AttemptRecord {
        id: claimed[1].id.clone(),
        lease: claimed[1].lease - 1,
        status: DeliveryStatus::Pending,
        ..delivered.clone()
    };
    assert_eq!(
        store
            .record_attempts(&[delivered.clone(), pending])
            .await
            .unwrap(),
        1
    );
    assert_eq!(backlog(minute_on).await.pending, 1);
    // A lease that ran out (its replica died during the attempt) is taken over: the delivery
    // is claimed again, its attempts as they were, and the first claim's outcome, should it
    // come, is not stored.
    let ran_out = lease + chrono::Duration::seconds(1);
    let taken_over = claim(ran_out, ran_out + chrono::Duration::seconds(30))
        .await
        .unwrap();
    assert_eq!(taken_over.len(), 1, "{taken_over:?}");
    assert_eq!(taken_over[0].id, claimed[1].id);
    assert_eq!(taken_over[0].attempts, 0);
    assert_ne!(taken_over[0].lease, claimed[1].lease);
    let late = AttemptRecord {
        id: claimed[1].id.clone(),
        lease: claimed[1].lease,
        ..delivered.clone()
    };
    assert_eq!(store.record_attempts(&[late]).await.unwrap(), 0);
    // Its leases let go (a SQLite server's start-up), it is claimed again before its lease
    // ends, under a lease that ends when the taken-over one did.
    assert_eq!(store.release_leases().await.unwrap(), 1);
    assert_eq!(store.release_leases().await.unwrap(), 0);
    let again = claim(ran_out, ran_out + chrono::Duration::seconds(30))
        .await
        .unwrap();
    assert_eq!(again.len(), 1, "{again:?}");
    assert_eq!(again[0].id, claimed[1].id);

    // Only the settled one is purged; the pending one (still leased) stays.
    let later = now + chrono::Duration::seconds(1);
    assert_eq!(store.purge_deliveries(later).await.unwrap(), 1);
    let left = store.deliveries(&webhook.id, &page).await.unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].id, claimed[1].id);
    assert_eq!(left[0].status, DeliveryStatus::Pending);

    // A redelivery keeps its request's answer in its own write; none is kept for a delivery
    // it did not find.
    let key = IdempotencyKey {
        scope: "*".to_owned(),
        key: "redeliver-it".to_owned(),
    };
    assert_eq!(claim_of(&key).await, KeyClaim::Claimed);
    let receipt = Receipt {
        key: key.clone(),
        lease_until: claimed_at + chrono::Duration::seconds(65),
        answer: "the redelivery's 202".to_owned(),
    };
    assert!(
        !store
            .redeliver(&webhook.id, "msg_none", now, Some(&receipt))
            .await
            .unwrap()
    );
    assert_eq!(claim_of(&key).await, KeyClaim::InUse);
    assert!(
        store
            .redeliver(&webhook.id, &left[0].id, now, Some(&receipt))
            .await
            .unwrap()
    );
    assert_eq!(
        claim_of(&key).await,
        KeyClaim::Answered("the redelivery's 202".to_owned())
    );
    // Redelivered while leased: the schedule starts after the attempt in flight. That attempt
    // lost with its replica, the next claim's attempt starts the schedule itself, and the
    // store keeps where it started (else the one after would be the schedule's first again).
    let gone = ran_out + chrono::Duration::seconds(31);
    let lease_again = gone + chrono::Duration::seconds(30);
    let after_loss = claim(gone, lease_again).await.unwrap();
    assert_eq!(after_loss.len(), 1, "{after_loss:?}");
    let (attempts, from) = (after_loss[0].attempts, after_loss[0].schedule_from);
    assert_eq!((attempts, from), (0, 1));
    let attempt = orchestrator_core::webhook::ScheduledAttempt::after(attempts, from);
    assert_eq!(attempt.position(), 1);
    let failed = AttemptRecord {
        id: after_loss[0].id.clone(),
        lease: after_loss[0].lease,
        redeliveries: after_loss[0].redeliveries,
        attempts: attempt.number,
        schedule_from: attempt.schedule_from,
        status: DeliveryStatus::Pending,
        status_code: Some(500),
        error: Some("the target answered 500".into()),
        next_attempt_at: Some(gone),
        delivered_at: None,
    };
    assert_eq!(store.record_attempts(&[failed]).await.unwrap(), 1);
    let next = claim(gone, lease_again).await.unwrap();
    assert_eq!((next[0].attempts, next[0].schedule_from), (1, 0));
    let attempt = orchestrator_core::webhook::ScheduledAttempt::after(1, 0);
    assert_eq!(attempt.position(), 2, "the schedule's second attempt");

    assert!(store.delete_webhook(&webhook.id).await.unwrap());
    assert!(store.webhooks().await.unwrap().is_empty());
    assert!(!store.delete_webhook(&webhook.id).await.unwrap());
}

/// Events of 50 KiB each: an enqueue stops at a few megabytes, and says more follow (the
/// worker reads on while a batch is full) until every event has its delivery.
async fn large_events_are_enqueued_in_batches_that_say_more_follow(
    store: std::sync::Arc<dyn orchestrator_server::storage::DurableRepository>,
) {
    let orchestrator = orchestrator_core::Orchestrator::new(store.clone());
    let webhook = orchestrator_core::api::Webhook {
        id: "wh_00000000000000000000000000000009".into(),
        url: "http://127.0.0.1:9/hook".into(),
        event_types: Vec::new(),
        description: None,
        created_at: chrono::Utc::now(),
    };
    let secret = orchestrator_core::webhook::WebhookSecret::from_key([9; 32]);
    store.create_webhook(&webhook, &secret, None).await.unwrap();
    const EVENTS: u64 = 120;
    for n in 0..EVENTS {
        let mut start = StartWorkflowRequest::new(format!("large-{n}"), "large");
        let notes = serde_json::json!({ "notes": "x".repeat(50 * 1024) });
        start.metadata = serde_json::from_value(notes).ok();
        orchestrator.start(start.try_into().unwrap()).await.unwrap();
    }
    let now = chrono::Utc::now();
    let mut answers = Vec::new();
    loop {
        let answer = store
            .enqueue_deliveries(&webhook.id, now, 500)
            .await
            .unwrap();
        answers.push(answer);
        if answer < 500 {
            break;
        }
        assert!(answers.len() < 10, "{answers:?}");
    }
    assert!(answers.len() >= 2, "6 MB in one batch: {answers:?}");
    assert_eq!(answers[0], 500, "a cut batch says more follow");
    assert_eq!(store.backlog(now).await.unwrap().pending, EVENTS);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sqlite_store_queues_each_event_once() {
    let store = orchestrator_server::storage::connect(&DatabaseUrl::SqliteMemory, 2)
        .await
        .unwrap();
    the_store_queues_each_event_once(store.clone()).await;
    the_store_shares_claims_and_never_redelivers_in_flight(store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sqlite_store_enqueues_large_events_in_batches() {
    let store = orchestrator_server::storage::connect(&DatabaseUrl::SqliteMemory, 2)
        .await
        .unwrap();
    large_events_are_enqueued_in_batches_that_say_more_follow(store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_postgres_store_enqueues_large_events_in_batches() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let store = orchestrator_server::storage::connect(&DatabaseUrl::Postgres(db.url.clone()), 2)
        .await
        .unwrap();
    large_events_are_enqueued_in_batches_that_say_more_follow(store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_postgres_store_queues_each_event_once() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let store = orchestrator_server::storage::connect(&DatabaseUrl::Postgres(db.url.clone()), 2)
        .await
        .unwrap();
    the_store_queues_each_event_once(store.clone()).await;
    the_store_shares_claims_and_never_redelivers_in_flight(store).await;
}

/// A claim takes at most its share of one webhook's deliveries, and one webhook's backlog never
/// hides another's; a redelivery during an attempt waits for it (never two attempts at once)
/// and then starts the schedule again.
async fn the_store_shares_claims_and_never_redelivers_in_flight(
    store: std::sync::Arc<dyn orchestrator_server::storage::DurableRepository>,
) {
    use orchestrator_server::storage::{AttemptRecord, DueDelivery};
    let orchestrator = orchestrator_core::Orchestrator::new(store.clone());
    let subscribe = async |n: &str| subscribe_in_store(&*store, n).await;
    let events = async |from: usize, to: usize| {
        for n in from..to {
            let start = StartWorkflowRequest::new(format!("shared-{n}"), "claims");
            orchestrator.start(start.try_into().unwrap()).await.unwrap();
        }
    };
    // a has a backlog of 20, all due before b's one.
    subscribe("a").await;
    events(0, 20).await;
    subscribe("b").await;
    events(20, 21).await;
    let now = chrono::Utc::now();
    assert_eq!(
        store.enqueue_deliveries("wh_a", now, 500).await.unwrap(),
        21
    );
    assert_eq!(store.enqueue_deliveries("wh_b", now, 500).await.unwrap(), 1);
    let lease = now + chrono::Duration::seconds(30);
    let room = |limit: u32, in_flight: &[(&str, u32)]| ClaimRoom {
        limit,
        per_webhook: 2,
        in_flight: in_flight
            .iter()
            .map(|(h, n)| ((*h).to_owned(), *n))
            .collect(),
    };
    let of = |claimed: &[DueDelivery], hook: &str| {
        claimed.iter().filter(|d| d.webhook_id == hook).count()
    };
    // Two of a's (its share), and b's one although twenty of a's were due before it.
    let first = store
        .claim_deliveries(now, lease, &room(3, &[]))
        .await
        .unwrap();
    assert_eq!(
        (of(&first, "wh_a"), of(&first, "wh_b")),
        (2, 1),
        "{first:?}"
    );
    // With a's share in flight, none of a's is claimed.
    let none = store
        .claim_deliveries(now, lease, &room(10, &[("wh_a", 2), ("wh_b", 1)]))
        .await
        .unwrap();
    assert!(none.is_empty(), "{none:?}");

    // Redelivered while its attempt is in flight: nobody may claim it meanwhile.
    let busy = first
        .iter()
        .find(|d| d.webhook_id == "wh_a")
        .unwrap()
        .clone();
    assert_eq!(
        (busy.attempts, busy.schedule_from, busy.redeliveries),
        (0, 0, 0)
    );
    assert!(store.redeliver("wh_a", &busy.id, now, None).await.unwrap());
    let later = now + chrono::Duration::seconds(1);
    let meanwhile = store
        .claim_deliveries(later, lease, &ClaimRoom::up_to(100))
        .await
        .unwrap();
    assert!(meanwhile.iter().all(|d| d.id != busy.id), "{meanwhile:?}");
    // The attempt ends delivered: counted, and the delivery stays due for the redelivery.
    let delivered = AttemptRecord {
        id: busy.id.clone(),
        lease: busy.lease,
        redeliveries: busy.redeliveries,
        attempts: 1,
        schedule_from: 0,
        status: DeliveryStatus::Delivered,
        status_code: Some(200),
        error: None,
        next_attempt_at: None,
        delivered_at: Some(later),
    };
    assert_eq!(
        store
            .record_attempts(std::slice::from_ref(&delivered))
            .await
            .unwrap(),
        1
    );
    let page = orchestrator_core::api::DeliveriesQuery::parse_query([]).unwrap();
    // The busy delivery as the API lists it.
    let busy_row = async || {
        let listed = store.deliveries("wh_a", &page).await.unwrap();
        listed.into_iter().find(|d| d.id == busy.id).unwrap()
    };
    let row = busy_row().await;
    assert_eq!(
        (row.status, row.attempts),
        (DeliveryStatus::Pending, 1),
        "{row:?}"
    );
    assert_eq!(row.last_status_code, Some(200));
    let second_lease = later + chrono::Duration::seconds(30);
    let again = store
        .claim_deliveries(later, second_lease, &ClaimRoom::up_to(100))
        .await
        .unwrap();
    let again = again.iter().find(|d| d.id == busy.id).expect("due again");
    // The schedule starts after the attempt that was in flight.
    assert_eq!(
        (again.attempts, again.schedule_from, again.redeliveries),
        (1, 1, 1)
    );

    // Redelivered in flight again: the outcome of that attempt, claimed before, is counted
    // only, however its redeliveries compare with its attempts.
    assert!(
        store
            .redeliver("wh_a", &again.id, later, None)
            .await
            .unwrap()
    );
    let failed = AttemptRecord {
        lease: again.lease,
        redeliveries: again.redeliveries,
        attempts: 2,
        schedule_from: 0,
        status: DeliveryStatus::Failed,
        status_code: Some(500),
        ..delivered
    };
    assert_eq!(store.record_attempts(&[failed]).await.unwrap(), 1);
    let row = busy_row().await;
    assert_eq!(
        (row.status, row.attempts),
        (DeliveryStatus::Pending, 2),
        "{row:?}"
    );

    // Redelivered with no attempt in flight (b's, its lease ended): due now, the schedule
    // from its attempts so far.
    let idle = first
        .iter()
        .find(|d| d.webhook_id == "wh_b")
        .unwrap()
        .clone();
    let past_lease = second_lease + chrono::Duration::seconds(1);
    assert!(
        store
            .redeliver("wh_b", &idle.id, past_lease, None)
            .await
            .unwrap()
    );
    let idle = store
        .claim_deliveries(
            past_lease,
            past_lease + chrono::Duration::seconds(30),
            &ClaimRoom::up_to(100),
        )
        .await
        .unwrap()
        .into_iter()
        .find(|d| d.id == idle.id)
        .expect("due at once");
    assert_eq!(
        (idle.attempts, idle.schedule_from, idle.redeliveries),
        (0, 0, 1)
    );
    assert!(
        !store
            .redeliver("wh_b", "msg_nope", now, None)
            .await
            .unwrap()
    );
}

/// Creates the webhook `wh_{n}` (every type, a receiver nobody listens on) straight in `store`.
async fn subscribe_in_store(store: &dyn orchestrator_server::storage::DurableRepository, n: &str) {
    let secret = orchestrator_core::webhook::WebhookSecret::from_key([5; 32]);
    let webhook = orchestrator_core::api::Webhook {
        id: format!("wh_{n}"),
        url: format!("http://127.0.0.1:9/{n}"),
        event_types: Vec::new(),
        description: None,
        created_at: chrono::Utc::now(),
    };
    store.create_webhook(&webhook, &secret, None).await.unwrap();
}

/// A webhook that names a type this version does not know (a newer one stored it, before a
/// downgrade) still takes the types it knows; one that names only such types is left out,
/// and neither stops the other webhooks' listing or deliveries.
async fn webhooks_naming_unknown_types_stop_no_one(
    url: DatabaseUrl,
    downgrade: impl AsyncFnOnce(&str),
) {
    let store = orchestrator_server::storage::connect(&url, 2)
        .await
        .unwrap();
    let orchestrator = orchestrator_core::Orchestrator::new(store.clone());
    for n in ["known", "partly", "unknown"] {
        subscribe_in_store(&*store, n).await;
    }
    downgrade(
        "UPDATE webhooks SET event_types = 'workflow.transitioned workflow.renamed' \
         WHERE id = 'wh_partly'; \
         UPDATE webhooks SET event_types = 'workflow.renamed' WHERE id = 'wh_unknown';",
    )
    .await;
    let listed: Vec<(String, Vec<EventType>)> = store
        .webhooks()
        .await
        .unwrap()
        .into_iter()
        .map(|w| (w.id, w.event_types))
        .collect();
    assert_eq!(
        listed,
        [
            ("wh_known".to_owned(), vec![]),
            (
                "wh_partly".to_owned(),
                vec![EventType::WorkflowTransitioned]
            ),
        ]
    );
    let start = StartWorkflowRequest::new("after-downgrade", "types");
    orchestrator.start(start.try_into().unwrap()).await.unwrap();
    let now = chrono::Utc::now();
    for id in ["wh_known", "wh_partly"] {
        assert_eq!(
            store.enqueue_deliveries(id, now, 500).await.unwrap(),
            1,
            "{id}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_webhooks_naming_unknown_types_stop_no_one() {
    let dir = TempDir::new().unwrap();
    let url = DatabaseUrl::SqliteFile(dir.path().join("w.db"));
    webhooks_naming_unknown_types_stop_no_one(url.clone(), async |sql| run_sql(&url, sql).await)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_webhooks_naming_unknown_types_stop_no_one() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let url = DatabaseUrl::Postgres(db.url.clone());
    webhooks_naming_unknown_types_stop_no_one(url.clone(), async |sql| run_sql(&url, sql).await)
        .await;
}

/// A webhook created while another transaction appends events starts after them: it waits
/// for that append's commit and reads the log's end after it. (Were its start read before
/// that commit, the delivery worker could list the webhooks before this one landed, take
/// those events as enqueued for every webhook, and not look again until the next event.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_webhook_created_during_an_append_starts_after_it() {
    use diesel_async::{AsyncConnection, SimpleAsyncConnection};
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let url = DatabaseUrl::Postgres(db.url.clone());
    let store = orchestrator_server::storage::connect(&url, 2)
        .await
        .unwrap();
    let mut appending = diesel_async::AsyncPgConnection::establish(&db.url)
        .await
        .unwrap();
    appending
        .batch_execute(
            "BEGIN; INSERT INTO events (id, event_type, subject, time, data) \
             SELECT take_event_ids(1), 'workflow.transitioned', 'in-flight', 0, '{}';",
        )
        .await
        .unwrap();
    let creating = tokio::spawn({
        let store = store.clone();
        async move { subscribe_in_store(&*store, "during").await }
    });
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(!creating.is_finished(), "the creation waits for the append");
    appending.batch_execute("COMMIT").await.unwrap();
    creating.await.unwrap();
    assert_eq!(
        store
            .enqueue_deliveries("wh_during", chrono::Utc::now(), 500)
            .await
            .unwrap(),
        0,
        "the appended event precedes the webhook"
    );
}

/// A stub server answering its requests in turn with `answers` (status, body), then 500.
async fn scripted(answers: Vec<(u16, &'static str)>) -> String {
    stub_server(move |n| {
        let (status, body) = answers.get(n).copied().unwrap_or((500, "{}"));
        (status, "retry-after: 0\r\n", body)
    })
    .await
}

#[tokio::test]
async fn a_delete_retried_after_a_503_that_finds_the_webhook_gone_is_done() {
    const GONE: &str =
        r#"{"error":{"code":"WEBHOOK_NOT_FOUND","message":"webhook 'wh_x' not found"}}"#;
    const BUSY: &str = r#"{"error":{"code":"SERVICE_UNAVAILABLE","message":"retry later"}}"#;
    // The first attempt's answer was a 503, though it may have deleted the webhook.
    let client = Client::new(scripted(vec![(503, BUSY), (404, GONE)]).await).unwrap();
    client.delete_webhook("wh_x").await.unwrap();
    // Asked once and told "not found": there was none.
    let client = Client::new(scripted(vec![(404, GONE)]).await).unwrap();
    let error = client.delete_webhook("wh_x").await.unwrap_err();
    assert_eq!(error.code(), Some(ErrorCode::WebhookNotFound));
}

/// The Python check docs/API.md gives receivers verifies what this server signs (a body of
/// non-ASCII text, signed now, and the Standard Webhooks example the page quotes), and refuses
/// a body changed by one byte and a timestamp out of its window. Needs `python3`, which CI
/// has; elsewhere it is skipped without one.
#[test]
fn the_python_check_in_the_docs_verifies_what_the_server_signs() {
    use orchestrator_core::webhook::WebhookSecret;
    let page = include_str!("../../../docs/API.md");
    let check = page
        .split("```python\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("docs/API.md has a Python block");
    let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let body = r#"{"type":"workflow.transitioned","data":{"reason":"ça ne va pas — 🚫"}}"#;
    let now = chrono::Utc::now().timestamp();
    let signature = WebhookSecret::parse(secret)
        .unwrap()
        .sign("msg_1", now, body.as_bytes());
    let literal = |text: &str| serde_json::to_string(text).unwrap();
    let script = format!(
        "{check}
secret = {secret}
body = {body}.encode()
headers = {{'webhook-id': 'msg_1', 'webhook-timestamp': '{now}',
            'webhook-signature': 'v1,bm90IGl0 v1,nä ' + {signature}}}
assert verify(secret, headers, body)
assert not verify(secret, headers, body[:-1] + b' ')
assert not verify(secret, dict(headers, **{{'webhook-timestamp': '{late}'}}), body)
assert not verify(secret, {{k: v for k, v in headers.items() if k != 'webhook-id'}}, body)
assert not verify(secret, dict(headers, **{{'webhook-signature': ''}}), body)
example = {{'webhook-id': 'msg_p5jXN8AQM9LWM0D4loKWxJek', 'webhook-timestamp': '1614265330',
           'webhook-signature': 'v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE='}}
assert verify(secret, example, b'{{\"test\": 2432232314}}', tolerance=float('inf'))
",
        secret = literal(secret),
        body = literal(body),
        signature = literal(&signature),
        late = now - 301,
    );
    let run = std::process::Command::new("python3")
        .arg("-c")
        .arg(&script)
        .output();
    let output = match run {
        Ok(output) => output,
        Err(e) if std::env::var_os("CI").is_none() => {
            eprintln!("skipped: no python3 ({e})");
            return;
        }
        Err(e) => panic!("python3: {e}"),
    };
    assert!(
        output.status.success(),
        "{}\n{script}",
        String::from_utf8_lossy(&output.stderr)
    );
}
