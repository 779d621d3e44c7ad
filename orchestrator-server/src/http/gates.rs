//! The clock around the core's gate sweep: once a second, every stay at the gate past its
//! deadline is noted (once, whichever replica sees it first) and its policy applied; each
//! note is logged as a `gate.overdue` event and counted.

use std::time::Duration;

use tokio::sync::watch;

use super::App;

/// How often the deadlines are checked: a stay is noted within this (plus the sweep's own
/// time) after its `due_at`.
pub const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// Sweeps every [`SWEEP_EVERY`] until `stop` turns true.
pub async fn sweep(app: App, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(SWEEP_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait_for(|stop| *stop) => return,
        }
        sweep_once(&app).await;
    }
}

/// One sweep; a storage failure is logged and the next sweep tries again.
async fn sweep_once(app: &App) {
    match app.orchestrator().sweep_gates().await {
        Ok(expired) => {
            for gate in expired {
                app.metrics().gate_expired(gate.on_expiry);
                if let Some(trigger) = gate.on_expiry.trigger() {
                    app.metrics().transition(trigger);
                }
                tracing::info!(
                    event = "gate.overdue",
                    feature_id = %gate.feature_id,
                    due_at = %gate.due_at.to_rfc3339(),
                    on_expiry = gate.on_expiry.as_str(),
                    state = %gate.workflow.state(),
                    "gate past its deadline"
                );
            }
        }
        Err(e) => tracing::warn!(error = %e, "could not sweep the gates' deadlines"),
    }
}
