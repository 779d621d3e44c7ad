//! A stand-in Agent Hub on `http://localhost:8001`, so the whole system runs on one machine.
//!
//! It speaks the hub's API as the deployed hub speaks it (sessions, `/ask/{topic}`,
//! escalations, health), quirks included. Behaviour is scripted by markers in the question:
//!
//! - `[confidence=NN]`: the expert's confidence (any other question gets 90, so `security`
//!   questions, threshold 95, are escalated to a human);
//! - `[delay=N]`: the expert takes N seconds (a slow expert: past `AGENT_HUB_WAIT_SECONDS`
//!   the orchestrator answers 202 `asking` and finishes in the background; past
//!   `AGENT_HUB_TIMEOUT_SECONDS` the consultation ends `failed`).
//!
//! Answer an escalation through the orchestrator (`orchestrator respond FEATURE CONSULTATION
//! confirm|correct|add_context [--response …]`), or at the hub as a reviewer would:
//!
//! ```sh
//! curl -X POST localhost:8001/escalations/<id> -H 'Content-Type: application/json' \
//!   -d '{"action": "add_context", "responder": "you", "response": "it runs nightly"}'
//! ```
//!
//! A hub that lost its database: `curl -X POST localhost:8001/_stand-in/forget-escalations`
//! (every escalation is then unknown, and the orchestrator asks for a reroute).
//!
//! Run it with `cargo run -p examples --example agent_hub` (set `AGENT_HUB_PORT` for another
//! port; not `PORT`, which names the orchestrator's own port when both run from one shell).

use orchestrator_server::hub::stand_in::StandInHub;

/// What `--help` prints: how to run it and what it understands.
const USAGE: &str = "usage: agent_hub   (AGENT_HUB_PORT=8001 by default; it listens on 127.0.0.1)

Markers in a question script the expert: [confidence=NN] (any other question gets 90, so a
security question, threshold 95, waits for a human) and [delay=N] (the expert takes N s).
Forget every escalation, as a hub that lost its database:
  curl -X POST localhost:8001/_stand-in/forget-escalations";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    if std::env::args().skip(1).any(|a| a == "-h" || a == "--help") {
        println!("{USAGE}");
        return Ok(());
    }
    let port: u16 = match std::env::var("AGENT_HUB_PORT") {
        Ok(port) => port
            .parse()
            .map_err(|_| anyhow::anyhow!("AGENT_HUB_PORT must be a port number, not {port:?}"))?,
        Err(_) => 8001,
    };
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "cannot listen on 127.0.0.1:{port}: {e} (set AGENT_HUB_PORT for another port)"
            )
        })?;
    println!(
        "stand-in Agent Hub on http://{} (--help: its markers and switch)",
        listener.local_addr()?
    );
    let shutdown = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    StandInHub::new().serve(listener, shutdown).await;
    Ok(())
}
