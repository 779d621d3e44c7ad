//! The `orchestrator-server` binary itself: configuration errors and graceful shutdown.

use std::process::{Command, Stdio};
use std::time::Duration;

use orchestrator_client::Client;
use orchestrator_core::api::CreateWebhookRequest;
use tempfile::TempDir;

use crate::helpers::server_binary as server;

#[test]
fn a_bad_setting_stops_start_up_with_one_line_naming_the_variable() {
    for (name, value) in [
        ("PORT", "eighty"),
        ("DATABASE_URL", "mysql://db"),
        ("AGENT_HUB_TIMEOUT_SECONDS", "-1"),
        ("LOG_FORMAT", "xml"),
        ("HOST", "not-an-ip"),
        ("WEBHOOK_RETRY_SCHEDULE", "5s,soon"),
        ("WEBHOOK_ALLOW_PRIVATE_NETWORKS", "yes"),
        ("RUST_LOG", "warning"),
        ("RUST_LOG", ""),
        ("DATABASE_URL", "sqlite:///x.db?mode=ro"),
        ("DATABASE_URL", "sqlite:///x.db "),
        ("DATABASE_URL", "postgres://u:secret@127.0.0.1:99999/x"),
        (
            "DATABASE_URL",
            "postgres://u:secret@127.0.0.1/x?connect_timeout=abc",
        ),
        ("DATABASE_URL", "postgres://u:secret@127.0.0.1/x?bogus=1"),
        ("DATABASE_URL", "postgres://"),
        (
            "DATABASE_URL",
            "postgres://u:secret@127.0.0.1/x?sslmode=require",
        ),
    ] {
        let output = server().env(name, value).output().expect("binary runs");
        assert_eq!(output.status.code(), Some(2), "{name}={value}: {output:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(stderr.trim_end().lines().count(), 1, "{name}: {stderr}");
        assert!(stderr.contains(name), "{name}: {stderr}");
        assert!(!stderr.contains("secret"), "{name}: {stderr}");
    }
}

/// A command missing an argument says which, on its one line.
#[test]
fn a_missing_argument_is_named_on_the_one_line() {
    let output = server()
        .args([
            "principal",
            "add",
            "--file",
            "never.toml",
            "--name",
            "y",
            "--kind",
            "human",
        ])
        .output()
        .expect("binary runs");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("--role"), "{stderr}");
}

/// A task reads no server setting: a bad one the shell exports for the server does not stop
/// `principal add`.
#[test]
fn a_task_ignores_the_servers_settings() {
    let dir = TempDir::new().unwrap();
    let file = dir.path().join("principals.toml");
    let output = server()
        .env("PORT", "eighty")
        .env(
            "ORCHESTRATOR_API_TOKEN",
            "a-shared-token-beside-the-principals-file",
        )
        .env("ORCHESTRATOR_PRINCIPALS_FILE", &file)
        .args(["principal", "add", "--file"])
        .arg(&file)
        .args(["--name", "alice", "--kind", "human", "--role", "reviewer"])
        .output()
        .expect("binary runs");
    assert!(output.status.success(), "{output:?}");
    assert!(std::fs::read_to_string(&file).unwrap().contains("alice"));
}

/// `principal` without what to do shows its commands (exit 2), not its title alone.
#[test]
fn a_command_without_its_subcommand_shows_its_usage() {
    let output = server().arg("principal").output().expect("binary runs");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    for shown in ["Usage: orchestrator-server principal", "add", "remove"] {
        assert!(stderr.contains(shown), "{shown}: {stderr}");
    }
}

/// A database URL may hold a password: neither `--help` nor a refusal prints it.
#[test]
fn the_database_url_is_never_printed() {
    let help = server()
        .arg("--help")
        .env("DATABASE_URL", "postgres://app:s3cret@db/app")
        .output()
        .expect("binary runs");
    assert!(help.status.success());
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(
        help.contains("DATABASE_URL") && !help.contains("s3cret"),
        "{help}"
    );

    for (url, why) in [
        ("Postgres+tls://app:s3cret@db/app", "expected"),
        // Said why, and still not shown.
        (" postgres://app:s3cret@db/app", "no space or line end"),
        ("sqlite:///x.db?mode=ro&key=s3cret", "takes no parameters"),
    ] {
        let refused = server()
            .env("DATABASE_URL", url)
            .output()
            .expect("binary runs");
        assert_eq!(refused.status.code(), Some(2));
        let stderr = String::from_utf8_lossy(&refused.stderr);
        assert!(
            stderr.contains("DATABASE_URL") && stderr.contains(why) && !stderr.contains("s3cret"),
            "{stderr}"
        );
    }
}

/// `.env.sample` names every setting `--help` lists, and the values it sets are the defaults.
#[test]
fn the_sample_environment_file_lists_every_setting_at_its_default() {
    let help = server().arg("--help").output().expect("binary runs");
    let help = String::from_utf8(help.stdout).unwrap();
    // `[env: NAME=]`, then `[default: value]` on the next line for a setting that has one.
    let lines: Vec<&str> = help.lines().map(str::trim).collect();
    let settings: Vec<(&str, Option<&str>)> = lines
        .iter()
        .enumerate()
        .filter_map(|(i, line)| {
            let name = line.strip_prefix("[env: ")?.split(['=', ']']).next()?;
            let default = lines
                .get(i + 1)
                .and_then(|next| next.strip_prefix("[default: "))
                .and_then(|rest| rest.strip_suffix(']'));
            Some((name, default))
        })
        .collect();
    assert!(settings.len() > 20, "{settings:?}");

    let sample = include_str!("../../../.env.sample");
    let sample: Vec<(bool, &str, &str)> = sample
        .lines()
        .filter_map(|line| {
            let (set, line) = match line.strip_prefix("# ") {
                Some(commented) => (false, commented),
                None => (true, line),
            };
            let (name, value) = line.split_once('=')?;
            let setting = name.chars().all(|c| c.is_ascii_uppercase() || c == '_');
            setting.then_some((set, name, value))
        })
        .collect();
    for (name, default) in &settings {
        let Some((set, _, value)) = sample.iter().find(|(_, n, _)| n == name) else {
            panic!("{name} is missing from .env.sample");
        };
        match default {
            Some(default) => assert!(
                *set && value == default,
                "{name}={value}: --help says {default}"
            ),
            None => assert!(
                !set,
                "{name} has no default: .env.sample shows it commented out"
            ),
        }
    }
    for (_, name, _) in &sample {
        assert!(
            settings.iter().any(|(n, _)| n == name),
            "{name} is not a setting"
        );
    }
}

#[test]
fn a_principals_file_that_cannot_be_used_stops_start_up_like_a_bad_setting() {
    let dir = TempDir::new().unwrap();
    let malformed = dir.path().join("malformed.toml");
    std::fs::write(&malformed, "[[principal]]\nname = 'alice'\n").unwrap();
    let missing = dir.path().join("missing.toml");
    let database = dir.path().join("never-created.db");
    for file in [&missing, &malformed] {
        let output = server()
            .env("ORCHESTRATOR_PRINCIPALS_FILE", file)
            .env("DATABASE_URL", format!("sqlite:///{}", database.display()))
            .output()
            .expect("binary runs");
        assert_eq!(output.status.code(), Some(2), "{file:?}: {output:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
        assert!(stderr.contains("ORCHESTRATOR_PRINCIPALS_FILE"), "{stderr}");
        assert!(stderr.contains(&*file.to_string_lossy()), "{stderr}");
    }
    assert!(
        !database.exists(),
        "the file was read before the database was opened"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_drains_and_exits_zero() {
    let dir = TempDir::new().unwrap();
    let port = crate::helpers::free_port();
    let url = format!("sqlite:///{}/nested/dir/o.db", dir.path().display());
    let mut child = crate::helpers::server_on(port, &url).spawn().unwrap();
    let client = Client::new(format!("http://127.0.0.1:{port}")).unwrap();
    crate::helpers::wait_healthy(&client).await;
    // The missing parent directories were created, for the server's user alone, as were
    // the database's files: they hold the webhooks' secrets.
    assert!(dir.path().join("nested/dir/o.db").exists());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = |path: &str| {
            let metadata = std::fs::metadata(dir.path().join(path)).unwrap();
            metadata.permissions().mode() & 0o777
        };
        assert_eq!(mode("nested"), 0o700);
        assert_eq!(mode("nested/dir"), 0o700);
        for file in ["o.db", "o.db-wal", "o.db-shm"] {
            assert_eq!(mode(&format!("nested/dir/{file}")), 0o600, "{file}");
        }
    }

    signal(&child, "TERM");
    let exit = exited_within(&mut child, 10, "server did not stop after SIGTERM").await;
    assert!(exit.success(), "exit status {exit}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_server_on_the_same_sqlite_file_stops_before_opening_it() {
    let dir = TempDir::new().unwrap();
    let url = format!("sqlite:///{}/shared.db", dir.path().display());
    let port = crate::helpers::free_port();
    // The server on `port` (0: any) and the shared file, its stderr piped or dropped.
    let launch = |port: u16, stderr: Stdio| {
        crate::helpers::server_on(port, &url)
            .stderr(stderr)
            .spawn()
            .unwrap()
    };
    let mut first = launch(port, Stdio::null());
    let client = Client::new(format!("http://127.0.0.1:{port}")).unwrap();
    crate::helpers::wait_healthy(&client).await;

    // Another port, the same file: one line, exit 2, and the first server serves on.
    let mut second = launch(0, Stdio::piped());
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while second.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            second.kill().unwrap();
            panic!("a second server on the same file kept running");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let second = second.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert_eq!(second.status.code(), Some(2), "{stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("in use by another orchestrator-server"),
        "{stderr}"
    );
    assert!(client.get_health().await.is_ok());

    // Once the first has stopped, the file is free again.
    first.kill().unwrap();
    first.wait().unwrap();
    let mut third = launch(port, Stdio::null());
    crate::helpers::wait_healthy(&client).await;
    third.kill().unwrap();
    third.wait().unwrap();
}

/// The store opened by a library that embeds it (no binary in front) makes its directories
/// and files for this user alone too.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread")]
async fn an_embedded_sqlite_store_makes_its_files_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = TempDir::new().unwrap();
    let store =
        orchestrator_server::storage::SqliteRepository::open(dir.path().join("a/b/o.db"), 1)
            .await
            .unwrap();
    drop(store);
    let mode = |path: &str| {
        let metadata = std::fs::metadata(dir.path().join(path)).unwrap();
        metadata.permissions().mode() & 0o777
    };
    assert_eq!((mode("a"), mode("a/b")), (0o700, 0o700));
    assert_eq!(mode("a/b/o.db"), 0o600);
}

/// A store an embedder drops without closing it (at the end of its scope) may be opened again
/// at once: the drop waits for its writer's final checkpoint, which held the file locked for a
/// moment (a reopen then failed as "cannot be written: database is locked", most times).
#[tokio::test(flavor = "multi_thread")]
async fn a_dropped_sqlite_store_may_be_opened_again_at_once() {
    use orchestrator_core::WorkflowRepository;
    use orchestrator_server::storage::SqliteRepository;
    let dir = TempDir::new().unwrap();
    let file = dir.path().join("o.db");
    for n in 0..10 {
        let store = SqliteRepository::open(&file, 1)
            .await
            .unwrap_or_else(|e| panic!("opening it again, time {n}: {e}"));
        let (workflow, first) = crate::contract::new_workflow(&format!("f-{n}"));
        store.create(&workflow, &first).await.unwrap();
        drop(store);
    }
    let store = SqliteRepository::open(&file, 1).await.unwrap();
    for n in 0..10 {
        store
            .get(&crate::helpers::id(&format!("f-{n}")))
            .await
            .unwrap();
    }
}

/// A database a newer build migrated (a version this build does not have) is served all the
/// same, as the replicas of a rolling upgrade must be, and the log says so, naming it.
#[tokio::test(flavor = "multi_thread")]
async fn a_database_a_newer_build_migrated_is_served_with_a_warning() {
    use diesel::Connection;
    use diesel::connection::SimpleConnection;
    let dir = TempDir::new().unwrap();
    let file = dir.path().join("o.db");
    let port = crate::helpers::free_port();
    let client = Client::new(format!("http://127.0.0.1:{port}")).unwrap();
    // The log of one run on the file, until it is healthy.
    let run = || async {
        let mut child = crate::helpers::sqlite_server(&file, port)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        crate::helpers::wait_healthy(&client).await;
        signal(&child, "TERM");
        exited_within(&mut child, 10, "server did not stop after SIGTERM").await;
        let output = child.wait_with_output().unwrap();
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    let first = run().await;
    assert!(!first.contains("newer build"), "{first}");

    let mut conn = diesel::SqliteConnection::establish(file.to_str().unwrap()).unwrap();
    conn.batch_execute(
        "INSERT INTO __diesel_schema_migrations (version) VALUES ('29991231000000')",
    )
    .unwrap();
    drop(conn);
    let second = run().await;
    let warning = second
        .lines()
        .find(|line| line.contains("newer build"))
        .unwrap_or_else(|| panic!("no warning: {second}"));
    assert!(
        warning.contains("\"versions\":\"29991231000000\""),
        "{warning}"
    );
    assert!(warning.contains("\"level\":\"WARN\""), "{warning}");
}

/// A webhook made while private networks were allowed, whose target is a loopback address, is
/// named at start-up once they are not: its every delivery now fails.
#[tokio::test(flavor = "multi_thread")]
async fn a_webhook_private_networks_no_longer_reach_is_named_at_start_up() {
    let dir = TempDir::new().unwrap();
    let file = dir.path().join("o.db");
    let port = crate::helpers::free_port();
    let client = Client::new(format!("http://127.0.0.1:{port}")).unwrap();
    let (file, client) = (&file, &client);
    let run = |allow_private: bool| async move {
        let mut command = crate::helpers::sqlite_server(file, port);
        if allow_private {
            command.env("WEBHOOK_ALLOW_PRIVATE_NETWORKS", "true");
        }
        let mut child = command.stdout(Stdio::piped()).spawn().unwrap();
        crate::helpers::wait_healthy(client).await;
        let made = if allow_private {
            let request = CreateWebhookRequest {
                url: "http://127.0.0.1:9/hook".to_owned(),
                event_types: None,
                description: None,
            };
            Some(client.create_webhook(&request).await.unwrap().webhook.id)
        } else {
            None
        };
        signal(&child, "TERM");
        exited_within(&mut child, 10, "server did not stop after SIGTERM").await;
        let output = child.wait_with_output().unwrap();
        (made, String::from_utf8_lossy(&output.stdout).into_owned())
    };
    let (made, first) = run(true).await;
    assert!(!first.contains("a webhook's target"), "{first}");
    let (_, second) = run(false).await;
    let warning = second
        .lines()
        .find(|line| line.contains("a webhook's target"))
        .unwrap_or_else(|| panic!("no warning: {second}"));
    let warning: serde_json::Value = serde_json::from_str(warning).unwrap();
    assert_eq!(warning["webhook"], made.unwrap().as_str(), "{warning}");
    assert_eq!(warning["address"], "127.0.0.1", "{warning}");
    assert_eq!(warning["level"], "WARN", "{warning}");
}

/// How `child` exited, waiting up to `seconds`; past them it is killed (not left running) and
/// the test fails, saying `what` did not happen.
async fn exited_within(
    child: &mut std::process::Child,
    seconds: u64,
    what: &str,
) -> std::process::ExitStatus {
    let deadline = std::time::Instant::now() + Duration::from_secs(seconds);
    while std::time::Instant::now() < deadline {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = child.kill();
    panic!("{what}");
}

fn signal(child: &std::process::Child, name: &str) {
    let status = Command::new("kill")
        .args([&format!("-{name}"), &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// A stop asked for while start-up waits (here: for another replica's migration, which may
/// take as long as it takes) ends the process at once, exit 0, instead of being ignored until
/// start-up ends (or, as a container's PID 1, for good).
#[tokio::test(flavor = "multi_thread")]
async fn sigterm_during_start_up_stops_it() {
    let Some(db) = crate::postgres::TestDatabase::create().await else {
        return;
    };
    let _other = crate::postgres::migrating(&db.url).await;
    let dir = TempDir::new().unwrap();
    let log = dir.path().join("server.log");
    let mut child = crate::helpers::server_on(0, &db.url)
        .env("RUST_LOG", "info")
        .stdout(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    // It says what it waits for (its port opens only afterwards).
    let said = |line: &str| {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains(line)
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !said("waiting for another server's migrations") {
        assert!(
            std::time::Instant::now() < deadline,
            "the wait for the lock was not logged"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(child.try_wait().unwrap().is_none(), "it waits for the lock");
    signal(&child, "TERM");
    let exit = exited_within(
        &mut child,
        10,
        "a server starting up did not stop on SIGTERM",
    )
    .await;
    assert!(exit.success(), "exit status {exit}");
    // Its last line was written before it exited.
    assert!(said("stopped during start-up"));
}

/// A second stop signal while the server drains a request that keeps it waiting: it exits at
/// once, 130, instead of finishing the drain.
#[tokio::test(flavor = "multi_thread")]
async fn a_second_signal_ends_the_drain() {
    let dir = TempDir::new().unwrap();
    let port = crate::helpers::free_port();
    let url = format!("sqlite:///{}/o.db", dir.path().display());
    let mut child = crate::helpers::server_on(port, &url).spawn().unwrap();
    let client = Client::new(format!("http://127.0.0.1:{port}")).unwrap();
    crate::helpers::wait_healthy(&client).await;
    // A request whose body never comes keeps its connection open: the drain waits for it
    // (until BODY_TIMEOUT_SECONDS, 10 s).
    let mut held = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    tokio::io::AsyncWriteExt::write_all(
        &mut held,
        b"POST /workflow/start HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{",
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    signal(&child, "TERM");
    // One within a second is the same stop (a terminal's Ctrl-C and a wrapper's SIGTERM).
    tokio::time::sleep(Duration::from_millis(200)).await;
    signal(&child, "INT");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(child.try_wait().unwrap().is_none(), "it drains the request");
    signal(&child, "INT");
    let exit = exited_within(&mut child, 5, "a second signal did not end the drain").await;
    assert_eq!(exit.code(), Some(130), "exit status {exit}");
    drop(held);
}

/// Proxy settings in the environment do not come between the server and an Agent Hub on the
/// same machine (reqwest would send even a loopback call to the proxy).
#[tokio::test(flavor = "multi_thread")]
async fn a_hub_on_this_machine_is_reached_past_the_proxy_settings() {
    let hub =
        crate::helpers::stub_server(|_| (200, "", r#"{"status":"healthy","version":"9"}"#)).await;
    let dir = TempDir::new().unwrap();
    let port = crate::helpers::free_port();
    // The discard port: nothing listens there, so a call sent to this proxy fails.
    let proxy = crate::helpers::dead_url();
    let mut child = crate::helpers::sqlite_server(&dir.path().join("o.db"), port)
        .env("AGENT_HUB_URL", &hub)
        .env("HTTP_PROXY", &proxy)
        .env("http_proxy", &proxy)
        .env("ALL_PROXY", &proxy)
        .spawn()
        .unwrap();
    let client = Client::new(format!("http://127.0.0.1:{port}")).unwrap();
    crate::helpers::wait_healthy(&client).await;
    let health = client.get_health().await.unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    let hub = &health.checks["agent_hub"];
    assert_eq!(hub.status, "ok", "{:?}", hub.message);
}

/// The server raises its soft open-file limit to the hard one: started with a soft 512 (below
/// `MAX_CONNECTIONS`' 1024), it runs with the hard limit.
#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread")]
async fn the_open_file_limit_is_raised_to_the_hard_one() {
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap();
    let open_files = |limits: &str| -> (String, String) {
        let line = limits
            .lines()
            .find(|line| line.starts_with("Max open files"))
            .unwrap()
            .to_owned();
        let mut fields = line.split_whitespace().skip(3);
        (
            fields.next().unwrap().to_owned(),
            fields.next().unwrap().to_owned(),
        )
    };
    let (_, hard) = open_files(&limits);
    if hard.parse::<u64>().is_ok_and(|hard| hard <= 512) {
        return; // Nothing to raise to.
    }
    let dir = TempDir::new().unwrap();
    let port = crate::helpers::free_port();
    let database = format!("sqlite:///{}", dir.path().join("o.db").display());
    let mut child = std::process::Command::new("/bin/sh")
        .args(["-c", "ulimit -Sn 512 && exec \"$0\""])
        .arg(env!("CARGO_BIN_EXE_orchestrator-server"))
        .env_clear()
        .env("RUST_LOG", "warn")
        .env("HOST", "127.0.0.1")
        .env("PORT", port.to_string())
        .env("DATABASE_URL", database)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let client = Client::new(format!("http://127.0.0.1:{port}")).unwrap();
    crate::helpers::wait_healthy(&client).await;
    let theirs = std::fs::read_to_string(format!("/proc/{}/limits", child.id()));
    child.kill().unwrap();
    child.wait().unwrap();
    let (soft, raised_hard) = open_files(&theirs.unwrap());
    assert_eq!(
        (soft.as_str(), raised_hard.as_str()),
        (hard.as_str(), hard.as_str())
    );
}

/// Whatever reads the server's standard output may stop reading (a stuck log shipper): the
/// log waits in its queue, never a request. Before, the 64 KiB pipe filled after about 250
/// answered requests' lines and every request that logged stalled, `/health` included.
#[tokio::test(flavor = "multi_thread")]
async fn a_log_reader_that_stops_reading_holds_up_no_request() {
    use std::io::Read;

    let port = crate::helpers::free_port();
    let mut child = crate::helpers::server_on(port, "sqlite::memory:")
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let output = child.stdout.take().unwrap();
    let client = Client::new(format!("http://127.0.0.1:{port}")).unwrap();
    crate::helpers::wait_healthy(&client).await;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    for n in 0..1_000 {
        let health = http
            .get(format!("http://127.0.0.1:{port}/health"))
            .send()
            .await
            .unwrap_or_else(|e| panic!("request {n}: {e}"));
        assert_eq!(health.status(), reqwest::StatusCode::OK, "request {n}");
    }

    // Read again, the output has every line, up to the last one of the stop.
    signal(&child, "TERM");
    let log = std::thread::spawn(move || {
        let mut text = String::new();
        let mut output = output;
        output.read_to_string(&mut text).map(|_| text)
    });
    let exit = exited_within(&mut child, 20, "server did not stop after SIGTERM").await;
    assert!(exit.success(), "exit status {exit}");
    let log = log.join().unwrap().unwrap();
    assert!(
        log.matches("\"answered\"").count() >= 1_000,
        "{} lines",
        log.lines().count()
    );
    // Each request's lines name who called.
    let answered = log
        .lines()
        .find(|line| line.contains("\"answered\""))
        .unwrap();
    assert!(answered.contains("\"peer\":\"127.0.0.1:"), "{answered}");
    assert!(
        log.trim_end()
            .lines()
            .last()
            .is_some_and(|line| line.contains("\"stopped\"")),
        "{}",
        log.lines().last().unwrap_or_default()
    );
}
