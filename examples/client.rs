//! Drives a server with the typed client: the server runs in-process on a free port over an
//! in-memory SQLite database, and the client walks one feature through review, a rejection,
//! a lost race, and completion.
//!
//! Run it with `cargo run -p examples --example client`.
//! To drive a server you started yourself, pass its URL: `… --example client -- http://localhost:8000`.

#[path = "support/mod.rs"]
mod support;

use orchestrator_core::api::{
    AdvanceRequest, ErrorCode, ListWorkflowsParams, StartWorkflowRequest,
};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let base_url = support::server_url(
        "Drives one feature through its life cycle with the typed client, a lost race included.\n\
     With principals it stops at the gate, as the rules say: an agent may not decide there,\n\
     and the author of the work may not approve it (one token does both here).",
    )
    .await?;
    let client = support::client(&base_url)?;
    println!("talking to {base_url}");

    // A feature of its own each run, so it never meets one an earlier run (or the README's
    // tour) left on your server.
    let feature = chrono::Utc::now()
        .format("client-example-%Y%m%d-%H%M%S%3f")
        .to_string();
    let start = StartWorkflowRequest::new(feature, "Retry failed card payments");
    let workflow = client.start_workflow(&start).await?;
    let id = workflow.feature_id.clone();
    println!("{id}: {} (v{})", workflow.state, workflow.version);

    for (trigger, actor) in [
        ("agent_complete", "spec-agent"),
        ("human_rejected", "reviewer"),
        ("agent_complete", "spec-agent"),
    ] {
        let mut request = AdvanceRequest::new(trigger);
        request.actor = Some(actor.to_owned());
        if trigger == "human_rejected" {
            // A rejection says what must change.
            request.reason = Some("the plan misses the data migration".to_owned());
        }
        let workflow = client.advance_workflow(&id, &request).await?;
        println!(
            "{trigger:>15} -> {} (v{}, rework {})",
            workflow.state, workflow.version, workflow.progress.rework_count
        );
    }

    // Two reviewers act on the same version: the second is told it lost.
    let current = client.get_workflow(&id).await?;
    let mut approve = AdvanceRequest::new("human_approved");
    approve.expected_version = Some(current.version);
    let mut reject = AdvanceRequest::new("human_rejected");
    reject.reason = Some("not yet".to_owned());
    reject.expected_version = Some(current.version);
    client.advance_workflow(&id, &approve).await?;
    match client.advance_workflow(&id, &reject).await {
        Err(e) if e.code() == Some(ErrorCode::VersionConflict) => println!("second reviewer: {e}"),
        other => println!("unexpected: {other:?}"),
    }

    client
        .advance_workflow(&id, &AdvanceRequest::new("agent_complete"))
        .await?;
    let done = client.get_workflow(&id).await?;
    println!("{id}: {} at {}%", done.state, done.progress.percent);

    for t in client.get_history(&id).await?.transitions {
        println!("  #{} {} -> {} ({})", t.seq, t.from, t.to, t.trigger);
    }
    let page = client
        .list_workflows(&ListWorkflowsParams::default())
        .await?;
    let summary = client.get_summary().await?;
    let counts: Vec<String> = summary
        .counts
        .iter()
        .map(|(state, count)| format!("{state} {count}"))
        .collect();
    println!(
        "{} workflow(s) listed; summary: {}",
        page.items.len(),
        counts.join(", ")
    );
    Ok(())
}
