//! Assembling the service from its configuration: storage, the Agent Hub client, the
//! application, the listening socket.

use std::sync::Arc;

use orchestrator_core::Orchestrator;

use crate::http::auth::Auth;
use crate::http::webhooks::Webhooks;
use crate::{App, Config, hub, metrics, storage};

/// Why the service could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    /// Storage could not be opened or migrated.
    #[error(transparent)]
    Storage(#[from] storage::StorageError),
    /// The principals file could not be read or is malformed.
    #[error(transparent)]
    Principals(#[from] crate::principals::PrincipalsError),
    /// The Agent Hub client could not be built.
    #[error("agent hub client: {0}")]
    Hub(#[from] orchestrator_core::HubError),
    /// The webhooks' HTTP client could not be built.
    #[error("webhook client: {0}")]
    Webhooks(String),
    /// GATE_REQUIRED_APPROVALS and GATE_DUE_SECONDS make no gate policy (they are checked
    /// when the configuration is read: this is not expected).
    #[error("gate defaults (GATE_REQUIRED_APPROVALS, GATE_DUE_SECONDS): {0}")]
    GateDefaults(orchestrator_core::ValidationError),
    /// Another process holds the SQLite database file (see [`claim_database`]).
    #[error(
        "the database file {} is in use by another orchestrator-server; one server per SQLite file (several replicas need PostgreSQL)",
        .0.display()
    )]
    DatabaseInUse(std::path::PathBuf),
    /// The listening socket could not be bound.
    #[error("cannot listen on {address}: {source}")]
    Bind {
        /// The address.
        address: std::net::SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// Holds a SQLite database file for this process alone, until the returned file is dropped
/// (an advisory lock on it, which the system also releases when the process ends, however it
/// ends). A second server started on the same file stops here, before it opens the store: at
/// start-up a server fails every ask it finds under way as left by a crash, which would end
/// the first server's asks while they run. `None` for PostgreSQL, for a private in-memory
/// database, and where the file cannot be opened or locked (the store then says why it cannot
/// open it, or runs unguarded on a file system without locks).
pub fn claim_database(url: &storage::DatabaseUrl) -> Result<Option<std::fs::File>, StartupError> {
    let storage::DatabaseUrl::SqliteFile(path) = url else {
        return Ok(None);
    };
    if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
        // The store creates missing directories too, and says why if it cannot.
        let _ = storage::sqlite::private_directory(dir);
    }
    let Ok(file) = storage::sqlite::private_file_options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
    else {
        return Ok(None);
    };
    match file.try_lock() {
        Ok(()) => Ok(Some(file)),
        Err(std::fs::TryLockError::WouldBlock) => Err(StartupError::DatabaseInUse(path.clone())),
        Err(std::fs::TryLockError::Error(e)) => {
            tracing::warn!(error = %e, "the database file cannot be locked; a second server on it would not be stopped");
            Ok(None)
        }
    }
}

/// Opens storage (running migrations) and builds the application `config` describes.
///
/// On a SQLite file it takes what it finds as left by a stopped server (asks under way are
/// failed, unanswered idempotency keys and webhook deliveries' leases let go): one
/// application per file at a time, which
/// [`claim_database`], called first and held while it runs, makes sure of.
pub async fn build_app(config: &Config) -> Result<App, StartupError> {
    // The principals file first: a bad one stops start-up before a database is created.
    let auth = Auth::new(config.api_token.clone(), config.principals_file.clone())?;
    let pool_size = usize::try_from(config.database_pool_size).unwrap_or(8);
    let repository = storage::connect(&config.database_url, pool_size).await?;
    let sole_server = repository.sole_server();
    let metrics = Arc::new(metrics::Metrics::new(repository.metrics()));
    metrics.expect_requests(
        crate::http::router::Route::TABLE
            .iter()
            .map(|(pattern, route)| (*pattern, route.methods())),
    );
    let hub = hub::HttpAgentHub::new(
        &config.agent_hub_url,
        config.hub_ask_timeout(),
        config.hub_call_timeout(),
        metrics.clone(),
    )?;
    // Both settings were range-checked when the configuration was parsed; the orchestrator
    // checks the policy they make once more.
    let gate_defaults = orchestrator_core::GatePolicy {
        required_approvals: config.gate_required_approvals,
        due_in_seconds: config.gate_due_seconds,
        ..Default::default()
    };
    let webhooks = Webhooks::new(repository.clone(), config.webhook_policy())
        .map_err(|e| StartupError::Webhooks(e.to_string()))?;
    let sessions: Arc<dyn storage::SessionRepository> = repository.clone();
    let orchestrator = Orchestrator::new(repository)
        .with_hub(Arc::new(hub))
        .with_gate_defaults(gate_defaults)
        .map_err(StartupError::GateDefaults)?;
    if let Some(used) = config.request_timeout_raised() {
        tracing::warn!(
            configured_seconds = config.request_timeout_seconds,
            used_seconds = used.as_secs(),
            "REQUEST_TIMEOUT_SECONDS raised: a request may take the consultation wait, one \
             Agent Hub call and 5 s"
        );
    }
    if let Some(used) = config.body_timeout_lowered() {
        tracing::warn!(
            configured_seconds = config.body_timeout_seconds,
            used_seconds = used.as_secs(),
            "BODY_TIMEOUT_SECONDS lowered: a body must arrive a second before the request's \
             own bound (REQUEST_TIMEOUT_SECONDS, or as raised) ends"
        );
    }
    if config.open_to_the_network() {
        tracing::warn!(
            host = %config.host,
            "no ORCHESTRATOR_API_TOKEN and no ORCHESTRATOR_PRINCIPALS_FILE: anyone who reaches \
             this address (by an IP address, localhost or a name in ALLOWED_HOSTS) may do \
             anything, overrides and webhooks included; set one, or HOST=127.0.0.1"
        );
    }
    if config.allowed_hosts_ignored() {
        tracing::warn!(
            "ALLOWED_HOSTS is ignored: with a token or principals every name is answered (the \
             names matter only to a server without one)"
        );
    }
    if config.api_token_guessable() {
        tracing::warn!(
            shortest_advised = crate::config::GUESSABLE_TOKEN_LEN,
            "ORCHESTRATOR_API_TOKEN is short: failed attempts are not slowed down, so it may be \
             guessed; use a random one (openssl rand -hex 32)"
        );
    }
    if config.hub_timeout_below_experts() {
        tracing::warn!(
            agent_hub_timeout_seconds = config.agent_hub_timeout_seconds,
            hub_expert_seconds = crate::config::HUB_EXPERT_SECONDS,
            "AGENT_HUB_TIMEOUT_SECONDS is shorter than the Agent Hub gives its experts: a slow \
             expert's answer or escalation arrives after the question failed here, and is never \
             seen; asking again puts the question in the hub's session twice"
        );
    }
    if let Some(schedule) = config.retries_outlast_retention() {
        tracing::warn!(
            events_retention_seconds = config.events_retention_seconds,
            retry_schedule_seconds = schedule.as_secs(),
            "EVENTS_RETENTION_SECONDS is shorter than WEBHOOK_RETRY_SCHEDULE: a webhook delivery \
             that fails for good is deleted as soon as it does, before it can be listed and \
             redelivered"
        );
    }
    let app = App::with(
        orchestrator,
        auth,
        config.allowed_hosts.clone().unwrap_or_default(),
        metrics,
        config.limits(),
        Some(webhooks),
        Some(sessions),
    );
    // One SQLite database has one server: every ask it finds was left by a stop. A PostgreSQL
    // database may have replicas asking right now: only asks older than any live one are left
    // over (unless nothing else was connected to it when this server opened it: then the store
    // failed every ask left under way already, under the migrations' lock).
    app.recover_asks(sole_server).await;
    // Likewise, on SQLite, the idempotency keys of requests it was answering when it stopped,
    // which would answer their retries "in use" until their leases end, and the webhook
    // deliveries it was attempting, which would wait for theirs. Not on PostgreSQL: a replica
    // may be answering or attempting them, so there the leases are waited out.
    if sole_server {
        app.forget_left_keys().await;
        app.release_delivery_leases().await;
    }
    // Webhooks made while private networks were allowed fail every delivery once they are
    // not: said now, not only in each attempt's `last_error`.
    if let Some(webhooks) = app.webhooks() {
        webhooks.warn_of_refused_targets().await;
    }
    Ok(app)
}

/// Binds the configured address; port 0 picks a free port (read it from `local_addr`).
pub async fn bind(config: &Config) -> Result<tokio::net::TcpListener, StartupError> {
    let address = config.bind_address();
    tokio::net::TcpListener::bind(address)
        .await
        .map_err(|source| StartupError::Bind { address, source })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::DatabaseUrl;

    /// Gate settings that make no policy (a `Config` built by hand; parsing range-checks them)
    /// stop start-up naming them, rather than failing every start later.
    #[tokio::test]
    async fn gate_settings_that_make_no_policy_stop_start_up() {
        let config = Config {
            gate_required_approvals: 0,
            ..Config::for_tests(DatabaseUrl::SqliteMemory)
        };
        let refused = build_app(&config).await.err().expect("refused");
        assert!(
            matches!(refused, StartupError::GateDefaults(_)),
            "{refused}"
        );
        assert!(
            refused.to_string().contains("GATE_REQUIRED_APPROVALS"),
            "{refused}"
        );
    }
}
