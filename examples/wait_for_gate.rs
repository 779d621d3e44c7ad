//! Waits for a gate decision through the event stream instead of polling: an agent finishes
//! its plan, then follows `workflow.transitioned` events of its feature until a human decides
//! at GATE_1. Here a "reviewer" task approves after a moment; in real use, a person does, in
//! the CLI or over HTTP. The agent resumes by event id if the connection drops.
//!
//! Run it with `cargo run -p examples --example wait_for_gate` (a server in-process), or pass
//! the URL of a server you started: `… --example wait_for_gate -- http://localhost:8000`.

#[path = "support/mod.rs"]
mod support;

use std::time::Duration;

use orchestrator_core::api::{AdvanceRequest, EventsQuery, StartWorkflowRequest};
use orchestrator_core::{EventFilter, EventType, WorkflowState};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let base_url = support::server_url(
        "Brings a feature to GATE_1 and waits for the decision on the event stream. Its stand-in\n\
     reviewer approves with the same token; with principals that is refused (an agent's\n\
     token, or the one that handed the work over) and it waits for you: approve it with\n\
     another reviewer's token (`orchestrator approve FEATURE`).",
    )
    .await?;
    let client = support::client(&base_url)?;
    let feature = chrono::Utc::now()
        .format("gate-example-%Y%m%d-%H%M%S%3f")
        .to_string();
    let started = client
        .start_workflow(&StartWorkflowRequest::new(
            feature,
            "Retry failed card payments",
        ))
        .await?;
    let id = started.feature_id.clone();

    // The agent follows its feature's transitions from now on, attached before it hands its
    // work over, so a decision made at once is not missed (and no old event is asked for:
    // a long-running server's retention may have deleted those).
    let mut events = client.stream_events(EventsQuery {
        filter: EventFilter {
            feature_id: Some(id.clone()),
            types: vec![EventType::WorkflowTransitioned],
        },
        ..EventsQuery::default()
    });
    events.attach().await?;

    // ...hands its plan to review...
    let mut done = AdvanceRequest::new("agent_complete");
    done.actor = Some("spec-agent".to_owned());
    let at_gate = client.advance_workflow(&id, &done).await?;
    println!(
        "{id}: {} at v{}, waiting for a reviewer",
        at_gate.state, at_gate.version
    );

    // Meanwhile a reviewer decides.
    let reviewer = client.clone();
    let reviewed = id.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let mut approve = AdvanceRequest::new("human_approved");
        approve.actor = Some("alice".to_owned());
        if let Err(e) = reviewer.advance_workflow(&reviewed, &approve).await {
            eprintln!("the reviewer could not approve: {e}");
            // Refused for the caller (a token without the reviewer role; the token that
            // handed the work over, which may not approve its own) rather than for a while.
            if e.status().is_some_and(|s| s.is_client_error()) {
                eprintln!(
                    "still waiting: approve or reject it yourself (`orchestrator approve {reviewed}`, with another reviewer's token)"
                );
            }
        }
    });

    // ...and waits for the decision.
    while let Some(event) = events.next().await {
        let event = match event {
            Ok(event) => event,
            // A dropped connection or a 5xx: the stream reconnects and resumes on the next
            // call. A refusal (a wrong token, say) ends it: the next call returns `None`.
            Err(e) => {
                eprintln!("stream interrupted: {e}");
                continue;
            }
        };
        // The stream was asked for this feature's transitions only; each is a history entry.
        let Some(step) = event.transition() else {
            continue;
        };
        let by = step.actor.as_ref().map_or("-", |actor| actor.as_str());
        println!("event {}: {} -> {} by {by}", event.id, step.from, step.to);
        if step.from == WorkflowState::Gate1 && step.to != WorkflowState::Gate1 {
            println!("decided: {} (v{})", step.to, step.seq);
            return Ok(());
        }
    }
    anyhow::bail!("the event stream ended before a decision")
}
