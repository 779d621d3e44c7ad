//! Principals mode: tokens from a file name who acts; roles decide what they may do; an agent
//! never approves, whatever its roles; the history records the actor's kind and whom it acted
//! for. The file is re-read on SIGHUP (a bad one keeps the last good one), and the binary mints
//! tokens with `principal add`.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use orchestrator_client::{Client, ClientError};
use orchestrator_core::api::{AdvanceRequest, ErrorCode, RespondRequest, StartWorkflowRequest};
use orchestrator_core::{ActorKind, Role, WorkflowState};
use tempfile::TempDir;

use crate::helpers::{free_port, id, last_entry, mint, server_binary as server, spawn_app_with};

fn details(error: &ClientError) -> Vec<String> {
    match error {
        ClientError::Api { body, .. } => body.details.clone().unwrap_or_default(),
        other => panic!("not an API error: {other}"),
    }
}

fn assert_forbidden(result: Result<impl std::fmt::Debug, ClientError>, detail: &str) {
    let error = result.expect_err("should be forbidden");
    assert_eq!(error.status().map(|s| s.as_u16()), Some(403), "{error}");
    assert_eq!(error.code(), Some(ErrorCode::Forbidden));
    assert_eq!(details(&error), vec![detail.to_owned()]);
}

#[tokio::test(flavor = "multi_thread")]
async fn tokens_name_the_actor_and_roles_decide_what_they_may_do() {
    let keys = TempDir::new().unwrap();
    let file = keys.path().join("principals.toml");
    let alice = mint(&file, "alice", ActorKind::Human, &[Role::Reviewer]);
    let bot = mint(&file, "build-bot", ActorKind::Agent, &[Role::Agent]);
    let rogue = mint(&file, "rogue-bot", ActorKind::Agent, &[Role::Admin]);
    let watcher = mint(&file, "watcher", ActorKind::Human, &[Role::Viewer]);
    let erin = mint(&file, "erin", ActorKind::Human, &[Role::Admin]);
    let app = spawn_app_with(|c| c.principals_file = Some(file.clone())).await;
    let erin = app.client_with(&erin);

    // No token, or one nobody holds: 401.
    let anonymous = Client::new(app.url("")).unwrap();
    assert!(
        anonymous
            .list_workflows(&Default::default())
            .await
            .unwrap_err()
            .is_unauthorized()
    );
    assert!(
        app.client_with("orc_not-a-real-token")
            .list_workflows(&Default::default())
            .await
            .unwrap_err()
            .is_unauthorized()
    );

    // A viewer reads, and may not write: 403 naming the role, nothing stored.
    let (alice, bot, rogue, watcher) = (
        app.client_with(&alice),
        app.client_with(&bot),
        app.client_with(&rogue),
        app.client_with(&watcher),
    );
    assert!(watcher.list_workflows(&Default::default()).await.is_ok());
    assert_forbidden(
        watcher
            .start_workflow(&StartWorkflowRequest::new("f-1", "a feature"))
            .await,
        "role needed: agent",
    );
    assert!(
        alice
            .get_workflow(&id("f-1"))
            .await
            .unwrap_err()
            .is_not_found()
    );

    // The agent starts and completes; it may not approve.
    bot.start_workflow(&StartWorkflowRequest::new("f-1", "a feature"))
        .await
        .unwrap();
    bot.advance_workflow(&id("f-1"), &AdvanceRequest::new("agent_complete"))
        .await
        .unwrap();
    assert_forbidden(
        bot.advance_workflow(&id("f-1"), &AdvanceRequest::new("human_approved"))
            .await,
        "role needed: reviewer",
    );
    // Not even with every role: agents never decide at the gate, and saying otherwise in the
    // body changes nothing.
    let mut claims_human = AdvanceRequest::new("human_approved");
    claims_human.actor_kind = Some("human".to_owned());
    assert_forbidden(
        rogue.advance_workflow(&id("f-1"), &claims_human).await,
        "actor_kind: agent",
    );
    // A person's decision whose body says it is an agent's is refused as an agent's.
    let mut claims_agent = AdvanceRequest::new("human_approved");
    claims_agent.actor_kind = Some("agent".to_owned());
    assert_forbidden(
        alice.advance_workflow(&id("f-1"), &claims_agent).await,
        "actor_kind: agent",
    );
    // A reviewer may not do an agent's work.
    assert_forbidden(
        alice
            .advance_workflow(&id("f-1"), &AdvanceRequest::new("cancel"))
            .await,
        "role needed: agent",
    );

    // A reviewer approves; naming somebody else records them as whom she acted for.
    let mut approval = AdvanceRequest::new("human_approved");
    approval.actor = Some("carol".to_owned());
    let approved = alice.advance_workflow(&id("f-1"), &approval).await.unwrap();
    assert_eq!(approved.state, WorkflowState::Phase2);

    let history = watcher.get_history(&id("f-1")).await.unwrap().transitions;
    let who: Vec<_> = history
        .iter()
        .map(|t| {
            (
                t.actor.as_ref().map(|a| a.to_string()),
                t.actor_kind,
                t.on_behalf_of.as_ref().map(|a| a.to_string()),
            )
        })
        .collect();
    assert_eq!(
        who,
        vec![
            // The agent started it: the principal is the actor of the start too.
            (Some("build-bot".into()), Some(ActorKind::Agent), None),
            (Some("build-bot".into()), Some(ActorKind::Agent), None),
            (
                Some("alice".into()),
                Some(ActorKind::Human),
                Some("carol".into())
            ),
        ]
    );
    // The refused attempts left nothing behind.
    assert_eq!(approved.version, 3);

    // Overriding a gate is an admin's.
    bot.start_workflow(&StartWorkflowRequest::new("f-2", "another"))
        .await
        .unwrap();
    bot.advance_workflow(&id("f-2"), &AdvanceRequest::new("agent_complete"))
        .await
        .unwrap();
    let mut override_ = AdvanceRequest::new("human_approved");
    override_.override_gate = Some(true);
    override_.reason = Some("release blocker".to_owned());
    assert_forbidden(
        alice.advance_workflow(&id("f-2"), &override_).await,
        "role needed: admin",
    );
    // With any other trigger the flag means nothing, and needs no admin.
    let mut reject = AdvanceRequest::new("human_rejected");
    reject.override_gate = Some(true);
    reject.reason = Some("needs work".to_owned());
    let rejected = alice.advance_workflow(&id("f-2"), &reject).await.unwrap();
    assert_eq!(rejected.state, WorkflowState::Phase1);
    let mut history = watcher.get_history(&id("f-2")).await.unwrap().transitions;
    assert!(!history.pop().unwrap().override_gate);
    // An agent with the admin role is refused as an agent first; a human admin overrides, on
    // the record.
    bot.advance_workflow(&id("f-2"), &AdvanceRequest::new("agent_complete"))
        .await
        .unwrap();
    assert_forbidden(
        rogue.advance_workflow(&id("f-2"), &override_).await,
        "actor_kind: agent",
    );
    let passed = erin.advance_workflow(&id("f-2"), &override_).await.unwrap();
    assert_eq!(passed.state, WorkflowState::Phase2);
    let last = last_entry(&watcher, &id("f-2")).await;
    assert_eq!(
        (
            last.actor.map(|a| a.to_string()),
            last.actor_kind,
            last.override_gate
        ),
        (Some("erin".to_owned()), Some(ActorKind::Human), true)
    );

    // Only a human reviewer answers an escalation (checked before anything else).
    let unknown = orchestrator_core::ConsultationId::new();
    assert_forbidden(
        rogue
            .respond_to_consultation(&id("f-1"), &unknown, &RespondRequest::new("confirm"))
            .await,
        "actor_kind: agent; only a human answers an escalation",
    );
    assert_forbidden(
        bot.respond_to_consultation(&id("f-1"), &unknown, &RespondRequest::new("confirm"))
            .await,
        "role needed: reviewer",
    );
}

/// A request with two `Authorization` headers names no one, whichever comes first and
/// whether a token or principals decide: a proxy in between may have honoured the other.
#[tokio::test(flavor = "multi_thread")]
async fn two_authorization_headers_name_no_one() {
    let keys = TempDir::new().unwrap();
    let file = keys.path().join("principals.toml");
    let erin = mint(&file, "erin", ActorKind::Human, &[Role::Viewer]);
    let principals = spawn_app_with(|c| c.principals_file = Some(file.clone())).await;
    let shared = spawn_app_with(|c| c.api_token = Some("s3cret".into())).await;
    let http = reqwest::Client::new();
    for (app, good) in [(&principals, erin.as_str()), (&shared, "s3cret")] {
        let get = |first: &str, second: Option<&str>| {
            let mut request = http
                .get(app.url("/workflows"))
                .header("authorization", format!("Bearer {first}"));
            if let Some(second) = second {
                request = request.header("authorization", format!("Bearer {second}"));
            }
            request.send()
        };
        assert_eq!(get(good, None).await.unwrap().status(), 200);
        for (first, second) in [(good, "nope"), ("nope", good), (good, good)] {
            let refused = get(first, Some(second)).await.unwrap();
            assert_eq!(refused.status(), 401, "{first} then {second}");
            assert_eq!(refused.headers()["www-authenticate"], "Bearer");
            let body: serde_json::Value = refused.json().await.unwrap();
            assert_eq!(body["error"]["code"], "UNAUTHORIZED");
            assert_eq!(
                body["error"]["message"],
                "more than one Authorization header: send one"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn one_persons_approval_counts_once_even_given_through_someone_else() {
    let keys = TempDir::new().unwrap();
    let file = keys.path().join("principals.toml");
    let alice = mint(&file, "alice", ActorKind::Human, &[Role::Reviewer]);
    let carol = mint(&file, "carol", ActorKind::Human, &[Role::Reviewer]);
    let bot = mint(&file, "build-bot", ActorKind::Agent, &[Role::Agent]);
    // An agent that did not make the work: only its kind stands in the way.
    mint(&file, "rev-bot", ActorKind::Agent, &[Role::Agent]);
    let app = spawn_app_with(|c| {
        c.principals_file = Some(file.clone());
        c.gate_required_approvals = 2;
    })
    .await;
    let (alice, carol, bot) = (
        app.client_with(&alice),
        app.client_with(&carol),
        app.client_with(&bot),
    );
    bot.start_workflow(&StartWorkflowRequest::new("two", "needs two people"))
        .await
        .unwrap();
    let at_gate = bot
        .advance_workflow(&id("two"), &AdvanceRequest::new("agent_complete"))
        .await
        .unwrap();

    // Nobody approves or rejects in an agent's name, however it is spelt: nothing stored.
    for (trigger, name) in [("human_approved", "rev-bot"), ("human_rejected", "REV-BOT")] {
        let mut for_the_bot = AdvanceRequest::new(trigger);
        for_the_bot.actor = Some(name.to_owned());
        for_the_bot.reason = Some("looks fine to the bot".to_owned());
        assert_forbidden(
            alice.advance_workflow(&id("two"), &for_the_bot).await,
            &format!(
                "actor: {name} is an agent, and an approval or rejection is a person's, given in no agent's name"
            ),
        );
    }
    assert_eq!(
        alice.get_workflow(&id("two")).await.unwrap().version,
        at_gate.version
    );

    // Alice approves for Carol: the approval is both of theirs.
    let mut for_carol = AdvanceRequest::new("human_approved");
    for_carol.actor = Some("carol".to_owned());
    let first = alice
        .advance_workflow(&id("two"), &for_carol)
        .await
        .unwrap();
    assert_eq!(first.state, WorkflowState::Gate1);
    let approval = &first.gate.approvals[0];
    assert_eq!(
        (
            approval.actor.as_str(),
            approval.on_behalf_of.as_ref().map(|a| a.as_str())
        ),
        ("alice", Some("carol"))
    );

    // So Carol's own approval is her second, not the second person's: refused, nothing stored.
    let error = carol
        .advance_workflow(&id("two"), &AdvanceRequest::new("human_approved"))
        .await
        .unwrap_err();
    assert_eq!(error.code(), Some(ErrorCode::AlreadyApproved));
    assert_eq!(
        details(&error),
        vec!["actor: carol approved this stay at the gate already".to_owned()]
    );
    let now = carol.get_workflow(&id("two")).await.unwrap();
    assert_eq!(
        (now.state, now.version),
        (WorkflowState::Gate1, first.version)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn without_principals_an_agent_that_says_so_may_not_approve() {
    let app = spawn_app_with(|_| {}).await;
    app.start_workflow("open-1").await;
    app.client
        .advance_workflow(&id("open-1"), &AdvanceRequest::new("agent_complete"))
        .await
        .unwrap();
    let mut approval = AdvanceRequest::new("human_approved");
    approval.actor = Some("helper-bot".to_owned());
    approval.actor_kind = Some("agent".to_owned());
    assert_forbidden(
        app.client.advance_workflow(&id("open-1"), &approval).await,
        "actor_kind: agent",
    );
    // An unknown kind, or the orchestrator's own, which no caller may claim.
    for kind in ["robot", "system"] {
        approval.actor_kind = Some(kind.to_owned());
        let error = app
            .client
            .advance_workflow(&id("open-1"), &approval)
            .await
            .unwrap_err();
        assert_eq!(error.code(), Some(ErrorCode::ValidationError));
        // Both told the two a request may name, not a list with system in it.
        assert_eq!(
            details(&error)[0],
            "actor_kind: must be human or agent (system is the orchestrator's own)"
        );
    }

    approval.actor = Some("dana".to_owned());
    approval.actor_kind = Some("human".to_owned());
    let approved = app
        .client
        .advance_workflow(&id("open-1"), &approval)
        .await
        .unwrap();
    assert_eq!(approved.state, WorkflowState::Phase2);
    let last = last_entry(&app.client, &id("open-1")).await;
    assert_eq!(
        (last.actor_kind, last.on_behalf_of),
        (Some(ActorKind::Human), None)
    );
}

#[test]
fn a_token_and_a_principals_file_together_stop_start_up() {
    // A file that loads: the refusal is the pair's, not the file's.
    let keys = TempDir::new().unwrap();
    let file = keys.path().join("principals.toml");
    mint(&file, "alice", ActorKind::Human, &[Role::Reviewer]);
    let output = server()
        .env("ORCHESTRATOR_API_TOKEN", "s3cret")
        .env("ORCHESTRATOR_PRINCIPALS_FILE", &file)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("--api-token") && stderr.contains("--principals-file"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_binary_mints_tokens_and_rereads_the_file_on_sighup() {
    let dir = TempDir::new().unwrap();
    let file = dir.path().join("principals.toml");
    let log = dir.path().join("server.log");
    let add = |name: &str, kind: &str, role: &str| {
        server()
            .args(["principal", "add", "--file"])
            .arg(&file)
            .args(["--name", name, "--kind", kind, "--role", role])
            .output()
            .unwrap()
    };
    let minted = add("alice", "human", "reviewer");
    assert!(minted.status.success(), "{minted:?}");
    let alice = String::from_utf8(minted.stdout).unwrap().trim().to_owned();
    assert!(!std::fs::read_to_string(&file).unwrap().contains(&alice));
    let taken = add("alice", "agent", "agent");
    assert!(!taken.status.success());
    // The orchestrator's own name is nobody's.
    let system = add("System", "human", "reviewer");
    assert_eq!(system.status.code(), Some(2), "{system:?}");
    assert!(
        String::from_utf8_lossy(&system.stderr).contains("must not be system"),
        "{system:?}"
    );

    let port = free_port();
    let mut child = server()
        .env("HOST", "127.0.0.1")
        .env("PORT", port.to_string())
        .env("DATABASE_URL", "sqlite::memory:")
        .env("ORCHESTRATOR_PRINCIPALS_FILE", &file)
        // No heartbeat within the test: a removed principal's stream must end at the reload.
        .env("EVENTS_HEARTBEAT_SECONDS", "3600")
        .env("RUST_LOG", "info")
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // How many times the server's log says `line`: a reload is seen done, not waited for.
    let said = |line: &str| {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .matches(line)
            .count()
    };
    let until_said = |line: &'static str, times: usize| async move {
        let deadline = Instant::now() + Duration::from_secs(10);
        while said(line) < times {
            assert!(
                Instant::now() < deadline,
                "the log never said {line:?} {times} times"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    let url = format!("http://127.0.0.1:{port}");
    let as_token = |token: &str| {
        Client::builder()
            .base_url(url.clone())
            .token(token)
            .build()
            .unwrap()
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while as_token(&alice)
        .list_workflows(&Default::default())
        .await
        .is_err()
    {
        assert!(Instant::now() < deadline, "server did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // A principal added while the server runs is known after SIGHUP.
    let bob = mint(&file, "bob", ActorKind::Agent, &[Role::Agent]);
    assert!(
        as_token(&bob)
            .list_workflows(&Default::default())
            .await
            .unwrap_err()
            .is_unauthorized()
    );
    let hangup = |pid: u32| {
        Command::new("kill")
            .args(["-HUP", &pid.to_string()])
            .status()
            .unwrap()
    };
    assert!(hangup(child.id()).success());
    let deadline = Instant::now() + Duration::from_secs(10);
    while as_token(&bob)
        .list_workflows(&Default::default())
        .await
        .is_err()
    {
        assert!(Instant::now() < deadline, "SIGHUP did not reload the file");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // A principal removed while the server runs is refused after SIGHUP, and the event
    // stream it had open ends at the reload; the others stay.
    let mut bobs_stream = reqwest::Client::new()
        .get(format!("{url}/events/stream?after=0"))
        .bearer_auth(&bob)
        .send()
        .await
        .unwrap();
    assert_eq!(bobs_stream.status(), reqwest::StatusCode::OK);
    let remove = || {
        server()
            .args(["principal", "remove", "--file"])
            .arg(&file)
            .args(["--name", "bob"])
            .output()
            .unwrap()
    };
    let removed = remove();
    assert!(removed.status.success(), "{removed:?}");
    assert!(hangup(child.id()).success());
    let deadline = Instant::now() + Duration::from_secs(10);
    while !as_token(&bob)
        .list_workflows(&Default::default())
        .await
        .is_err_and(|e| e.is_unauthorized())
    {
        assert!(Instant::now() < deadline, "SIGHUP did not drop bob");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        while let Ok(Some(_)) = bobs_stream.chunk().await {}
    })
    .await;
    assert!(ended.is_ok(), "bob's stream outlived bob");
    assert!(
        as_token(&alice)
            .list_workflows(&Default::default())
            .await
            .is_ok()
    );
    assert_eq!(remove().status.code(), Some(1), "bob is gone already");

    // A broken file keeps the principals in force, and so does an empty one (a truncation
    // by mistake, or a file caught mid-write).
    let kept = std::fs::read_to_string(&file).unwrap();
    let refused = "principals file not reloaded";
    for broken in ["this is [not toml", ""] {
        let before = said(refused);
        std::fs::write(&file, broken).unwrap();
        assert!(hangup(child.id()).success());
        until_said(refused, before + 1).await;
        assert!(
            as_token(&alice)
                .list_workflows(&Default::default())
                .await
                .is_ok(),
            "{broken:?} took effect"
        );
    }
    // The good file again: read (the log says so), with bob still out and alice in.
    let reloaded = "principals reloaded";
    let before = said(reloaded);
    std::fs::write(&file, kept).unwrap();
    assert!(hangup(child.id()).success());
    until_said(reloaded, before + 1).await;
    assert!(
        as_token(&bob)
            .list_workflows(&Default::default())
            .await
            .is_err_and(|e| e.is_unauthorized())
    );
    assert!(
        as_token(&alice)
            .list_workflows(&Default::default())
            .await
            .is_ok()
    );
    // alice made an admin by hand: the log names the change of her roles, and warns.
    let text = std::fs::read_to_string(&file).unwrap();
    assert_eq!(text.matches(r#"roles = ["reviewer"]"#).count(), 1, "{text}");
    let promoted = text.replace(
        r#"roles = ["reviewer"]"#,
        r#"roles = ["reviewer", "admin"]"#,
    );
    std::fs::write(&file, promoted).unwrap();
    let warned = "principals given the admin role";
    assert_eq!(said(warned), 0);
    let before = said(reloaded);
    assert!(hangup(child.id()).success());
    until_said(reloaded, before + 1).await;
    until_said(warned, 1).await;
    assert_eq!(
        said("alice: human [reviewer] → human [reviewer, admin]"),
        1,
        "{}",
        std::fs::read_to_string(&log).unwrap()
    );
    assert!(child.try_wait().unwrap().is_none(), "the server stopped");
    child.kill().unwrap();
    child.wait().unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn only_admins_manage_webhooks() {
    let keys = TempDir::new().unwrap();
    let file = keys.path().join("principals.toml");
    let reviewer = mint(&file, "alice", ActorKind::Human, &[Role::Reviewer]);
    let agent = mint(&file, "build-bot", ActorKind::Agent, &[Role::Agent]);
    let admin = mint(&file, "ops", ActorKind::Human, &[Role::Admin]);
    let app = spawn_app_with(|c| c.principals_file = Some(file.clone())).await;
    let request = orchestrator_core::api::CreateWebhookRequest::new("http://127.0.0.1:9/hook");

    for token in [&reviewer, &agent] {
        let someone = app.client_with(token);
        assert_forbidden(someone.create_webhook(&request).await, "role needed: admin");
        assert_forbidden(someone.list_webhooks().await, "role needed: admin");
        assert_forbidden(someone.get_webhook("wh_1").await, "role needed: admin");
        assert_forbidden(someone.delete_webhook("wh_1").await, "role needed: admin");
        assert_forbidden(
            someone.list_deliveries("wh_1", &Default::default()).await,
            "role needed: admin",
        );
        assert_forbidden(
            someone.redeliver("wh_1", "msg_1").await,
            "role needed: admin",
        );
    }
    let admin = app.client_with(&admin);
    let created = admin.create_webhook(&request).await.unwrap();
    assert_eq!(
        admin.list_webhooks().await.unwrap().items,
        vec![created.webhook]
    );
}

/// A decision the rules refused is no event (nothing changed), but the log says who tried: the
/// refusal's line carries the caller's principal and the code.
#[tokio::test(flavor = "multi_thread")]
async fn a_refused_decision_is_logged_with_the_principal_who_tried() {
    let dir = TempDir::new().unwrap();
    let file = dir.path().join("principals.toml");
    let bot = mint(&file, "build-bot", ActorKind::Agent, &[Role::Admin]);
    let vic = mint(&file, "vic", ActorKind::Human, &[Role::Viewer]);
    let port = free_port();
    let child = server()
        .env("HOST", "127.0.0.1")
        .env("PORT", port.to_string())
        .env("DATABASE_URL", "sqlite::memory:")
        .env("ORCHESTRATOR_PRINCIPALS_FILE", &file)
        .env("LOG_FORMAT", "json")
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let bot = Client::builder()
        .base_url(format!("http://127.0.0.1:{port}"))
        .token(bot)
        .build()
        .unwrap();
    crate::helpers::wait_healthy(&bot).await;
    let feature = id("tried");
    bot.start_workflow(&StartWorkflowRequest::new("tried", "logged"))
        .await
        .unwrap();
    bot.advance_workflow(&feature, &AdvanceRequest::new("agent_complete"))
        .await
        .unwrap();
    let refused = bot
        .advance_workflow(&feature, &AdvanceRequest::new("human_approved"))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Some(ErrorCode::Forbidden), "{refused}");
    // A refusal for want of a role comes before the handler reads the path: its line names
    // the feature all the same.
    let viewer = Client::builder()
        .base_url(format!("http://127.0.0.1:{port}"))
        .token(&vic)
        .build()
        .unwrap();
    let refused = viewer
        .advance_workflow(&feature, &AdvanceRequest::new("human_approved"))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Some(ErrorCode::Forbidden), "{refused}");
    // Its id percent-encoded in the path, as the handler would read it.
    let encoded = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{port}/workflow/tri%65d/advance"))
        .bearer_auth(&vic)
        .json(&serde_json::json!({"trigger": "human_approved"}))
        .send()
        .await
        .unwrap();
    assert_eq!(encoded.status(), 403);

    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let output = child.wait_with_output().unwrap();
    let log = String::from_utf8_lossy(&output.stdout);
    let line = log
        .lines()
        .find(|line| line.contains("request refused"))
        .unwrap_or_else(|| panic!("no refusal logged: {log}"));
    let line: serde_json::Value = serde_json::from_str(line).unwrap();
    assert_eq!(line["code"], "FORBIDDEN", "{line}");
    assert_eq!(line["span"]["principal"], "build-bot", "{line}");
    assert_eq!(line["span"]["feature_id"], "tried", "{line}");
    let lines: Vec<&str> = log
        .lines()
        .filter(|line| line.contains("request refused") && line.contains(r#""principal":"vic""#))
        .collect();
    assert_eq!(lines.len(), 2, "{log}");
    for line in lines {
        let line: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(line["span"]["feature_id"], "tried", "{line}");
    }
}

/// The server's gate defaults are the team's policy: an agent starts a workflow with a gate
/// as strict or stricter, and only an admin below it (fewer approvals, or the author allowed
/// to approve); nothing is stored for a refused start. Without principals anyone may.
#[tokio::test(flavor = "multi_thread")]
async fn a_gate_below_the_servers_policy_is_an_admins_to_start() {
    use orchestrator_core::api::GateRequest;
    let keys = TempDir::new().unwrap();
    let file = keys.path().join("principals.toml");
    let bot = mint(&file, "build-bot", ActorKind::Agent, &[Role::Agent]);
    let ops = mint(&file, "ops", ActorKind::Human, &[Role::Admin]);
    let app = spawn_app_with(|c| {
        c.principals_file = Some(file.clone());
        c.gate_required_approvals = 2;
    })
    .await;
    let bot_token = bot.clone();
    let (bot, ops) = (app.client_with(&bot), app.client_with(&ops));
    let start = |name: &str, gate: GateRequest| {
        let mut request = StartWorkflowRequest::new(name, "gated");
        request.gate = Some(gate);
        request
    };
    let fewer = GateRequest {
        required_approvals: Some(1),
        ..GateRequest::default()
    };
    let own = GateRequest {
        allow_self_approval: Some(true),
        ..GateRequest::default()
    };
    let refused = bot.start_workflow(&start("lax", fewer.clone())).await;
    assert_forbidden(
        refused,
        "role needed: admin: gate.required_approvals 1 is fewer than this server's 2",
    );
    let refused = bot.start_workflow(&start("lax", own.clone())).await;
    assert_forbidden(
        refused,
        "role needed: admin: gate.allow_self_approval lets the author approve",
    );
    assert!(
        bot.get_workflow(&id("lax"))
            .await
            .unwrap_err()
            .is_not_found()
    );
    // Judged on the body, after the key: a keyed refusal is kept, and replayed.
    let keyed = || {
        reqwest::Client::new()
            .post(app.url("/workflow/start"))
            .bearer_auth(&bot_token)
            .header("idempotency-key", "lax-start")
            .json(&serde_json::json!({
                "feature_id": "lax", "description": "gated", "gate": {"required_approvals": 1}
            }))
            .send()
    };
    let first = keyed().await.unwrap();
    assert_eq!(first.status(), 403);
    assert!(first.headers().get("idempotent-replayed").is_none());
    let again = keyed().await.unwrap();
    assert_eq!(again.status(), 403);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    // As strict or stricter, or a deadline: the agent's to choose.
    let stricter = GateRequest {
        required_approvals: Some(3),
        due_in_seconds: Some(60),
        ..GateRequest::default()
    };
    let started = bot
        .start_workflow(&start("strict", stricter))
        .await
        .unwrap();
    assert_eq!(started.gate.required_approvals, 3);
    let defaults = bot
        .start_workflow(&StartWorkflowRequest::new("plain", "gated"))
        .await
        .unwrap();
    assert_eq!(defaults.gate.required_approvals, 2);
    // An admin may go below it, on the record.
    let lax = ops.start_workflow(&start("lax", fewer)).await.unwrap();
    assert_eq!(lax.gate.required_approvals, 1);
    let own = ops.start_workflow(&start("own", own)).await.unwrap();
    assert!(own.gate.allow_self_approval);
}

/// Without principals there is no admin to ask: a start chooses its gate.
#[tokio::test(flavor = "multi_thread")]
async fn without_principals_a_start_chooses_its_gate() {
    let app = spawn_app_with(|c| c.gate_required_approvals = 2).await;
    let mut request = StartWorkflowRequest::new("lax", "gated");
    request.gate = Some(orchestrator_core::api::GateRequest {
        required_approvals: Some(1),
        ..Default::default()
    });
    let started = app.client.start_workflow(&request).await.unwrap();
    assert_eq!(started.gate.required_approvals, 1);
}
