//! The `orchestrator` tool run as a user runs it, with proxy settings in the environment.

use std::process::Command;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A proxy set for the machine (as `HTTP_PROXY` often is behind a corporate network) is not
/// asked for a server on this machine: no proxy stands between a program and its own host.
#[tokio::test(flavor = "multi_thread")]
async fn a_server_on_this_machine_is_reached_past_the_proxy_settings() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let body = r#"{"status":"healthy","version":"0.0.0","service":"orchestrator","uptime_seconds":1,"checks":{}}"#;
        while let Ok((mut stream, _)) = listener.accept().await {
            let mut request = [0u8; 4096];
            let _ = stream.read(&mut request).await;
            let answer = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(answer.as_bytes()).await;
        }
    });
    // The discard port: nothing listens there, so a request sent to this proxy fails.
    let proxy = "http://127.0.0.1:9";
    for server in [url.clone(), url.replace("127.0.0.1", "localhost")] {
        let output = tokio::task::spawn_blocking(move || {
            Command::new(env!("CARGO_BIN_EXE_orchestrator"))
                .env_clear()
                .env("HTTP_PROXY", proxy)
                .env("http_proxy", proxy)
                .env("ALL_PROXY", proxy)
                .args(["--url", &server, "health"])
                .output()
                .unwrap()
        })
        .await
        .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "{stderr}");
        assert!(
            String::from_utf8_lossy(&output.stdout).contains("healthy"),
            "{stderr}"
        );
    }
}
