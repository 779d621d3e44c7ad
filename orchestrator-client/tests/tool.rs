//! The `orchestrator` tool run as a user runs it: a process, with its environment and
//! signals, against stand-ins for the server.

use std::process::{Command, Output, Stdio};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A stand-in server answering every request with `answer` (none: it reads the request and
/// never answers); each request's arrival is told on the channel.
async fn stand_in(answer: Option<String>) -> (String, tokio::sync::mpsc::UnboundedReceiver<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (arrived, arrivals) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((mut stream, _)) = listener.accept().await {
            let mut request = [0u8; 4096];
            let _ = stream.read(&mut request).await;
            let _ = arrived.send(());
            match &answer {
                Some(answer) => {
                    let _ = stream.write_all(answer.as_bytes()).await;
                }
                None => held.push(stream),
            }
        }
    });
    (url, arrivals)
}

/// An answer of `status` with this content type and body.
fn answer(status: &str, content_type: &str, body: &str) -> String {
    format!(
        "HTTP/1.1 {status}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
}

/// The tool run with `args` to its end.
async fn tool(args: &[&str]) -> Output {
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_orchestrator"))
            .env_clear()
            .args(args)
            .output()
            .unwrap()
    })
    .await
    .unwrap()
}

/// `metrics` prints the server's metrics text, and refuses a page that stood in for it (a
/// proxy's sign-in page) as it does for every other command: exit 3, not the page as metrics.
#[tokio::test(flavor = "multi_thread")]
async fn metrics_are_printed_and_a_page_in_their_place_is_refused() {
    let metrics = "# TYPE orchestrator_up gauge\norchestrator_up 1\n# EOF\n";
    let (url, _) = stand_in(Some(answer(
        "200 OK",
        "application/openmetrics-text; version=1.0.0; charset=utf-8",
        metrics,
    )))
    .await;
    let output = tool(&["--url", &url, "metrics"]).await;
    assert!(output.status.success(), "{output:?}");
    assert_eq!(String::from_utf8_lossy(&output.stdout), metrics);

    let (url, _) = stand_in(Some(answer(
        "200 OK",
        "text/html",
        "<html>Sign in to the proxy</html>",
    )))
    .await;
    let output = tool(&["--url", &url, "metrics"]).await;
    assert_eq!(output.status.code(), Some(3), "{output:?}");
    assert!(output.stdout.is_empty(), "{output:?}");
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("Sign in to the proxy"),
        "{output:?}"
    );
}

/// The tool run with `args` against a server that takes the request and never answers,
/// sent `signal` (as `kill` names it) once the request arrived: how it ended.
#[cfg(unix)]
async fn stopped(args: &[&str], signal: &str) -> Output {
    let (url, mut arrivals) = stand_in(None).await;
    let child = Command::new(env!("CARGO_BIN_EXE_orchestrator"))
        .env_clear()
        .args(["--url", &url])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    arrivals
        .recv()
        .await
        .expect("the request reaches the server");
    let killed = Command::new("kill")
        .args([signal, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let pid = child.id().to_string();
    let ended = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap());
    match tokio::time::timeout(std::time::Duration::from_secs(30), ended).await {
        Ok(output) => output.unwrap(),
        Err(_) => {
            let _ = Command::new("kill").args(["-KILL", &pid]).status();
            panic!("the tool did not end on {signal} within 30 s");
        }
    }
}

/// A write stopped by Ctrl-C (or SIGTERM) before its answer came may have been made: the
/// tool says the key that has it made once, then ends by the signal, as if it had not caught
/// it (so a shell loop running it stops).
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread")]
async fn a_write_stopped_before_its_answer_tells_its_key() {
    use std::os::unix::process::ExitStatusExt;
    for (signal, number) in [("-INT", 2), ("-TERM", 15)] {
        let output = stopped(&["start", "042-payment-retries", "Retry payments"], signal).await;
        let stderr = String::from_utf8_lossy(&output.stderr);
        // Ended by the signal itself: a shell's 130, 143.
        assert_eq!(output.status.signal(), Some(number), "{signal}: {stderr}");
        assert!(
            stderr.contains("run the command again with --idempotency-key cli-"),
            "{signal}: {stderr}"
        );
    }
    // A read stopped so has nothing to tell: the signal ends it as it ends any program. (By
    // SIGTERM: a shell without job control starts its background commands with SIGINT
    // ignored, as this test may be run, and the tool leaves a read's signals as it found them.)
    let output = stopped(&["list"], "-TERM").await;
    assert_eq!(output.status.signal(), Some(15), "{output:?}");
    assert!(output.stderr.is_empty(), "{output:?}");
}

/// A proxy set for the machine (as `HTTP_PROXY` often is behind a corporate network) is not
/// asked for a server on this machine: no proxy stands between a program and its own host.
#[tokio::test(flavor = "multi_thread")]
async fn a_server_on_this_machine_is_reached_past_the_proxy_settings() {
    let body = r#"{"status":"healthy","version":"0.0.0","service":"orchestrator","uptime_seconds":1,"checks":{}}"#;
    let (url, _) = stand_in(Some(answer("200 OK", "application/json", body))).await;
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
