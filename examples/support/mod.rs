//! What the client examples share: the server they talk to.

use orchestrator_server::storage::DatabaseUrl;
use orchestrator_server::{Config, bind, build_app, serve};

/// The URL given as the first argument, or else a server started in-process on a free port
/// over an in-memory SQLite database (it stops with the example).
pub async fn server_url() -> anyhow::Result<String> {
    if let Some(url) = std::env::args().nth(1) {
        return Ok(url);
    }
    let config = Config::for_tests(DatabaseUrl::SqliteMemory);
    let app = build_app(&config).await?;
    let listener = bind(&config).await?;
    let address = listener.local_addr()?;
    tokio::spawn(serve(listener, app, std::future::pending()));
    Ok(format!("http://{address}"))
}
