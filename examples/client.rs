//! Drives a server with the typed client: the server runs in-process on a free port over an
//! in-memory SQLite database, and the client walks one feature through review, a rejection,
//! a lost race, and completion; a write sent twice with one idempotency key is carried out
//! once.
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

    // Every step names who took it, and the agent's say they are an agent's: without a
    // principals file the server goes by what requests say, and the gate's rules (an agent
    // never decides, an author never approves their own work) by those names and kinds.
    let mut done = AdvanceRequest::new("agent_complete");
    done.actor = Some("spec-agent".to_owned());
    done.actor_kind = Some("agent".to_owned());
    // An agent restarted mid-call cannot tell whether its write got through: sent again with
    // the same idempotency key, it is carried out once, and the repeat gets the first answer.
    let key = format!("{id}-spec-done-1");
    let first = client
        .with_idempotency_key(&key)
        .advance_workflow(&id, &done)
        .await?;
    let again = client
        .with_idempotency_key(&key)
        .advance_workflow(&id, &done)
        .await?;
    anyhow::ensure!(again.version == first.version, "the repeat was carried out");
    println!(
        " agent_complete -> {} (v{}; sent twice with key {key}, carried out once)",
        first.state, first.version
    );

    for (trigger, actor, kind) in [
        ("human_rejected", "alice", "human"),
        ("agent_complete", "spec-agent", "agent"),
    ] {
        let mut request = AdvanceRequest::new(trigger);
        request.actor = Some(actor.to_owned());
        request.actor_kind = Some(kind.to_owned());
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

    // Two reviewers act on the same version they read: the second is told it lost, reads
    // the workflow again and sees what the first decided.
    let current = client.get_workflow(&id).await?;
    let mut approve = AdvanceRequest::new("human_approved");
    approve.actor = Some("alice".to_owned());
    approve.expected_version = Some(current.version);
    let mut reject = AdvanceRequest::new("human_rejected");
    reject.actor = Some("bob".to_owned());
    reject.reason = Some("not yet".to_owned());
    reject.expected_version = Some(current.version);
    client.advance_workflow(&id, &approve).await?;
    match client.advance_workflow(&id, &reject).await {
        Err(e) if e.code() == Some(ErrorCode::VersionConflict) => {
            let now = client.get_workflow(&id).await?;
            println!(
                "second reviewer: {e}; it is {} (v{}) now",
                now.state, now.version
            );
        }
        Ok(workflow) => anyhow::bail!("the stale rejection passed: {}", workflow.state),
        Err(e) => return Err(e.into()),
    }

    let mut finish = AdvanceRequest::new("agent_complete");
    finish.actor = Some("impl-agent".to_owned());
    finish.actor_kind = Some("agent".to_owned());
    client.advance_workflow(&id, &finish).await?;
    let done = client.get_workflow(&id).await?;
    println!("{id}: {} at {}%", done.state, done.progress.percent);

    for t in client.get_history(&id).await?.transitions {
        println!("  #{} {} -> {} ({})", t.seq, t.from, t.to, t.trigger);
    }
    // A list answers a page at a time (50 by default); `next_cursor` asks for the next.
    let mut params = ListWorkflowsParams::default();
    let mut listed = 0;
    loop {
        let page = client.list_workflows(&params).await?;
        listed += page.items.len();
        match page.next_cursor {
            Some(cursor) => params.cursor = Some(cursor),
            None => break,
        }
    }
    let summary = client.get_summary().await?;
    let counts: Vec<String> = summary
        .counts
        .iter()
        .map(|(state, count)| format!("{state} {count}"))
        .collect();
    println!(
        "{listed} workflow(s) listed; summary: {}",
        counts.join(", ")
    );
    Ok(())
}
