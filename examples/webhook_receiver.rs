//! A webhook receiver that checks every delivery's signature before trusting it.
//!
//! It listens on a loopback port, subscribes that URL to the server's `workflow.transitioned`
//! events (keeping the secret the server shows once), then drives a feature to its gate and
//! prints each delivery it gets: verified with `verify_signature` over the raw body, and
//! answered 2xx only when the signature holds (a bad one gets 401, so the server retries and
//! the delivery log shows it). Delivery is at least once: a delivery seen before (the same
//! `webhook-id`) is answered 2xx again and not counted twice, and another feature's event
//! (a shared server) is passed over. It stops after two deliveries of its feature.
//!
//! Run it with `cargo run -p examples --example webhook_receiver` (a server in-process), or
//! pass the URL of a server you started with `WEBHOOK_ALLOW_PRIVATE_NETWORKS=true` (the
//! receiver is on loopback): `… --example webhook_receiver -- http://localhost:8000`.

#[path = "support/mod.rs"]
mod support;

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use orchestrator_client::webhooks::verify_signature;
use orchestrator_core::api::{
    AdvanceRequest, CloudEvent, CreateWebhookRequest, StartWorkflowRequest,
};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let base_url = support::server_url(
        "Subscribes a receiver on a loopback port to workflow.transitioned events and checks each\n\
     delivery's signature. Your server must run with WEBHOOK_ALLOW_PRIVATE_NETWORKS=true (the\n\
     receiver is on loopback), and with principals the token must be an admin's.",
    )
    .await?;
    let client = support::client(&base_url)?;

    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/orchestrator", listener.local_addr()?);
    let created = client
        .create_webhook(&CreateWebhookRequest {
            url: url.clone(),
            event_types: Some(vec!["workflow.transitioned".to_owned()]),
            description: Some("webhook_receiver example".to_owned()),
        })
        .await?;
    println!("subscribed {url} as {}", created.webhook.id);
    let secret: Arc<str> = created.secret.into();

    let (verified, deliveries) = mpsc::unbounded_channel::<Verified>();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (secret, verified) = (secret.clone(), verified.clone());
            let service = service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
                let (secret, verified) = (secret.clone(), verified.clone());
                async move {
                    let (parts, body) = request.into_parts();
                    let body = body
                        .collect()
                        .await
                        .map(|b| b.to_bytes())
                        .unwrap_or_default();
                    // Check the raw bytes first; parse only what verified.
                    let status = match verify_signature(&secret, &parts.headers, &body) {
                        Ok(()) => {
                            let id = parts
                                .headers
                                .get("webhook-id")
                                .and_then(|v| v.to_str().ok());
                            match (id, serde_json::from_slice::<CloudEvent>(&body)) {
                                (Some(id), Ok(event)) => {
                                    let _ = verified.send((id.to_owned(), event));
                                }
                                // Signed by the server yet unreadable here: retrying would
                                // not change it, so it is taken (2xx) and told.
                                _ => eprintln!("a verified delivery this receiver cannot read"),
                            }
                            204
                        }
                        Err(refused) => {
                            eprintln!("refused a delivery: {refused}");
                            401
                        }
                    };
                    let mut response = hyper::Response::new(Full::new(Bytes::new()));
                    *response.status_mut() = hyper::StatusCode::from_u16(status)
                        .unwrap_or(hyper::StatusCode::BAD_REQUEST);
                    Ok::<_, Infallible>(response)
                }
            });
            tokio::spawn(
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service),
            );
        }
    });

    // Whatever happens next, the subscription goes: left behind, it would be retried against
    // this closed port for about 27½ hours.
    let received = receive_two(&client, deliveries).await;
    let unsubscribed = client.delete_webhook(&created.webhook.id).await;
    if unsubscribed.is_ok() {
        println!("unsubscribed {}", created.webhook.id);
    }
    match (received, unsubscribed) {
        (Err(e), Err(also)) => Err(e.context(format!("unsubscribing failed too: {also}"))),
        (Err(e), Ok(())) => Err(e),
        (Ok(()), unsubscribed) => Ok(unsubscribed?),
    }
}

/// A verified delivery: its `webhook-id` (the same on every retry) and its event.
type Verified = (String, CloudEvent);

/// Starts a feature, brings it to the gate and prints the two deliveries that say so.
async fn receive_two(
    client: &orchestrator_client::Client,
    mut deliveries: mpsc::UnboundedReceiver<Verified>,
) -> anyhow::Result<()> {
    let feature = chrono::Utc::now()
        .format("webhook-example-%Y%m%d-%H%M%S%3f")
        .to_string();
    let started = client
        .start_workflow(&StartWorkflowRequest::new(
            feature,
            "Send events to a chat bot",
        ))
        .await?;
    client
        .advance_workflow(&started.feature_id, &AdvanceRequest::new("agent_complete"))
        .await?;

    let mut seen = std::collections::HashSet::new();
    while seen.len() < 2 {
        let (id, event) =
            tokio::time::timeout(std::time::Duration::from_secs(15), deliveries.recv())
                .await?
                .ok_or_else(|| anyhow::anyhow!("the receiver stopped"))?;
        if event.subject != started.feature_id {
            continue;
        }
        if !seen.insert(id.clone()) {
            println!("delivery {id} again (a retry): already handled");
            continue;
        }
        match event.transition() {
            Some(step) => println!(
                "verified event {}: {} {} → {}",
                event.id, event.subject, step.from, step.to
            ),
            None => println!("verified event {}: {}", event.id, event.event_type),
        }
    }
    Ok(())
}
