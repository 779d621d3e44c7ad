//! `spawn_app`: a server on a free port over a fresh SQLite file, and a client for it.

use std::net::SocketAddr;
use std::sync::LazyLock;

use std::future::Future;
use std::sync::Arc;

use orchestrator_client::{Client, ClientError};
use orchestrator_core::FeatureId;
use orchestrator_core::api::ErrorCode;
use orchestrator_core::api::{StartWorkflowRequest, WorkflowResponse};
use orchestrator_server::hub::stand_in::StandInHub;
use orchestrator_server::storage::DatabaseUrl;
use orchestrator_server::{Config, LogFormat, bind, build_app, serve, telemetry};
use tempfile::TempDir;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Logs go nowhere unless `TEST_LOG` is set.
static TRACING: LazyLock<()> = LazyLock::new(|| {
    if std::env::var_os("TEST_LOG").is_some() {
        let subscriber = telemetry::subscriber("debug", LogFormat::Pretty, std::io::stdout);
        let _ = tracing::subscriber::set_global_default(subscriber);
    }
});

/// A running server and what it needs to stay alive.
pub struct TestApp {
    pub address: SocketAddr,
    pub client: Client,
    /// The stand-in Agent Hub this server consults (unless a test pointed it elsewhere).
    pub hub: StandInHub,
    /// The database file's directory; dropped with the app.
    pub dir: TempDir,
    pub config: Config,
    /// The application the server runs, until it stops (it holds the store open).
    app: Option<orchestrator_server::http::App>,
    stop: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<()>>,
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.address)
    }

    /// A typed client of this server that sends `token`.
    pub fn client_with(&self, token: &str) -> Client {
        Client::builder()
            .base_url(self.url(""))
            .token(token)
            .build()
            .unwrap()
    }

    /// Re-reads the principals file, as SIGHUP has the binary do.
    pub fn reload_principals(&self) {
        if let Some(app) = &self.app {
            app.reload_principals();
        }
    }

    /// Stops the server gracefully and waits for it.
    pub async fn stop(&mut self) {
        self.app = None;
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(server) = self.server.take() {
            server.await.expect("server task panicked");
        }
    }

    /// Stops the server and starts a new one on the same database file.
    pub async fn restart(mut self) -> TestApp {
        self.stop().await;
        let dir = std::mem::replace(&mut self.dir, TempDir::new().expect("temp dir"));
        start(self.config.clone(), dir, self.hub.clone()).await
    }

    /// The body of a plain `GET` of `path` (no token), whatever its status.
    pub async fn text(&self, path: &str) -> String {
        reqwest::get(self.url(path))
            .await
            .expect("the server answers")
            .text()
            .await
            .expect("a text body")
    }

    /// The server's `/metrics` text.
    pub async fn metrics(&self) -> String {
        self.text("/metrics").await
    }

    /// The value of one series in the server's `/metrics` (its name with any labels).
    pub async fn metric(&self, series: &str) -> f64 {
        let text = self.metrics().await;
        text.lines()
            .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("{series} missing from:\n{text}"))
    }

    pub async fn start_workflow(&self, id: &str) -> WorkflowResponse {
        self.client
            .start_workflow(&StartWorkflowRequest::new(id, format!("feature {id}")))
            .await
            .expect("start")
    }
}

pub fn id(id: &str) -> FeatureId {
    FeatureId::parse(id).expect("test ids are valid")
}

/// A server over a fresh SQLite file.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// A server over a fresh SQLite file consulting a fresh stand-in hub, with settings changed by
/// `adjust`.
pub async fn spawn_app_with(adjust: impl FnOnce(&mut Config)) -> TestApp {
    let dir = TempDir::new().expect("temp dir");
    let mut config = Config::for_tests(DatabaseUrl::SqliteFile(dir.path().join("orchestrator.db")));
    let hub = StandInHub::new();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("hub binds");
    config.agent_hub_url = format!("http://{}", listener.local_addr().expect("hub address"));
    tokio::spawn(hub.clone().serve(listener, std::future::pending()));
    adjust(&mut config);
    start(config, dir, hub).await
}

/// An open server's app (no token, no webhooks, no board sessions) over `orchestrator`, with
/// `limits`: for tests that set a bound no setting reaches, or drive the app's parts alone.
pub fn open_app(
    orchestrator: orchestrator_core::Orchestrator,
    limits: orchestrator_server::http::Limits,
) -> orchestrator_server::App {
    orchestrator_server::App::with(
        orchestrator,
        orchestrator_server::http::auth::Auth::new(None, None).expect("an open server's auth"),
        Default::default(),
        Arc::new(orchestrator_server::metrics::Metrics::default()),
        limits,
        None,
        None,
    )
}

/// An address where nothing listens.
pub fn dead_url() -> String {
    // The discard port: below the ephemeral range, so no test's listener on port 0 can take it
    // (a port picked free and let go could be another test's by the time it is called).
    "http://127.0.0.1:9".to_owned()
}

async fn start(config: Config, dir: TempDir, hub: StandInHub) -> TestApp {
    LazyLock::force(&TRACING);
    let app = build_app(&config).await.expect("app builds");
    let listener = bind(&config).await.expect("binds");
    let address = listener.local_addr().expect("local address");
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(serve(listener, app.clone(), async {
        let _ = stopped.await;
    }));
    // No retries: the tests check exactly what the server answers.
    let mut client = Client::builder()
        .base_url(format!("http://{address}"))
        .retries(0);
    if let Some(token) = &config.api_token {
        client = client.token(token.expose());
    }
    TestApp {
        address,
        client: client.build().expect("client builds"),
        hub,
        dir,
        config,
        app: Some(app),
        stop: Some(stop),
        server: Some(server),
    }
}

/// Starts `attempt(0)` … `attempt(count - 1)` at the same moment and waits for all. Every
/// failure must carry one of the `allowed` codes; returns how many succeeded.
pub async fn race<T, F, Fut>(count: usize, allowed: &[ErrorCode], attempt: F) -> usize
where
    F: Fn(usize) -> Fut,
    Fut: Future<Output = Result<T, ClientError>> + Send + 'static,
    T: Send + 'static,
{
    let barrier = Arc::new(tokio::sync::Barrier::new(count));
    let tasks: Vec<_> = (0..count)
        .map(|n| {
            let barrier = barrier.clone();
            let attempt = attempt(n);
            tokio::spawn(async move {
                barrier.wait().await;
                attempt.await
            })
        })
        .collect();
    let mut winners = 0;
    for task in tasks {
        match task.await.expect("a racer panicked") {
            Ok(_) => winners += 1,
            Err(e) => assert!(
                e.code().is_some_and(|code| allowed.contains(&code)),
                "unexpected failure: {e}"
            ),
        }
    }
    winners
}

/// The last entry of `f`'s history, as `client` reads it.
pub async fn last_entry(client: &Client, f: &FeatureId) -> orchestrator_core::Transition {
    let history = client.get_history(f).await.expect("the history is read");
    history
        .transitions
        .into_iter()
        .last()
        .expect("a history has entries")
}

/// An advance by `trigger`, with a reason when it is a rejection (which needs one).
pub fn step(trigger: &str) -> orchestrator_core::api::AdvanceRequest {
    let mut request = orchestrator_core::api::AdvanceRequest::new(trigger);
    if trigger == "human_rejected" {
        request.reason = Some("the tests do not cover retries".to_owned());
    }
    request
}

/// The real `orchestrator-server` binary, with a clean environment and warnings-only logs.
pub fn server_binary() -> std::process::Command {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_orchestrator-server"));
    command.env_clear().env("RUST_LOG", "warn");
    command
}

/// The binary set to serve the SQLite file `database` on loopback `port`, its output
/// discarded; add settings, then spawn it.
pub fn sqlite_server(database: &std::path::Path, port: u16) -> std::process::Command {
    server_on(port, &format!("sqlite:///{}", database.display()))
}

/// The server binary on 127.0.0.1:`port` (0: any) and the database `url`, its output dropped.
pub fn server_on(port: u16, url: &str) -> std::process::Command {
    let mut command = server_binary();
    command
        .env("HOST", "127.0.0.1")
        .env("PORT", port.to_string())
        .env("DATABASE_URL", url)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    command
}

/// A stub HTTP server on a free loopback port, and its base URL: it reads each request (up
/// to 4 KiB of it) and sends back, on a connection it then closes, the JSON answer
/// `answer(n)` names for the `n`-th request (from 0): its status, any extra header lines
/// (each ending in `\r\n`) and its body. Status 0 closes the connection without an answer,
/// as a server that stopped mid-request does.
pub async fn stub_server<F>(answer: F) -> String
where
    F: Fn(usize) -> (u16, &'static str, &'static str) + Send + 'static,
{
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let mut n = 0;
        while let Ok((mut stream, _)) = listener.accept().await {
            let mut request = [0u8; 4096];
            let _ = stream.read(&mut request).await;
            let (status, headers, body) = answer(n);
            n += 1;
            if status == 0 {
                continue;
            }
            let answer = format!(
                "HTTP/1.1 {status} Stub\r\ncontent-type: application/json\r\n{headers}content-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(answer.as_bytes()).await;
        }
    });
    url
}

/// A server on a free loopback port that takes connections and never answers, and its base
/// URL: each request to it waits until its client gives up.
pub async fn silent_server() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    });
    url
}

/// A loopback port nothing listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// Waits (up to 20 s) until the server behind `client` answers `/health`.
pub async fn wait_healthy(client: &Client) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while client.get_health().await.is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "server did not become healthy"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Mints a token for a new principal into the principals file `file`.
pub fn mint(
    file: &std::path::Path,
    name: &str,
    kind: orchestrator_core::ActorKind,
    roles: &[orchestrator_core::Role],
) -> String {
    let roles: std::collections::BTreeSet<_> = roles.iter().copied().collect();
    let name = orchestrator_core::Actor::parse(name).expect("a valid name");
    orchestrator_server::principals::add(file, &name, kind, &roles).expect("minted")
}

/// Many clients, half through `a` and half through `b` (two replicas, or one server twice),
/// advance a few workflows at once, each picking workflow and trigger at random, so advances
/// share batches, race each other and, across PostgreSQL replicas, are judged on remembered
/// rows another replica has changed since. Whatever each client was told must be what
/// was stored: every answered advance is the history entry at its version, each history is a
/// chain without gaps, and each entry has one `workflow.transitioned` event, numbered in
/// history order, in a log whose ids only grow.
pub async fn advance_at_random(a: &TestApp, b: &TestApp) {
    const WORKFLOWS: usize = 6;
    const CLIENTS: u64 = 24;
    const ADVANCES: usize = 25;
    let features: Vec<String> = (0..WORKFLOWS).map(|n| format!("shuffled-{n}")).collect();
    for feature in &features {
        a.start_workflow(feature).await;
    }

    let clients = (0..CLIENTS).map(|n| {
        let client = if n % 2 == 0 {
            a.client.clone()
        } else {
            b.client.clone()
        };
        let features = features.clone();
        tokio::spawn(async move {
            // xorshift64, seeded per client: the same run every time.
            let mut state = 0x9E37_79B9_7F4A_7C15_u64 ^ (n + 1);
            let mut next = move || {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state
            };
            let mut answered = Vec::new();
            for _ in 0..ADVANCES {
                let feature = &features[(next() % WORKFLOWS as u64) as usize];
                let trigger = ["agent_complete", "human_rejected"][(next() % 2) as usize];
                match client.advance_workflow(&id(feature), &step(trigger)).await {
                    Ok(workflow) => {
                        answered.push((feature.clone(), workflow.version, workflow.state))
                    }
                    Err(e) => assert!(
                        matches!(
                            e.code(),
                            Some(ErrorCode::InvalidTransition | ErrorCode::VersionConflict)
                        ),
                        "{trigger} of {feature}: {e}"
                    ),
                }
            }
            answered
        })
    });
    let mut answered = Vec::new();
    for client in clients.collect::<Vec<_>>() {
        answered.extend(client.await.unwrap());
    }
    assert!(
        answered.len() > WORKFLOWS,
        "enough advances won for the checks below to mean something"
    );

    let mut events = Vec::new();
    let mut after = None;
    loop {
        let page = b
            .client
            .list_events(&orchestrator_core::api::EventsQuery {
                after,
                limit: orchestrator_core::api::EventsQuery::MAX_LIMIT,
                ..Default::default()
            })
            .await
            .unwrap();
        if page.items.is_empty() {
            break;
        }
        after = Some(page.next_after.parse().unwrap());
        events.extend(page.items);
    }
    for pair in events.windows(2) {
        assert!(pair[0].seq() < pair[1].seq(), "ids only grow");
    }

    for feature in &features {
        let history = a
            .client
            .get_history(&id(feature))
            .await
            .unwrap()
            .transitions;
        for (index, entry) in history.iter().enumerate() {
            assert_eq!(entry.seq, index as u64 + 1, "{feature}");
        }
        for pair in history.windows(2) {
            assert_eq!(pair[0].to, pair[1].from, "{feature}");
        }
        let stored = b.client.get_workflow(&id(feature)).await.unwrap();
        assert_eq!(stored.version, history.len() as u64, "{feature}");
        assert_eq!(
            Some(&stored.state),
            history.last().map(|e| &e.to),
            "{feature}"
        );

        let mut told: Vec<_> = answered
            .iter()
            .filter(|(f, _, _)| f == feature)
            .map(|(_, version, state)| (*version, *state))
            .collect();
        told.sort_by_key(|(version, _)| *version);
        let recorded: Vec<_> = history[1..]
            .iter()
            .map(|entry| (entry.seq, entry.to))
            .collect();
        assert_eq!(
            told, recorded,
            "{feature}: each answer is the entry at its version"
        );

        let seqs: Vec<u64> = events
            .iter()
            .filter(|e| e.subject.as_str() == feature.as_str())
            .map(|e| e.data["seq"].as_u64().unwrap())
            .collect();
        assert_eq!(
            seqs,
            (1..=history.len() as u64).collect::<Vec<_>>(),
            "{feature}: one event per entry, in history order"
        );
    }
}

/// Runs `sql` on the database `url` names, on a connection of its own, beside any server or
/// store using it (SQLite waits up to 5 s for their locks). What the tests do by hand to a
/// stored row: damage it, age it, undo a migration.
pub async fn run_sql(url: &DatabaseUrl, sql: &str) {
    match url {
        DatabaseUrl::SqliteFile(file) => {
            use diesel::Connection;
            use diesel::connection::SimpleConnection;
            let path = file.to_str().expect("a UTF-8 path");
            let mut conn = diesel::SqliteConnection::establish(path).expect("the file opens");
            conn.batch_execute(&format!("PRAGMA busy_timeout = 5000; {sql}"))
                .expect("the SQL runs");
        }
        DatabaseUrl::Postgres(url) => {
            use diesel_async::{AsyncConnection, SimpleAsyncConnection};
            let mut conn = diesel_async::AsyncPgConnection::establish(url)
                .await
                .expect("the database accepts a connection");
            conn.batch_execute(sql).await.expect("the SQL runs");
        }
        DatabaseUrl::SqliteMemory => panic!("a private in-memory database has no other connection"),
    }
}

/// An ask of `f` (without an idempotency key), its request in a task of its own.
pub fn ask_in_task(
    app: &TestApp,
    f: &FeatureId,
) -> tokio::task::JoinHandle<reqwest::Result<reqwest::Response>> {
    let url = app.url(&format!("/workflow/{f}/consultations"));
    tokio::spawn(async move {
        reqwest::Client::new()
            .post(url)
            .json(
                &serde_json::json!({"topic": "architecture", "question": "Think it over, please"}),
            )
            .send()
            .await
    })
}

/// An ask of `f` that the hub holds, its request (still waiting) in a task of its own.
pub async fn ask_held(
    app: &TestApp,
    f: &FeatureId,
) -> tokio::task::JoinHandle<reqwest::Result<reqwest::Response>> {
    app.hub
        .inject(orchestrator_server::hub::stand_in::Fault::Hold);
    let asking = ask_in_task(app, f);
    tokio::time::timeout(std::time::Duration::from_secs(30), app.hub.until_held(1))
        .await
        .expect("the question reaches the hub");
    asking
}
