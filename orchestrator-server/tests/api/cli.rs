//! The `orchestrator` command-line tool against a live server: what it prints, and its exit
//! codes.

use std::process::ExitCode;

use clap::Parser;
use orchestrator_client::cli::{Cli, run, run_with_input};
use serde_json::Value;

use crate::helpers::{TestApp, dead_url, spawn_app, spawn_app_with, stub_server};

/// Runs the tool with `args` against `url`: exit code, stdout, stderr.
async fn orchestrator(url: &str, args: &[&str]) -> (ExitCode, String, String) {
    let head = ["orchestrator", "--url", url];
    let cli = Cli::try_parse_from(head.iter().chain(args)).expect("arguments parse");
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let code = run(cli, &mut out, &mut err).await;
    (
        code,
        String::from_utf8(out).unwrap(),
        String::from_utf8(err).unwrap(),
    )
}

async fn ok(app: &TestApp, args: &[&str]) -> Value {
    let (code, out, err) = orchestrator(&app.url(""), args).await;
    assert_eq!(code, ExitCode::SUCCESS, "{args:?}: {err}");
    serde_json::from_str(&out).expect("JSON on stdout")
}

/// Runs the tool with `args` against `app`, `input` as its standard input: exit code, stdout,
/// stderr.
async fn with_input(
    app: &TestApp,
    args: &[&str],
    input: impl std::io::Read,
) -> (ExitCode, String, String) {
    let head = ["orchestrator", "--url", &app.url("")];
    let cli = Cli::try_parse_from(head.iter().copied().chain(args.iter().copied()))
        .expect("arguments parse");
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let code = run_with_input(cli, input, &mut out, &mut err).await;
    (
        code,
        String::from_utf8(out).unwrap(),
        String::from_utf8(err).unwrap(),
    )
}

/// A long text (a description, a reason, metadata) given as `-` is read from standard input,
/// its last line end dropped; one per run; standard input is read only then.
#[tokio::test(flavor = "multi_thread")]
async fn a_text_given_as_a_dash_is_read_from_standard_input() {
    /// Standard input that fails when read.
    struct Unreadable;
    impl std::io::Read for Unreadable {
        fn read(&mut self, _: &mut [u8]) -> std::io::Result<usize> {
            Err(std::io::Error::other("standard input was read"))
        }
    }
    let app = spawn_app().await;
    let (code, out, err) = with_input(
        &app,
        &["start", "from-stdin", "-"],
        &b"A feature described\nover two lines\r\n"[..],
    )
    .await;
    assert_eq!(code, ExitCode::SUCCESS, "{err}");
    let started: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        started["description"],
        "A feature described\nover two lines"
    );
    ok(
        &app,
        &["advance", "from-stdin", "agent_complete", "--actor", "bot"],
    )
    .await;

    // Two dashes: refused before anything is sent, standard input unread.
    let (code, _, err) = with_input(
        &app,
        &["reject", "from-stdin", "--reason", "-", "--metadata", "-"],
        Unreadable,
    )
    .await;
    assert_eq!(code, ExitCode::from(2));
    assert!(
        err.contains("--reason and --metadata are both `-`"),
        "{err}"
    );
    // No dash: standard input is left alone.
    let (code, _, err) = with_input(&app, &["get", "from-stdin"], Unreadable).await;
    assert_eq!(code, ExitCode::SUCCESS, "{err}");

    // Only the last line end is dropped: a blank line before it is the text's.
    let notes = "Retries must back off.\n\n- exponential\n- capped at a minute\n\n";
    let (code, out, err) = with_input(
        &app,
        &["reject", "from-stdin", "--reason", "-", "--actor", "alice"],
        notes.as_bytes(),
    )
    .await;
    assert_eq!(code, ExitCode::SUCCESS, "{err}");
    let rejected: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(rejected["state"], "PHASE_1");
    // The history: start, agent_complete, and this rejection.
    let history = ok(&app, &["history", "from-stdin"]).await;
    assert_eq!(
        history["transitions"][2]["reason"],
        notes.strip_suffix('\n').unwrap()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn every_command_prints_the_answer_as_json() {
    let app = spawn_app().await;
    let started = ok(
        &app,
        &[
            "start",
            "cli-1",
            "from the command line",
            "--metadata",
            r#"{"team":"cli"}"#,
        ],
    )
    .await;
    assert_eq!(
        (started["state"].as_str(), started["version"].as_u64()),
        (Some("PHASE_1"), Some(1))
    );
    assert_eq!(started["metadata"]["team"], "cli");

    let moved = ok(
        &app,
        &[
            "advance",
            "cli-1",
            "agent_complete",
            "--actor",
            "me",
            "--expected-version",
            "1",
        ],
    )
    .await;
    assert_eq!(moved["state"], "GATE_1");
    assert_eq!(ok(&app, &["get", "cli-1"]).await["version"], 2);
    assert_eq!(
        ok(&app, &["history", "cli-1"]).await["transitions"][1]["actor"],
        "me"
    );

    ok(&app, &["start", "cli-2", "second"]).await;
    let page = ok(&app, &["list", "--limit", "1"]).await;
    assert_eq!(page["items"].as_array().unwrap().len(), 1);
    assert!(page["next_cursor"].is_string());
    let all = ok(&app, &["list", "--all", "--limit", "1"]).await;
    assert_eq!(all.as_array().unwrap().len(), 2);
    let gate = ok(&app, &["list", "--state", "GATE_1"]).await;
    assert_eq!(gate["items"][0]["feature_id"], "cli-1");
    assert_eq!(ok(&app, &["summary"]).await["total"], 2);

    let answer = ok(
        &app,
        &["consult", "cli-2", "testing", "How should we test the CLI?"],
    )
    .await;
    assert_eq!(answer["status"], "resolved");
    assert_eq!(
        ok(&app, &["consultations", "cli-2"]).await["items"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(ok(&app, &["health"]).await["service"], "orchestrator");
    assert_eq!(ok(&app, &["info"]).await["openapi"], "/openapi.json");
    assert_eq!(
        ok(&app, &["openapi"]).await["info"]["title"],
        "Orchestrator"
    );
    let (code, metrics, err) = orchestrator(&app.url(""), &["metrics"]).await;
    assert_eq!(code, ExitCode::SUCCESS, "{err}");
    assert!(
        metrics.contains(r#"orchestrator_workflows{state="GATE_1"} 1"#),
        "{metrics}"
    );
    // A start that found the workflow says so beside it; one that made it says nothing.
    let args = ["start", "cli-1", "again", "--use-existing"];
    let (code, out, err) = orchestrator(&app.url(""), &args).await;
    assert_eq!(code, ExitCode::SUCCESS, "{err}");
    assert_eq!(serde_json::from_str::<Value>(&out).unwrap()["version"], 2);
    assert_eq!(err, "note: cli-1 was started before; it is unchanged\n");
    let args = ["start", "cli-3", "third", "--use-existing"];
    let (code, _, err) = orchestrator(&app.url(""), &args).await;
    assert_eq!((code, err.as_str()), (ExitCode::SUCCESS, ""));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_refusal_prints_the_error_envelope_and_exits_1() {
    let app = spawn_app().await;
    ok(&app, &["start", "cli-r", "refusals"]).await;
    for args in [
        &["advance", "cli-r", "human_approved"][..],
        &["get", "nope"],
        &["start", "cli-r", "dup"],
    ] {
        let (code, out, err) = orchestrator(&app.url(""), args).await;
        assert_eq!(code, ExitCode::from(1), "{args:?}");
        assert!(out.is_empty());
        let envelope: Value = serde_json::from_str(&err).expect("envelope on stderr");
        assert!(envelope["error"]["code"].is_string(), "{err}");
        // With the id the server's log has the request under.
        assert!(envelope["request_id"].is_string(), "{err}");
        assert!(
            !err.contains("--idempotency-key"),
            "a refusal changed nothing: {err}"
        );
        // A start of a feature that exists points to the flag that takes it as it is.
        let exists = envelope["error"]["code"] == "WORKFLOW_ALREADY_EXISTS";
        assert_eq!(exists, args[0] == "start", "{err}");
        assert_eq!(
            envelope["note"]
                .as_str()
                .is_some_and(|n| n.contains("--use-existing")),
            exists,
            "{err}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_write_the_server_gave_up_on_tells_its_key_and_a_newer_servers_code_is_kept() {
    // A server that answers every request 503, as one past its request deadline does (the
    // change may still be made), with a code this version does not know.
    let url = stub_server(|_| {
        (
            503,
            "retry-after: 0\r\nx-request-id: req-9\r\n",
            r#"{"error":{"code":"DEADLINE_PASSED","message":"the request took too long"}}"#,
        )
    })
    .await;
    // The flags may follow the subcommand too.
    let (code, _, err) = orchestrator(&url, &["start", "x", "y", "--idempotency-key", "k-1"]).await;
    assert_eq!(code, ExitCode::from(1), "{err}");
    // One JSON document: the envelope as sent, the request id, and the key to run it again with.
    let envelope: Value = serde_json::from_str(&err).unwrap_or_else(|e| panic!("{e}: {err}"));
    assert_eq!(envelope["error"]["code"], "DEADLINE_PASSED");
    assert_eq!(envelope["request_id"], "req-9");
    assert_eq!(envelope["idempotency_key"], "k-1");
    assert!(
        envelope["note"]
            .as_str()
            .unwrap()
            .contains("--idempotency-key"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_write_the_agent_hub_failed_tells_no_key_for_nothing_was_stored() {
    let app = spawn_app().await;
    ok(&app, &["start", "cli-hub", "a hub that fails"]).await;
    app.hub
        .inject(orchestrator_server::hub::stand_in::Fault::PlainText500);
    let (code, _, err) = orchestrator(
        &app.url(""),
        &["ask", "cli-hub", "testing", "Does the hub answer today?"],
    )
    .await;
    assert_eq!(code, ExitCode::from(1), "{err}");
    assert!(err.contains("AGENT_HUB_ERROR"), "{err}");
    assert!(!err.contains("--idempotency-key"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_command_run_again_with_its_idempotency_key_is_carried_out_once() {
    let app = spawn_app().await;
    app.start_workflow("keyed").await;
    let complete = [
        "--idempotency-key",
        "complete-keyed-1",
        "advance",
        "keyed",
        "agent_complete",
    ];
    let first = ok(&app, &complete).await;
    // Run again (as after a cut-off first run): the first answer, nothing more done.
    assert_eq!(ok(&app, &complete).await, first);
    assert_eq!(ok(&app, &["get", "keyed"]).await["version"], 2);
    // The key belongs to that request: another one with it is refused.
    let (code, _, err) = orchestrator(
        &app.url(""),
        &[
            "--idempotency-key",
            "complete-keyed-1",
            "advance",
            "keyed",
            "cancel",
        ],
    )
    .await;
    assert_eq!(code, ExitCode::from(1), "{err}");
    assert!(err.contains("IDEMPOTENCY_KEY_REUSED"), "{err}");
    // A key the server would refuse is the command line's error.
    for bad in [" ab", "ab ", "é", ""] {
        let parsed = Cli::try_parse_from(["orchestrator", "--idempotency-key", bad, "summary"]);
        assert!(parsed.is_err(), "{bad:?}");
    }
    assert!(Cli::try_parse_from(["orchestrator", "--idempotency-key", "a b", "summary"]).is_ok());
}

/// Standard output whose reader went away (`orchestrator summary | head -c0`).
struct ClosedPipe;

impl std::io::Write for ClosedPipe {
    fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
        Err(std::io::ErrorKind::BrokenPipe.into())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reader_that_went_away_is_no_error() {
    let app = spawn_app().await;
    let cli = Cli::try_parse_from(["orchestrator", "--url", &app.url(""), "summary"]).unwrap();
    let mut err = Vec::new();
    let code = run(cli, &mut ClosedPipe, &mut err).await;
    assert_eq!(code, ExitCode::SUCCESS, "{}", String::from_utf8_lossy(&err));
    assert!(err.is_empty());
}

/// A write whose answer is lost to a reader that went away (a new webhook's secret, say) was
/// carried out: exit 3, and the key that shows the answer again, without making it twice, is
/// told.
#[tokio::test(flavor = "multi_thread")]
async fn a_write_whose_reader_went_away_exits_3_and_tells_its_key() {
    let app = spawn_app().await;
    let cli = Cli::try_parse_from([
        "orchestrator",
        "--url",
        &app.url(""),
        "start",
        "piped",
        "its answer goes nowhere",
    ])
    .unwrap();
    let mut err = Vec::new();
    let code = run(cli, &mut ClosedPipe, &mut err).await;
    let err = String::from_utf8_lossy(&err).into_owned();
    assert_eq!(code, ExitCode::from(3), "{err}");
    let key = err
        .split("--idempotency-key ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("a key to run it again with: {err}"));
    let (code, out, _) = orchestrator(
        &app.url(""),
        &[
            "--idempotency-key",
            key,
            "start",
            "piped",
            "its answer goes nowhere",
        ],
    )
    .await;
    assert_eq!(code, ExitCode::SUCCESS);
    let again: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(again["feature_id"], "piped");
    assert_eq!(app.client.get_summary().await.unwrap().total, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_input_exits_2_and_an_unreachable_server_exits_3() {
    let app = spawn_app().await;
    // A bad feature id is the command line's error, whichever command names it.
    for command in [
        &["get", "not valid"][..],
        &["start", "not valid", "a feature"],
    ] {
        let (code, _, err) = orchestrator(&app.url(""), command).await;
        assert_eq!(code, ExitCode::from(2), "{command:?}: {err}");
    }
    let (code, _, err) =
        orchestrator(&app.url(""), &["start", "x", "y", "--metadata", "{oops"]).await;
    assert_eq!(code, ExitCode::from(2), "{err}");
    let (code, _, err) = orchestrator(
        &app.url(""),
        &["advance", "x", "start", "--metadata", "[1]"],
    )
    .await;
    assert_eq!(code, ExitCode::from(2), "{err}");
    assert!(err.contains("--metadata must be a JSON object"), "{err}");
    // A key on a read would do nothing: the command line says so rather than ignore it.
    let (code, _, err) =
        orchestrator(&app.url(""), &["--idempotency-key", "k-1", "get", "x"]).await;
    assert_eq!(code, ExitCode::from(2), "{err}");
    assert!(
        err.contains("--idempotency-key applies to writes only"),
        "{err}"
    );
    // Caught by the command line (exit 2), not sent for the server to refuse.
    assert!(Cli::try_parse_from(["orchestrator", "advance", "x", "approve"]).is_err());
    assert!(Cli::try_parse_from(["orchestrator", "--timeout", "0", "summary"]).is_err());
    for refused in [
        &["start", "x", "y", "--on-expiry", "ignore"][..],
        &["start", "x", "y", "--required-approvals", "0"],
        &["start", "x", "y", "--due-in-seconds", "0"],
        &["list", "--limit", "0"],
        &["list", "--limit", "501"],
        &["events", "--limit", "1001"],
        &["respond", "x", "c-1", "approve"],
        &["webhooks", "deliveries", "wh_1", "--status", "lost"],
    ] {
        let mut args = vec!["orchestrator"];
        args.extend_from_slice(refused);
        assert!(Cli::try_parse_from(&args).is_err(), "{refused:?}");
    }
    for taken in [
        &[
            "start",
            "x",
            "y",
            "--on-expiry",
            "reject",
            "--required-approvals",
            "2",
        ][..],
        &["respond", "x", "c-1", "add_context", "--response", "more"],
        &[
            "webhooks",
            "deliveries",
            "wh_1",
            "--status",
            "failed",
            "--limit",
            "500",
        ],
    ] {
        let mut args = vec!["orchestrator"];
        args.extend_from_slice(taken);
        assert!(Cli::try_parse_from(&args).is_ok(), "{taken:?}");
    }
    let (code, _, err) = orchestrator(&dead_url(), &["summary"]).await;
    assert_eq!(code, ExitCode::from(3), "{err}");
    assert!(
        !err.contains("--idempotency-key"),
        "a read has nothing to repeat: {err}"
    );
    // Where it looked, and how to look elsewhere.
    let looked = format!("no server could be reached at {}", dead_url());
    assert!(err.contains(&looked), "{err}");
    assert!(err.contains("--url or ORCHESTRATOR_URL"), "{err}");
    assert!(!err.contains("plain HTTP"), "{err}");
    // A server speaking plain HTTP named by an https:// URL: the note says what may be wrong.
    let https = app.url("").replacen("http://", "https://", 1);
    let (code, _, err) = orchestrator(&https, &["summary"]).await;
    assert_eq!(code, ExitCode::from(3), "{err}");
    assert!(
        err.contains("does it speak plain HTTP? then its URL starts with http://"),
        "{err}"
    );
    // A write that reached no server changed nothing, and says so (a write that may have been
    // carried out tells the key to run it again with: the client's tests).
    let (code, _, err) = orchestrator(&dead_url(), &["start", "x", "y"]).await;
    assert_eq!(code, ExitCode::from(3), "{err}");
    assert!(err.contains("nothing was changed"), "{err}");
    assert!(!err.contains("may have been made"), "{err}");
    // A stream too: it does not wait for a server it never reached.
    let (code, _, err) = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        orchestrator(&dead_url(), &["watch"]),
    )
    .await
    .expect("watch gives up on a server it never reached");
    assert_eq!(code, ExitCode::from(3), "{err}");
    assert!(Cli::try_parse_from(["orchestrator", "advance"]).is_err());
}

#[tokio::test(flavor = "multi_thread")]
async fn health_exits_4_when_the_server_is_unhealthy_and_prints_its_answer() {
    // A server that answers /health with 503 "unhealthy", as one whose database is down does.
    let url = stub_server(|_| {
        (
            503,
            "",
            r#"{"status":"unhealthy","version":"0.1.0","service":"orchestrator","uptime_seconds":1,"checks":{"database":{"status":"error","message":"the database cannot be read or written"}}}"#,
        )
    })
    .await;
    let (code, out, _) = orchestrator(&url, &["health"]).await;
    assert_eq!(code, ExitCode::from(4));
    let printed: Value = serde_json::from_str(&out).expect("the answer is printed");
    assert_eq!(printed["status"], "unhealthy");
    // Its reader gone (`orchestrator health | grep -q …`), the verdict still stands.
    let cli = Cli::try_parse_from(["orchestrator", "--url", &url, "health"]).unwrap();
    let code = run(cli, &mut ClosedPipe, &mut Vec::new()).await;
    assert_eq!(code, ExitCode::from(4));
}

#[tokio::test(flavor = "multi_thread")]
async fn ask_and_respond_drive_consultations() {
    let app = spawn_app().await;
    ok(&app, &["start", "cli-ask", "asks the experts"]).await;
    let asked = ok(
        &app,
        &[
            "ask",
            "cli-ask",
            "security",
            "Are these tokens signed safely? [confidence=20]",
        ],
    )
    .await;
    assert_eq!(asked["status"], "pending_human");
    let consultation = asked["id"].as_str().expect("an id").to_owned();
    // At the gate it holds the approval; the refusal says where the id `respond` takes is.
    ok(&app, &["advance", "cli-ask", "agent_complete"]).await;
    let (code, _, err) =
        orchestrator(&app.url(""), &["approve", "cli-ask", "--actor", "alice"]).await;
    assert_eq!(code, ExitCode::from(1), "{err}");
    assert!(err.contains("GATE_BLOCKED"), "{err}");
    assert!(err.contains("orchestrator consultations"), "{err}");
    let answered = ok(
        &app,
        &[
            "respond",
            "cli-ask",
            &consultation,
            "correct",
            "--response",
            "sign with Ed25519",
            "--actor",
            "sec-team",
        ],
    )
    .await;
    assert_eq!(answered["status"], "resolved");
    assert_eq!(answered["final_answer"], "sign with Ed25519");
    let listed = ok(&app, &["consultations", "cli-ask"]).await;
    assert_eq!(listed["items"][0]["human_responder"], "sec-team");
}

/// A question the hub has not answered within the wait is printed `asking`, exit 0, and a
/// note on stderr says where its answer will be.
#[tokio::test(flavor = "multi_thread")]
async fn ask_says_when_the_answer_comes_later() {
    let app = spawn_app_with(|c| c.agent_hub_wait_seconds = 0).await;
    ok(&app, &["start", "cli-later", "asks a slow expert"]).await;
    let args = [
        "ask",
        "cli-later",
        "testing",
        "Which tests matter most? [delay=2]",
    ];
    let (code, out, err) = orchestrator(&app.url(""), &args).await;
    assert_eq!(code, ExitCode::SUCCESS, "{err}");
    let asked: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(asked["status"], "asking");
    assert!(
        err.contains("orchestrator consultations cli-later"),
        "{err}"
    );
    // At the gate it holds an approval until answered; the refusal's note says so (there is
    // no escalation to `respond` to).
    let args = [
        "ask",
        "cli-later",
        "testing",
        "Which gate matters most? [delay=20]",
    ];
    orchestrator(&app.url(""), &args).await;
    ok(&app, &["advance", "cli-later", "agent_complete"]).await;
    let (code, _, err) =
        orchestrator(&app.url(""), &["approve", "cli-later", "--actor", "alice"]).await;
    assert_eq!(code, ExitCode::from(1), "{err}");
    assert!(err.contains("is still being asked"), "{err}");
    assert!(
        err.contains("holds the gate until the hub answers"),
        "{err}"
    );
    assert!(!err.contains("respond"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn approve_and_reject_decide_at_the_gate() {
    let app = spawn_app().await;
    ok(
        &app,
        &["start", "cli-gate", "decided from the command line"],
    )
    .await;
    ok(&app, &["advance", "cli-gate", "agent_complete"]).await;
    let rejected = ok(
        &app,
        &[
            "reject",
            "cli-gate",
            "--reason",
            "retries must back off",
            "--actor",
            "alice",
            "--actor-kind",
            "human",
            "--metadata",
            r#"{"ticket": "PAY-7"}"#,
        ],
    )
    .await;
    assert_eq!(rejected["state"], "PHASE_1");
    assert_eq!(rejected["progress"]["rework_count"], 1);
    ok(&app, &["advance", "cli-gate", "agent_complete"]).await;
    let approved = ok(
        &app,
        &[
            "approve",
            "cli-gate",
            "--expected-version",
            "4",
            "--actor-kind",
            "human",
            "--metadata",
            r#"{"checked": true}"#,
        ],
    )
    .await;
    assert_eq!(approved["state"], "PHASE_2");
    let history = ok(&app, &["history", "cli-gate"]).await;
    let rejection = &history["transitions"][2];
    assert_eq!(rejection["reason"], "retries must back off");
    assert_eq!(
        (&rejection["actor_kind"], &rejection["metadata"]["ticket"]),
        (&serde_json::json!("human"), &serde_json::json!("PAY-7"))
    );
    let approval = &history["transitions"][4];
    assert_eq!(approval["trigger"], "human_approved");
    assert_eq!(
        (&approval["actor_kind"], &approval["metadata"]["checked"]),
        (&serde_json::json!("human"), &serde_json::json!(true))
    );
    // A reason is what `reject` is for.
    let parsed = Cli::try_parse_from(["orchestrator", "reject", "cli-gate"]);
    assert!(parsed.is_err());
}

#[tokio::test(flavor = "multi_thread")]
async fn gates_lists_what_waits_oldest_first_and_what_each_person_may_still_approve() {
    let app = crate::helpers::spawn_app_with(|c| c.gate_required_approvals = 2).await;
    // Nothing waits yet: an empty stdout for scripts, a note on stderr for people.
    for (args, note) in [
        (&["gates"][..], "no gate waits\n"),
        (
            &["gates", "--overdue"][..],
            "no gate is past its deadline\n",
        ),
    ] {
        let (code, out, err) = orchestrator(&app.url(""), args).await;
        assert_eq!(
            (code, out.as_str(), err.as_str()),
            (ExitCode::SUCCESS, "", note)
        );
    }
    for name in ["gate-old", "gate-new"] {
        ok(&app, &["start", name, "waiting at the gate"]).await;
        ok(
            &app,
            &["advance", name, "agent_complete", "--actor", "spec-agent"],
        )
        .await;
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    ok(&app, &["approve", "gate-new", "--actor", "alice"]).await;
    // A security question waits for a human: that gate says it is held.
    ok(
        &app,
        &[
            "consult",
            "gate-new",
            "security",
            "Is the new gate safe to ship?",
        ],
    )
    .await;

    let (code, out, _) = orchestrator(&app.url(""), &["gates"]).await;
    assert_eq!(code, ExitCode::SUCCESS);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert!(lines[0].starts_with("gate-old\twaiting "), "{out}");
    assert!(lines[0].contains("0 of 2 approvals\twaiting"), "{out}");
    assert!(!lines[0].contains("BLOCKED"), "{out}");
    // With the consultation's id, which `respond` takes.
    let consultations = app
        .client
        .list_consultations(&"gate-new".parse().unwrap())
        .await
        .unwrap();
    let held_by = format!(
        "1 of 2 approvals\tBLOCKED by 1 consultation: {} waits for a human\twaiting",
        consultations.items[0].id
    );
    assert!(lines[1].contains(&held_by), "{out}");
    // The same, for scripts: the workflows as JSON, oldest at the gate first.
    let listed = ok(&app, &["gates", "--json"]).await;
    let gates: Vec<(&str, usize)> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|w| {
            let blockers = w["gate"]["blocked_by"].as_array().unwrap().len();
            (w["feature_id"].as_str().unwrap(), blockers)
        })
        .collect();
    assert_eq!(
        gates,
        [("gate-old", 1), (lines[1].split('\t').next().unwrap(), 2)]
    );
    // Alice approved one already, whatever the case she is named in; the author may approve
    // neither.
    for alice in ["alice", "Alice"] {
        let (_, out, _) = orchestrator(&app.url(""), &["gates", "--actor", alice]).await;
        assert_eq!(out.lines().count(), 1, "{out}");
        assert!(out.starts_with("gate-old"), "{out}");
    }
    let (code, out, err) = orchestrator(&app.url(""), &["gates", "--actor", "spec-agent"]).await;
    assert_eq!(code, ExitCode::SUCCESS);
    assert_eq!(out, "");
    assert_eq!(err, "no gate waits for spec-agent\n");
}

#[tokio::test(flavor = "multi_thread")]
async fn gates_overdue_lists_only_the_gates_past_their_deadline() {
    let app = spawn_app().await;
    ok(
        &app,
        &[
            "start",
            "gate-late",
            "due in a second",
            "--required-approvals",
            "2",
            "--due-in-seconds",
            "1",
        ],
    )
    .await;
    ok(&app, &["start", "gate-relaxed", "no deadline"]).await;
    for name in ["gate-late", "gate-relaxed"] {
        ok(&app, &["advance", name, "agent_complete"]).await;
    }
    tokio::time::sleep(std::time::Duration::from_millis(1200)).await;

    let (code, out, _) = orchestrator(&app.url(""), &["gates", "--overdue"]).await;
    assert_eq!(code, ExitCode::SUCCESS);
    assert_eq!(out.lines().count(), 1, "{out}");
    assert!(out.starts_with("gate-late\t"), "{out}");
    assert!(out.contains("0 of 2 approvals\tOVERDUE\t"), "{out}");
    let (_, out, _) = orchestrator(&app.url(""), &["gates"]).await;
    assert_eq!(out.lines().count(), 2, "{out}");
    let (_, out, _) = orchestrator(&app.url(""), &["list", "--overdue"]).await;
    assert!(out.contains("\"overdue\": true"), "{out}");
    assert!(!out.contains("gate-relaxed"), "{out}");
}

#[tokio::test(flavor = "multi_thread")]
async fn events_prints_one_page_of_the_log_and_exits() {
    let app = spawn_app().await;
    for name in ["first", "second", "third"] {
        app.start_workflow(name).await;
    }
    let page = ok(&app, &["events", "--limit", "2"]).await;
    assert_eq!(page["items"].as_array().unwrap().len(), 2, "{page}");
    assert_eq!(page["next_after"], "2");
    let rest = ok(&app, &["events", "--after", "2", "--feature", "third"]).await;
    assert_eq!(rest["items"][0]["subject"], "third", "{rest}");
    let (code, _, err) = orchestrator(&app.url(""), &["events", "--type", "no.such"]).await;
    assert_eq!(code, ExitCode::from(2), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn watch_prints_one_line_per_event_and_stops_after_count() {
    let app = spawn_app().await;
    app.start_workflow("watched").await;
    app.client
        .advance_workflow(
            &crate::helpers::id("watched"),
            &orchestrator_core::api::AdvanceRequest::new("agent_complete"),
        )
        .await
        .unwrap();
    app.start_workflow("other").await;
    let (code, out, err) = orchestrator(
        &app.url(""),
        &[
            "watch",
            "--feature",
            "watched",
            "--after",
            "0",
            "--count",
            "2",
        ],
    )
    .await;
    assert_eq!(code, ExitCode::SUCCESS, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert!(
        lines[0].starts_with("1 workflow.transitioned watched IDLE -> PHASE_1 (start)"),
        "{out}"
    );
    assert!(
        lines[1].starts_with("2 workflow.transitioned watched PHASE_1 -> GATE_1 (agent_complete)"),
        "{out}"
    );

    let (code, out, _) = orchestrator(
        &app.url(""),
        &[
            "watch",
            "--type",
            "workflow.transitioned",
            "--after",
            "2",
            "--count",
            "1",
            "--json",
        ],
    )
    .await;
    assert_eq!(code, ExitCode::SUCCESS);
    // One event per line, to be read line by line.
    assert_eq!(out.lines().count(), 1, "{out}");
    let event: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(
        (event["id"].as_str(), event["subject"].as_str()),
        (Some("3"), Some("other"))
    );

    let (code, _, err) = orchestrator(&app.url(""), &["watch", "--type", "nonsense"]).await;
    assert_eq!(code, ExitCode::from(2), "{err}");
    assert!(err.contains("type"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn watch_from_the_oldest_event_starts_where_retention_ended() {
    use orchestrator_core::WorkflowRepository;
    use orchestrator_server::storage::{DatabaseUrl, SqliteRepository};
    let mut app = spawn_app().await;
    app.start_workflow("gone-1").await;
    app.start_workflow("gone-2").await;
    // Stopped, every event is deleted as retention would.
    app.stop().await;
    let DatabaseUrl::SqliteFile(file) = app.config.database_url.clone() else {
        unreachable!("spawn_app stores in a file");
    };
    let store = SqliteRepository::open(file, 1).await.unwrap();
    let later = chrono::Utc::now() + chrono::Duration::minutes(1);
    assert_eq!(store.purge_events(later).await.unwrap(), 2);
    store.close().await;
    let app = app.restart().await;
    app.start_workflow("kept").await;
    let url = app.url("");
    let from = |args: &[&str]| {
        let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
        let url = url.clone();
        async move {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            orchestrator(&url, &args).await
        }
    };
    // From 0, what retention deleted is missing: refused.
    let (code, _, err) = from(&["watch", "--after", "0", "--count", "1"]).await;
    assert_ne!(code, ExitCode::SUCCESS);
    assert!(err.contains("EVENTS_EXPIRED"), "{err}");
    assert!(err.contains("--from-oldest"), "the way on is told: {err}");
    let (code, out, err) = from(&["watch", "--from-oldest", "--count", "1"]).await;
    assert_eq!(code, ExitCode::SUCCESS, "{err}");
    assert!(out.starts_with("3 workflow.transitioned kept "), "{out}");
    // Filtered, it starts at the first event that passes.
    app.start_workflow("later").await;
    let args = [
        "watch",
        "--from-oldest",
        "--feature",
        "later",
        "--count",
        "1",
    ];
    let (code, out, err) = from(&args).await;
    assert_eq!(code, ExitCode::SUCCESS, "{err}");
    assert!(out.starts_with("4 workflow.transitioned later "), "{out}");
    // With nothing kept of the kind asked for, it waits for the next one.
    let args = [
        "watch",
        "--from-oldest",
        "--type",
        "gate.overdue",
        "--count",
        "1",
    ];
    let waiting = tokio::spawn(from(&args));
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    assert!(!waiting.is_finished(), "nothing to print yet");
    let mut late = orchestrator_core::api::StartWorkflowRequest::new("late", "due at once");
    late.gate = Some(orchestrator_core::api::GateRequest {
        due_in_seconds: Some(1),
        ..Default::default()
    });
    app.client.start_workflow(&late).await.unwrap();
    let to_gate = orchestrator_core::api::AdvanceRequest::new("agent_complete");
    let late = crate::helpers::id("late");
    app.client.advance_workflow(&late, &to_gate).await.unwrap();
    let (code, out, err) = tokio::time::timeout(std::time::Duration::from_secs(15), waiting)
        .await
        .expect("the overdue stay is noted")
        .unwrap();
    assert_eq!(code, ExitCode::SUCCESS, "{err}");
    assert!(out.starts_with("7 gate.overdue late"), "{out}");
    let clash = ["orchestrator", "watch", "--from-oldest", "--after", "3"];
    assert!(Cli::try_parse_from(clash).is_err());
}

#[tokio::test(flavor = "multi_thread")]
async fn webhooks_are_added_listed_paged_and_deleted() {
    let app = spawn_app().await;
    let added = ok(
        &app,
        &[
            "webhooks",
            "add",
            "http://127.0.0.1:9/hook",
            "--type",
            "workflow.transitioned,gate.overdue",
            "--description",
            "from the CLI",
        ],
    )
    .await;
    let id = added["id"].as_str().expect("an id").to_owned();
    assert!(added["secret"].as_str().unwrap().starts_with("whsec_"));
    assert_eq!(
        added["event_types"],
        serde_json::json!(["workflow.transitioned", "gate.overdue"])
    );

    let listed = ok(&app, &["webhooks", "list"]).await;
    assert_eq!(listed["items"][0]["id"], id.as_str());
    assert!(listed["items"][0].get("secret").is_none());
    assert_eq!(
        ok(&app, &["webhooks", "get", &id]).await["description"],
        "from the CLI"
    );
    let deliveries = ok(&app, &["webhooks", "deliveries", &id, "--status", "failed"]).await;
    assert_eq!(deliveries["items"], serde_json::json!([]));

    assert_eq!(
        ok(&app, &["webhooks", "delete", &id]).await,
        serde_json::json!({ "deleted": id })
    );
    let (code, _, err) = orchestrator(&app.url(""), &["webhooks", "get", &id]).await;
    assert_eq!(code, ExitCode::from(1));
    assert!(err.contains("WEBHOOK_NOT_FOUND"), "{err}");
}

/// With principals, `--token` is what the server knows the caller by: the agent's starts and
/// completes, the reviewer's approves and is the actor on the record, a viewer's is refused
/// naming the role it lacks.
#[tokio::test(flavor = "multi_thread")]
async fn each_principals_token_acts_as_that_principal() {
    use orchestrator_core::{ActorKind, Role};
    let keys = tempfile::TempDir::new().unwrap();
    let file = keys.path().join("principals.toml");
    let bot = crate::helpers::mint(&file, "build-bot", ActorKind::Agent, &[Role::Agent]);
    let alice = crate::helpers::mint(&file, "alice", ActorKind::Human, &[Role::Reviewer]);
    let watcher = crate::helpers::mint(&file, "watcher", ActorKind::Human, &[Role::Viewer]);
    let app = spawn_app_with(|c| c.principals_file = Some(file.clone())).await;
    let url = app.url("");
    let as_bot = |args: &[&str]| {
        let mut all = vec!["--token", bot.as_str()];
        all.extend_from_slice(args);
        all.into_iter().map(str::to_owned).collect::<Vec<_>>()
    };
    for args in [
        as_bot(&["start", "cli-team", "a feature"]),
        as_bot(&["advance", "cli-team", "agent_complete"]),
    ] {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (code, _, err) = orchestrator(&url, &args).await;
        assert_eq!(code, ExitCode::SUCCESS, "{args:?}: {err}");
    }
    let (code, _, err) = orchestrator(&url, &["--token", &watcher, "approve", "cli-team"]).await;
    assert_eq!(code, ExitCode::from(1), "{err}");
    assert!(err.contains("role needed: reviewer"), "{err}");
    let (code, out, err) = orchestrator(&url, &["--token", &alice, "approve", "cli-team"]).await;
    assert_eq!(code, ExitCode::SUCCESS, "{err}");
    assert_eq!(
        serde_json::from_str::<Value>(&out).unwrap()["state"],
        "PHASE_2"
    );
    let (_, out, _) = orchestrator(&url, &["--token", &alice, "history", "cli-team"]).await;
    let history: Value = serde_json::from_str(&out).unwrap();
    let last = history["transitions"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert_eq!(
        (last["actor"].as_str(), last["actor_kind"].as_str()),
        (Some("alice"), Some("human"))
    );
    // Without a token, nothing.
    let (code, _, err) = orchestrator(&url, &["summary"]).await;
    assert_eq!(code, ExitCode::from(1), "{err}");
    assert!(err.contains("no token was sent"), "{err}");
}
