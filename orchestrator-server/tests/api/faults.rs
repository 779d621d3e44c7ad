//! Fault injection: what an operator's worst day does to the service, seen from outside.
//!
//! A sustained write load (the write-ahead log stays bounded), stalled and oversized requests,
//! too many connections, a full disk, a read-only mount, a lock held by another process,
//! PostgreSQL connections terminated, cut or stalled (through [`Proxy`]). Every failure of
//! the storage itself must answer 503 `DATABASE_UNAVAILABLE`, never 500, and the service must
//! recover on its own once the fault is gone.
//!
//! The disk tests mount a small tmpfs and are skipped with a notice where mounting is not
//! allowed; the PostgreSQL tests need `TEST_DATABASE_URL`, like the other PostgreSQL tests.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use orchestrator_core::api::{AdvanceRequest, ErrorCode, ErrorEnvelope, StartWorkflowRequest};
use orchestrator_core::{
    Advance, FeatureId, Orchestrator, StartWorkflow, Trigger, WorkflowRepository,
};
use orchestrator_server::storage::{self, DatabaseUrl};
use orchestrator_server::{Config, build_app};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::helpers::{TestApp, id, spawn_app_with};
use crate::postgres::TestDatabase;

/// Sends `request` on a new connection and reads until the server closes it or `wait` passes.
async fn raw(address: SocketAddr, request: &[u8], wait: Duration) -> String {
    let mut stream = TcpStream::connect(address).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(wait, stream.read_to_end(&mut answer)).await;
    String::from_utf8_lossy(&answer).into_owned()
}

/// The status and envelope of a raw answer.
fn envelope(answer: &str) -> (u16, ErrorEnvelope) {
    let status = answer
        .get(9..12)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {answer:?}"));
    let body = answer
        .split_once("\r\n\r\n")
        .map(|(_, body)| body)
        .unwrap_or_default();
    let envelope = serde_json::from_str(body)
        .unwrap_or_else(|e| panic!("not an error envelope ({e}): {answer:?}"));
    (status, envelope)
}

// 1. The write-ahead log stays bounded under a sustained write load, and a clean stop leaves
//    none behind.

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_write_ahead_log_stays_bounded_under_sustained_writes() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use storage::sqlite::WAL_RESET_BYTES;
    let dir = tempfile::TempDir::new().unwrap();
    let file = dir.path().join("wal.db");
    let wal = dir.path().join("wal.db-wal");
    let repository = storage::SqliteRepository::open(file, 4).await.unwrap();
    let orchestrator = Orchestrator::new(Arc::new(repository.clone()));
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for n in 0..32 {
        let orchestrator = orchestrator.clone();
        let stop = stop.clone();
        writers.push(tokio::spawn(async move {
            let feature = FeatureId::parse(format!("wal-{n}")).unwrap();
            orchestrator
                .start(StartWorkflow::new(
                    feature.clone(),
                    orchestrator_core::Description::parse("load").unwrap(),
                ))
                .await
                .unwrap();
            let mut steps = 0u64;
            while !stop.load(Ordering::Relaxed) {
                for trigger in [Trigger::AgentComplete, Trigger::HumanRejected] {
                    let advance = Advance {
                        reason: orchestrator_core::Reason::parse("rework").ok(),
                        ..Advance::new(trigger)
                    };
                    orchestrator.advance(&feature, advance).await.unwrap();
                    steps += 1;
                }
            }
            steps
        }));
    }
    // Writes for 6 s, and on a slow machine on until the log has reached the size at which
    // it is reset (then the resets are what keeps it bounded), for 60 s at most.
    let started = Instant::now();
    let mut largest = 0;
    while started.elapsed() < Duration::from_secs(6)
        || (largest < WAL_RESET_BYTES && started.elapsed() < Duration::from_secs(60))
    {
        largest = largest.max(std::fs::metadata(&wal).map_or(0, |m| m.len()));
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let mut steps = 0;
    for writer in writers {
        steps += writer.await.unwrap();
    }
    const MIB: u64 = 1024 * 1024;
    assert!(
        largest >= WAL_RESET_BYTES,
        "the load never filled the log to its reset size: {} MiB after {steps} transitions",
        largest / MIB
    );
    assert!(
        largest <= WAL_RESET_BYTES + 16 * MIB,
        "the log reached {} MiB after {steps} transitions",
        largest / MIB
    );
    repository.close().await;
    let left = std::fs::metadata(&wal).map_or(0, |m| m.len());
    assert_eq!(left, 0, "a clean stop left {left} bytes of log");
}

// 2. Stalled bodies and too many connections hold nothing for long.

#[tokio::test(flavor = "multi_thread")]
async fn a_body_that_stalls_is_answered_408_and_the_connection_closed() {
    let app = spawn_app_with(|c| c.body_timeout_seconds = 1).await;
    let started = Instant::now();
    let answer = raw(
        app.address,
        b"POST /workflow/start HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{\"feature_id\":",
        Duration::from_secs(10),
    )
    .await;
    let (status, body) = envelope(&answer);
    assert_eq!((status, body.error.code), (408, ErrorCode::RequestTimeout));
    assert!(started.elapsed() < Duration::from_secs(5));
    // Nothing was stored.
    assert_eq!(app.client.get_summary().await.unwrap().total, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn connections_beyond_the_limit_wait_until_one_closes() {
    let app = spawn_app_with(|c| c.max_connections = 2).await;
    // Two connections that never send a request hold both slots.
    let idle_a = TcpStream::connect(app.address).await.unwrap();
    let _idle_b = TcpStream::connect(app.address).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let third = tokio::spawn(raw(
        app.address,
        b"GET /health HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n",
        Duration::from_secs(10),
    ));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!third.is_finished(), "a third connection was served");
    drop(idle_a);
    let answer = tokio::time::timeout(Duration::from_secs(5), third)
        .await
        .expect("served once a slot freed")
        .unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_does_not_read_its_answers_loses_the_connection() {
    let app = spawn_app_with(|c| c.write_timeout_seconds = 1).await;
    // Many answers asked for at once, none read: the socket buffers fill and the server's
    // writes wait on the client.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    // A small receive window, so the kernel does not buffer all the answers for us.
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stream = socket.connect(app.address).await.unwrap();
    let pipelined = "GET /openapi.json HTTP/1.1\r\nhost: localhost\r\n\r\n".repeat(400);
    stream.write_all(pipelined.as_bytes()).await.unwrap();
    tokio::time::sleep(Duration::from_secs(4)).await;
    // Reading now drains what was buffered, then finds the connection closed: not every
    // answer was sent. Without the bound the server would go on writing once we read, and
    // then keep the connection open.
    let mut answers = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(20), stream.read_to_end(&mut answers))
        .await
        .is_ok();
    assert!(closed, "the connection was kept open");
    let sent = String::from_utf8_lossy(&answers)
        .matches("HTTP/1.1 200")
        .count();
    assert!(sent < 400, "all {sent} answers were sent");
}

// 7. Requests hyper refuses before any handler sees them still answer the envelope.

#[tokio::test]
async fn requests_refused_below_the_router_answer_the_envelope() {
    let app = spawn_app_with(|_| {}).await;
    let long_uri = format!(
        "GET /workflow/{} HTTP/1.1\r\nhost: localhost\r\n\r\n",
        "a".repeat(70_000)
    );
    let huge_header = format!(
        "GET /health HTTP/1.1\r\nhost: localhost\r\nx-big: {}\r\n\r\n",
        "b".repeat(100_000)
    );
    let many_headers = format!(
        "GET /health HTTP/1.1\r\nhost: localhost\r\n{}\r\n",
        (0..100)
            .map(|n| format!("x-{n}: y\r\n"))
            .collect::<String>()
    );
    for (request, status, code) in [
        (long_uri.into_bytes(), 414, ErrorCode::UriTooLong),
        (huge_header.into_bytes(), 431, ErrorCode::HeadersTooLarge),
        (many_headers.into_bytes(), 431, ErrorCode::HeadersTooLarge),
        (
            b"GET /health HTTP/1.1\r\nhost: localhost\r\nno colon here\r\n\r\n".to_vec(),
            400,
            ErrorCode::BadRequest,
        ),
        (
            b"GET /health HTTP/1.1\r\nhost: localhost\r\nbad\x01name: y\r\n\r\n".to_vec(),
            400,
            ErrorCode::BadRequest,
        ),
    ] {
        let answer = raw(app.address, &request, Duration::from_secs(5)).await;
        let (got, body) = envelope(&answer);
        assert_eq!((got, body.error.code), (status, code), "{answer}");
        assert!(
            answer.contains("content-type: application/json"),
            "{answer}"
        );
    }
    // A large head below the bound is served.
    let large_header = format!(
        "GET /health HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\nx-big: {}\r\n\r\n",
        "b".repeat(60_000)
    );
    let answer = raw(app.address, large_header.as_bytes(), Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

/// After an HTTP/1.0 request on a kept-alive connection, hyper answers in HTTP/1.0; its own
/// refusal of a malformed request there is the envelope too.
#[tokio::test]
async fn a_malformed_request_after_an_http_1_0_one_answers_the_envelope() {
    let app = spawn_app_with(|_| {}).await;
    let requests = b"GET /health HTTP/1.0\r\nconnection: keep-alive\r\n\r\nGET /health HTTP/1.0\r\nno colon here\r\n\r\n";
    let answer = raw(app.address, requests, Duration::from_secs(5)).await;
    let second = answer
        .find("HTTP/1.0 400")
        .map(|at| &answer[at..])
        .unwrap_or_else(|| panic!("no 400 answer: {answer}"));
    let (status, body) = envelope(second);
    assert_eq!(
        (status, body.error.code),
        (400, ErrorCode::BadRequest),
        "{answer}"
    );
}

// 3 and 5. A full disk, a read-only mount, a held lock: 503, health says so, and it recovers.

/// A small tmpfs mounted for one test, unmounted when dropped.
struct Tmpfs {
    path: PathBuf,
    _dir: tempfile::TempDir,
}

impl Tmpfs {
    /// Mounts `size` of tmpfs, or `None` with a notice where this machine does not allow it.
    fn mount(size: &str) -> Option<Tmpfs> {
        let dir = tempfile::TempDir::new().unwrap();
        let path = dir.path().join("mnt");
        std::fs::create_dir(&path).unwrap();
        let mounted = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&path)
            .output();
        match mounted {
            Ok(output) if output.status.success() => Some(Tmpfs { path, _dir: dir }),
            other => {
                use std::io::Write;
                let _ = writeln!(
                    std::io::stderr(),
                    "note: disk fault test skipped: cannot mount a tmpfs here ({other:?})"
                );
                None
            }
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.path)
            .status();
    }
}

/// Fills the file system holding `dir` until a write fails; returns the filler's path.
fn fill(dir: &Path) -> PathBuf {
    use std::io::Write;
    let path = dir.join("filler");
    let mut file = std::fs::File::create(&path).unwrap();
    let block = vec![0u8; 64 * 1024];
    while file.write_all(&block).is_ok() {}
    let _ = file.sync_all();
    path
}

async fn health(app: &TestApp) -> (u16, serde_json::Value) {
    let response = reqwest::get(app.url("/health")).await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_disk_answers_503_health_says_unhealthy_and_it_recovers() {
    let Some(disk) = Tmpfs::mount("4m") else {
        return;
    };
    let file = disk.path.join("orchestrator.db");
    let app = spawn_app_with(|c| c.database_url = DatabaseUrl::SqliteFile(file)).await;
    app.start_workflow("full").await;
    let filler = fill(&disk.path);

    for trigger in ["agent_complete", "cancel"] {
        let err = app
            .client
            .advance_workflow(&id("full"), &crate::helpers::step(trigger))
            .await
            .unwrap_err();
        assert_eq!(
            err.code(),
            Some(ErrorCode::DatabaseUnavailable),
            "{trigger}: {err}"
        );
    }
    let err = app
        .client
        .start_workflow(&StartWorkflowRequest::new("other", "x"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::DatabaseUnavailable), "{err}");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (status, body) = health(&app).await;
    assert_eq!((status, body["status"].as_str()), (503, Some("unhealthy")));
    assert_eq!(body["checks"]["database"]["status"], "error");
    // Reads still work.
    assert_eq!(
        app.client.get_workflow(&id("full")).await.unwrap().version,
        1
    );

    std::fs::remove_file(filler).unwrap();
    let gate = app
        .client
        .advance_workflow(&id("full"), &AdvanceRequest::new("agent_complete"))
        .await
        .unwrap();
    assert_eq!(gate.version, 2);
    // Writes failed moments ago: health still says so, though its own probe succeeds now
    // (past the one-second cache), until the failure is WRITE_FAILURE_WINDOW old.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (status, body) = health(&app).await;
    assert_eq!((status, body["status"].as_str()), (503, Some("unhealthy")));
    let deadline = Instant::now() + storage::sqlite::WRITE_FAILURE_WINDOW + Duration::from_secs(5);
    while health(&app).await.0 != 200 {
        assert!(Instant::now() < deadline, "health did not recover");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_database_that_cannot_be_written_stops_start_up() {
    let Some(disk) = Tmpfs::mount("8m") else {
        return;
    };
    let file = disk.path.join("orchestrator.db");
    let mut app = spawn_app_with(|c| c.database_url = DatabaseUrl::SqliteFile(file.clone())).await;
    app.start_workflow("kept").await;
    app.stop().await;
    let remounted = std::process::Command::new("mount")
        .args(["-o", "remount,ro"])
        .arg(&disk.path)
        .status()
        .unwrap();
    assert!(remounted.success());
    let config = Config::for_tests(DatabaseUrl::SqliteFile(file));
    let err = build_app(&config).await.err().expect("start-up fails");
    let said = err.to_string();
    assert!(
        said.starts_with("the database cannot be written: ")
            && said.contains(&format!(
                "{} is on a read-only file system",
                disk.path.display()
            )),
        "the error says what is wrong: {err}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_lock_held_by_another_process_answers_503_not_500() {
    use diesel::Connection;
    use diesel::connection::SimpleConnection;
    let app = spawn_app_with(|_| {}).await;
    app.start_workflow("locked").await;
    let path = app.dir.path().join("orchestrator.db");
    let mut other = diesel::SqliteConnection::establish(path.to_str().unwrap()).unwrap();
    other.batch_execute("BEGIN IMMEDIATE").unwrap();
    let started = Instant::now();
    let err = app
        .client
        .advance_workflow(&id("locked"), &AdvanceRequest::new("agent_complete"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::DatabaseUnavailable), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );
    other.batch_execute("COMMIT").unwrap();
    let gate = app
        .client
        .advance_workflow(&id("locked"), &AdvanceRequest::new("agent_complete"))
        .await
        .unwrap();
    assert_eq!(gate.version, 2);
}

// 4. Control characters are refused alike on every back end.

async fn nul_is_refused_naming_the_field(app: &TestApp) {
    let start = StartWorkflowRequest::new("nul", "a\u{0}b");
    let err = app.client.start_workflow(&start).await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::ValidationError));
    assert!(format!("{err:?}").contains("description"), "{err:?}");
    app.start_workflow("nul").await;
    for (field, request) in [
        (
            "actor",
            AdvanceRequest {
                actor: Some("agent\u{0}".into()),
                ..AdvanceRequest::new("agent_complete")
            },
        ),
        (
            "reason",
            AdvanceRequest {
                reason: Some("because\u{0}".into()),
                ..AdvanceRequest::new("agent_complete")
            },
        ),
    ] {
        let err = app
            .client
            .advance_workflow(&id("nul"), &request)
            .await
            .unwrap_err();
        assert_eq!(err.code(), Some(ErrorCode::ValidationError), "{field}");
        assert!(format!("{err:?}").contains(field), "{err:?}");
    }
    let history = app.client.get_history(&id("nul")).await.unwrap();
    assert_eq!(history.transitions.len(), 1);
}

#[tokio::test]
async fn nul_is_refused_on_sqlite() {
    nul_is_refused_naming_the_field(&spawn_app_with(|_| {}).await).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn nul_is_refused_on_postgres() {
    let Some((_db, app)) = crate::postgres::app().await else {
        return;
    };
    nul_is_refused_naming_the_field(&app).await;
}

// 5 and 6. PostgreSQL connections terminated, cut or stalled.

/// What the proxy does with the bytes between the service and PostgreSQL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Forward them.
    Pass,
    /// Hold them: connections stay open, nothing moves.
    Stall,
    /// Close every connection and refuse new ones.
    Cut,
}

/// A TCP proxy in front of PostgreSQL that can stall or cut the connection.
struct Proxy {
    address: SocketAddr,
    mode: watch::Sender<Mode>,
}

impl Proxy {
    async fn start(upstream: String) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let (mode, watching) = watch::channel(Mode::Pass);
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                if *watching.borrow() == Mode::Cut {
                    continue;
                }
                let Ok(server) = TcpStream::connect(&upstream).await else {
                    continue;
                };
                let (client_read, client_write) = client.into_split();
                let (server_read, server_write) = server.into_split();
                tokio::spawn(pipe(client_read, server_write, watching.clone()));
                tokio::spawn(pipe(server_read, client_write, watching.clone()));
            }
        });
        Proxy { address, mode }
    }

    fn set(&self, mode: Mode) {
        self.mode.send_replace(mode);
    }
}

async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut mode: watch::Receiver<Mode>,
) {
    let mut buffer = vec![0u8; 16 * 1024];
    loop {
        let read = tokio::select! {
            read = from.read(&mut buffer) => read,
            _ = mode.wait_for(|m| *m == Mode::Cut) => return,
        };
        let Ok(n) = read else { return };
        if n == 0 {
            return;
        }
        match mode.wait_for(|m| *m != Mode::Stall).await.map(|m| *m) {
            Ok(Mode::Pass) => {}
            _ => return,
        }
        if to.write_all(&buffer[..n]).await.is_err() {
            return;
        }
    }
}

/// The database URL's `host:port`, and the URL with them replaced by `address`.
fn through(url: &str, address: SocketAddr) -> (String, String) {
    let (scheme, rest) = url.split_once("://").unwrap();
    let (user, rest) = rest.split_once('@').unwrap();
    let (host, path) = rest.split_once('/').unwrap();
    (
        host.to_owned(),
        format!("{scheme}://{user}@{address}/{path}"),
    )
}

/// Advances `feature` back and forth for `how_long`, collecting every status answered.
async fn churn(app: &TestApp, feature: &str, how_long: Duration) -> Vec<u16> {
    let deadline = Instant::now() + how_long;
    let mut statuses = Vec::new();
    let mut triggers = ["agent_complete", "human_rejected"].into_iter().cycle();
    while Instant::now() < deadline {
        let trigger = triggers.next().unwrap_or("agent_complete");
        let status = match app
            .client
            .advance_workflow(&id(feature), &crate::helpers::step(trigger))
            .await
        {
            Ok(_) => 200,
            Err(e) => e.status().map_or(0, |s| s.as_u16()),
        };
        statuses.push(status);
    }
    statuses
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn terminated_postgres_connections_answer_503_never_500_and_recover() {
    let Some((db, app)) = crate::postgres::app().await else {
        return;
    };
    for n in 0..4 {
        app.start_workflow(&format!("t-{n}")).await;
    }
    let name = db.url.rsplit('/').next().unwrap().to_owned();
    let admin_url = std::env::var(crate::postgres::VARIABLE).unwrap();
    let killer = tokio::spawn(async move {
        use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
        let mut admin = AsyncPgConnection::establish(&admin_url).await.unwrap();
        for _ in 0..8 {
            tokio::time::sleep(Duration::from_millis(300)).await;
            // What `pg_ctl restart -m fast` does to every session: SQLSTATE 57P01.
            diesel::sql_query(format!(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                 WHERE datname = '{name}' AND pid <> pg_backend_pid()"
            ))
            .execute(&mut admin)
            .await
            .unwrap();
        }
    });
    let window = Duration::from_secs(3);
    let (a, b, c, d) = tokio::join!(
        churn(&app, "t-0", window),
        churn(&app, "t-1", window),
        churn(&app, "t-2", window),
        churn(&app, "t-3", window),
    );
    let statuses: Vec<u16> = [a, b, c, d].concat();
    killer.await.unwrap();
    assert!(
        statuses.iter().all(|s| matches!(s, 200 | 409 | 503)),
        "unexpected statuses: {:?}",
        statuses
            .iter()
            .filter(|s| !matches!(s, 200 | 409 | 503))
            .collect::<Vec<_>>()
    );
    assert!(statuses.contains(&503), "no connection was ever lost");
    // Recovered: every workflow answers again.
    for n in 0..4 {
        app.client
            .get_workflow(&id(&format!("t-{n}")))
            .await
            .unwrap();
    }
    churn(&app, "t-0", Duration::from_millis(200))
        .await
        .iter()
        .for_each(|s| assert_ne!(*s, 503));
}

async fn app_behind_proxy() -> Option<(TestDatabase, Proxy, TestApp)> {
    app_behind_proxy_with(|_| {}).await
}

/// [`app_behind_proxy`], its configuration changed by `change` too.
async fn app_behind_proxy_with(
    change: impl FnOnce(&mut Config),
) -> Option<(TestDatabase, Proxy, TestApp)> {
    let db = TestDatabase::create().await?;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (upstream, _) = through(&db.url, listener.local_addr().unwrap());
    drop(listener);
    let proxy = Proxy::start(upstream).await;
    let (_, url) = through(&db.url, proxy.address);
    let app = spawn_app_with(|c| {
        c.database_url = DatabaseUrl::Postgres(url);
        change(c);
    })
    .await;
    Some((db, proxy, app))
}

/// A keyed request that outlives the request bound (its claim stalled in a stalled database)
/// is told that it may still be carried out, runs on once the database answers, and a retry
/// with its key gets its answer — never a second change.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_keyed_request_past_its_bound_runs_on_and_its_retry_gets_its_answer() {
    // The request bound: the consultation wait (0) + one hub call (1 s) + 5 s.
    let Some((_db, proxy, app)) = app_behind_proxy_with(|c| {
        c.request_timeout_seconds = 1;
        c.agent_hub_wait_seconds = 0;
        c.agent_hub_timeout_seconds = 1;
    })
    .await
    else {
        return;
    };
    app.start_workflow("late").await;
    let advance = || {
        reqwest::Client::new()
            .post(app.url("/workflow/late/advance"))
            .header("Idempotency-Key", "late-1")
            .json(&serde_json::json!({"trigger": "agent_complete"}))
            .send()
    };
    proxy.set(Mode::Stall);
    let late = advance().await.unwrap();
    proxy.set(Mode::Pass);
    assert_eq!(late.status(), 503);
    assert_eq!(late.headers()["retry-after"], "1");
    let body: ErrorEnvelope = late.json().await.unwrap();
    assert_eq!(body.error.code, ErrorCode::ServiceUnavailable);
    assert!(
        body.error.message.contains("same Idempotency-Key"),
        "{body:?}"
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let again = advance().await.unwrap();
        // The late request's kept answer (`Idempotent-Replayed`), or — should its stalled
        // claim have run out of time on a slow machine, and been released — the retry's own.
        if again.status() == 200 {
            break;
        }
        let body: ErrorEnvelope = again.json().await.unwrap();
        assert_eq!(body.error.code, ErrorCode::IdempotencyKeyInUse, "{body:?}");
        assert!(
            Instant::now() < deadline,
            "the late request's answer is kept"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        app.client.get_workflow(&id("late")).await.unwrap().version,
        2
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stalled_postgres_answers_503_within_a_bound_and_recovers() {
    let Some((_db, proxy, app)) = app_behind_proxy().await else {
        return;
    };
    app.start_workflow("stalled").await;
    let metrics = || async {
        let response = reqwest::get(app.url("/metrics")).await.unwrap();
        assert_eq!(response.status(), 200);
        response.text().await.unwrap()
    };
    let text = metrics().await;
    assert!(text.contains("orchestrator_store_readable 1"), "{text}");
    proxy.set(Mode::Stall);
    let started = Instant::now();
    let err = app.client.get_workflow(&id("stalled")).await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::DatabaseUnavailable), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );
    // A scrape renders without reading the workflows by state after 2 s, long before a query's own
    // bound (8 s), so a scraper's timeout never loses the storage's series that say why.
    let started = Instant::now();
    let text = metrics().await;
    assert!(text.contains("orchestrator_store_readable 0"), "{text}");
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "{:?}",
        started.elapsed()
    );
    proxy.set(Mode::Pass);
    let gate = app
        .client
        .advance_workflow(&id("stalled"), &AdvanceRequest::new("agent_complete"))
        .await
        .unwrap();
    assert_eq!(gate.version, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cut_postgres_answers_503_and_recovers_when_it_returns() {
    let Some((_db, proxy, app)) = app_behind_proxy().await else {
        return;
    };
    app.start_workflow("cut").await;
    proxy.set(Mode::Cut);
    tokio::time::sleep(Duration::from_millis(100)).await;
    for _ in 0..3 {
        let err = app
            .client
            .advance_workflow(&id("cut"), &AdvanceRequest::new("agent_complete"))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Some(ErrorCode::DatabaseUnavailable), "{err}");
    }
    let (status, body) = health(&app).await;
    assert_eq!((status, body["status"].as_str()), (503, Some("unhealthy")));
    proxy.set(Mode::Pass);
    let gate = app
        .client
        .advance_workflow(&id("cut"), &AdvanceRequest::new("agent_complete"))
        .await
        .unwrap();
    assert_eq!(gate.version, 2);
}

/// A cancel that commits while a consultation is being stored wins on PostgreSQL too: the
/// store reads the workflow's state under a share lock, so it waits for the cancel and then
/// refuses (without the lock it would read the old state and store the consultation).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cancel_committing_while_a_consultation_is_stored_wins_on_postgres() {
    use diesel_async::RunQueryDsl;
    use orchestrator_core::RepositoryError;
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let repository = Arc::new(storage::PgRepository::connect(&db.url, 4).await.unwrap());
    let (workflow, first) = crate::contract::new_workflow("raced");
    repository.create(&workflow, &first).await.unwrap();

    // Another session cancels the workflow and holds its transaction open.
    let mut other = crate::postgres::in_open_transaction(
        &db.url,
        "UPDATE workflows SET state = 'IDLE', version = 2 WHERE feature_id = 'raced'",
    )
    .await;
    let storing = {
        let repository = repository.clone();
        tokio::spawn(async move {
            repository
                .add_consultation(&crate::contract::consultation("raced", 1, false))
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !storing.is_finished(),
        "the store did not wait for the cancel"
    );
    diesel::sql_query("COMMIT")
        .execute(&mut other)
        .await
        .unwrap();
    let stored = storing.await.unwrap();
    assert!(
        matches!(stored, Err(RepositoryError::NotActive { .. })),
        "{stored:?}"
    );
    assert!(
        repository
            .consultations(&id("raced"))
            .await
            .unwrap()
            .is_empty()
    );
}
