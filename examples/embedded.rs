//! Embeds the orchestrator: the core with the in-memory repository, one feature carried
//! through its whole life cycle, no server and no database.
//!
//! Run it with `cargo run -p examples --example embedded`.

use std::sync::Arc;

use orchestrator_core::api::{StartWorkflowRequest, WorkflowResponse};
use orchestrator_core::{
    Actor, Advance, InMemoryWorkflowRepository, Orchestrator, Reason, Trigger,
};

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let orchestrator = Orchestrator::new(Arc::new(InMemoryWorkflowRepository::new()));

    let request =
        StartWorkflowRequest::new("008-services-architecture", "Refactor to microservices");
    let workflow = orchestrator
        .start(request.try_into()?)
        .await?
        .into_workflow();
    let id = workflow.feature_id().clone();
    println!("started {id} in {}", workflow.state());

    let steps = [
        (
            Trigger::AgentComplete,
            "spec-agent",
            "specification and plan written",
        ),
        (
            Trigger::HumanRejected,
            "reviewer",
            "the plan misses the data migration",
        ),
        (Trigger::AgentComplete, "spec-agent", "plan revised"),
        (Trigger::HumanApproved, "reviewer", "looks good"),
        (
            Trigger::AgentComplete,
            "dev-agent",
            "implemented and tested",
        ),
    ];
    for (trigger, actor, reason) in steps {
        let mut advance = Advance::new(trigger);
        advance.actor = Some(Actor::parse_name(actor)?);
        advance.reason = Some(Reason::parse(reason)?);
        let workflow = orchestrator.advance(&id, advance).await?;
        println!(
            "{trigger:>15} by {actor:<10} -> {} (v{})",
            workflow.state(),
            workflow.version()
        );
    }

    // A finished workflow refuses everything; the error says what the state allows.
    if let Err(refused) = orchestrator
        .advance(&id, Advance::new(Trigger::Cancel))
        .await
    {
        println!("refused: {refused}");
    }

    let workflow = orchestrator.get(&id).await?;
    let body = WorkflowResponse::new(&workflow, orchestrator.now());
    println!("{}", serde_json::to_string_pretty(&body)?);
    for entry in orchestrator.history(&id).await? {
        println!(
            "#{} {} -> {} ({})",
            entry.seq, entry.from, entry.to, entry.trigger
        );
    }
    Ok(())
}
