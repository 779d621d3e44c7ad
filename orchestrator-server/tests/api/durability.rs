//! A 2xx is durable: the real binary is killed with SIGKILL while clients advance workflows,
//! restarted on the same file, and every acknowledged transition is found.

use std::time::Duration;

use orchestrator_client::Client;
use orchestrator_core::api::StartWorkflowRequest;
use tempfile::TempDir;

use crate::helpers::{free_port, id, sqlite_server, wait_healthy};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acknowledged_transitions_survive_kill_9() {
    let dir = TempDir::new().unwrap();
    let database = dir.path().join("durable.db");
    let port = free_port();
    let mut server = sqlite_server(&database, port)
        .spawn()
        .expect("server binary starts");
    let client = Client::builder()
        .base_url(format!("http://127.0.0.1:{port}"))
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    wait_healthy(&client).await;

    // Eight workers, each cycling its own workflow PHASE_1 ⇄ GATE_1 as fast as it can and
    // remembering the last version the server acknowledged.
    let workers: Vec<_> = (0..8)
        .map(|n| {
            let client = client.clone();
            tokio::spawn(async move {
                let name = format!("durable-{n}");
                if client
                    .start_workflow(&StartWorkflowRequest::new(&name, "durability"))
                    .await
                    .is_err()
                {
                    return (name, 0);
                }
                let mut acknowledged = 1;
                for step in 0.. {
                    let trigger = if step % 2 == 0 {
                        "agent_complete"
                    } else {
                        "human_rejected"
                    };
                    match client
                        .advance_workflow(&id(&name), &crate::helpers::step(trigger))
                        .await
                    {
                        Ok(workflow) => acknowledged = workflow.version,
                        Err(_) => break,
                    }
                }
                (name, acknowledged)
            })
        })
        .collect();

    tokio::time::sleep(Duration::from_millis(1500)).await;
    server.kill().expect("SIGKILL"); // std's kill is SIGKILL on Unix.
    let _ = server.wait();

    let mut acknowledged = Vec::new();
    for worker in workers {
        acknowledged.push(worker.await.unwrap());
    }
    assert!(
        acknowledged.iter().any(|(_, v)| *v > 3),
        "the load did not run: {acknowledged:?}"
    );

    let mut server = sqlite_server(&database, port)
        .spawn()
        .expect("server binary starts");
    wait_healthy(&client).await;
    for (name, version) in acknowledged {
        if version == 0 {
            continue;
        }
        let history = client.get_history(&id(&name)).await.unwrap();
        // Every acknowledged transition is there; one more may have committed whose answer
        // was lost with the process.
        let stored = history.transitions.len() as u64;
        assert!(
            stored == version || stored == version + 1,
            "{name}: acknowledged {version}, stored {stored}"
        );
        let workflow = client.get_workflow(&id(&name)).await.unwrap();
        assert_eq!(workflow.version, stored);
    }
    server.kill().unwrap();
    let _ = server.wait();
}
