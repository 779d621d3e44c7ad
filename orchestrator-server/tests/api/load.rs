//! Many concurrent clients at once: every request answered, none failed.

use orchestrator_core::api::ListWorkflowsParams;

use crate::helpers::{id, spawn_app};

/// 64 clients, each starting its own workflow and driving it around the rework loop while
/// also reading, listing and summarising: zero errors.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixty_four_concurrent_clients_all_succeed() {
    let app = spawn_app().await;
    let tasks: Vec<_> = (0..64)
        .map(|n| {
            let client = app.client.clone();
            tokio::spawn(async move {
                let name = format!("load-{n}");
                let request = orchestrator_core::api::StartWorkflowRequest::new(&name, "load");
                client.start_workflow(&request).await?;
                for step in 0..10 {
                    let trigger = if step % 2 == 0 {
                        "agent_complete"
                    } else {
                        "human_rejected"
                    };
                    client
                        .advance_workflow(&id(&name), &crate::helpers::step(trigger))
                        .await?;
                    client.get_workflow(&id(&name)).await?;
                }
                client
                    .list_workflows(&ListWorkflowsParams::default())
                    .await?;
                client.get_summary().await?;
                client.get_history(&id(&name)).await
            })
        })
        .collect();
    for task in tasks {
        let history = task.await.unwrap().expect("every request succeeds");
        assert_eq!(history.transitions.len(), 11);
    }
    assert_eq!(app.client.get_summary().await.unwrap().total, 64);
}

/// Random advances by many clients at once, sharing the writer's batches, are answered as
/// they were stored (SQLite; `replicas` runs the same across two PostgreSQL replicas).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn random_concurrent_advances_are_answered_as_stored() {
    let app = spawn_app().await;
    crate::helpers::advance_at_random(&app, &app).await;
}
