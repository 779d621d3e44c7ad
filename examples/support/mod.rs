//! What the client examples share: the server they talk to, and a client of it.

use orchestrator_client::Client;
use orchestrator_server::storage::DatabaseUrl;
use orchestrator_server::{Config, bind, build_app, serve};

/// The URL given as the first argument, or else a server started in-process on a free port
/// over an in-memory SQLite database (it stops with the example). `-h` or `--help` prints how
/// to call it, then `about` (what the example shows and what your server needs for it), and
/// ends the example.
pub async fn server_url(about: &str) -> anyhow::Result<String> {
    if let Some(url) = std::env::args().nth(1) {
        if url == "-h" || url == "--help" {
            let program = std::env::args().next().unwrap_or_default();
            let name = std::path::Path::new(&program)
                .file_name()
                .map_or(program.clone(), |name| name.to_string_lossy().into_owned());
            println!(
                "usage: {name} [SERVER_URL]\n\n\
                 Without SERVER_URL it starts a server of its own, in memory. With one it talks to\n\
                 that server, with the token in ORCHESTRATOR_TOKEN (else ORCHESTRATOR_API_TOKEN)\n\
                 when the server needs one. It leaves its feature on your server.\n\n{about}"
            );
            std::process::exit(0);
        }
        return Ok(url);
    }
    // Test settings (webhooks to loopback allowed, no Agent Hub) and a server that runs until
    // the example ends: a service of yours reads its `Config` from the environment
    // (`Config::try_parse`) and passes `serve` a shutdown future (a signal).
    let config = Config::for_tests(DatabaseUrl::SqliteMemory);
    let app = build_app(&config).await?;
    let listener = bind(&config).await?;
    let address = listener.local_addr()?;
    tokio::spawn(serve(listener, app, std::future::pending()));
    Ok(format!("http://{address}"))
}

/// A client of `base_url`, with the bearer token in `ORCHESTRATOR_TOKEN` (else in the
/// server's own `ORCHESTRATOR_API_TOKEN`, as the CLI reads them) when one is set: a server of
/// your own with a shared token or a principals file needs one.
pub fn client(base_url: &str) -> anyhow::Result<Client> {
    let mut builder = Client::builder().base_url(base_url);
    let set = |name| std::env::var(name).ok().filter(|t: &String| !t.is_empty());
    if let Some(token) = set("ORCHESTRATOR_TOKEN").or_else(|| set("ORCHESTRATOR_API_TOKEN")) {
        builder = builder.token(token);
    }
    Ok(builder.build()?)
}
