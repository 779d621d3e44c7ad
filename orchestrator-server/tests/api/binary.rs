//! The `orchestrator-server` binary itself: configuration errors and graceful shutdown.

use std::process::{Command, Stdio};
use std::time::Duration;

use orchestrator_client::Client;
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
    ] {
        let output = server().env(name, value).output().expect("binary runs");
        assert!(!output.status.success(), "{name}={value} was accepted");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(stderr.trim_end().lines().count(), 1, "{name}: {stderr}");
        assert!(stderr.contains(name), "{name}: {stderr}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_drains_and_exits_zero() {
    let dir = TempDir::new().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = server()
        .env("HOST", "127.0.0.1")
        .env("PORT", port.to_string())
        .env(
            "DATABASE_URL",
            format!("sqlite:///{}/nested/dir/o.db", dir.path().display()),
        )
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let client = Client::new(format!("http://127.0.0.1:{port}")).unwrap();
    let mut healthy = false;
    for _ in 0..500 {
        if client.get_health().await.is_ok() {
            healthy = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(healthy, "server did not start");
    // The missing parent directories were created.
    assert!(dir.path().join("nested/dir/o.db").exists());

    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let mut exit = None;
    for _ in 0..500 {
        if let Some(status) = child.try_wait().unwrap() {
            exit = Some(status);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let exit = exit.expect("server did not stop after SIGTERM");
    assert!(exit.success(), "exit status {exit}");
}
