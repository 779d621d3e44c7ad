//! The workflow endpoints through the typed client.

use std::collections::BTreeSet;

use orchestrator_core::api::{
    AdvanceRequest, ErrorCode, ListWorkflowsParams, StartWorkflowRequest,
};
use orchestrator_core::{Trigger, WorkflowState};
use serde_json::json;

use crate::helpers::{id, last_entry, race, spawn_app, spawn_app_with};

fn advance(trigger: &str) -> AdvanceRequest {
    crate::helpers::step(trigger)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_feature_goes_through_the_whole_life_cycle() {
    let app = spawn_app().await;
    let started = app.start_workflow("008-services-architecture").await;
    assert_eq!((started.state, started.version), (WorkflowState::Phase1, 1));
    assert_eq!(started.progress.percent, 25);
    let f = id("008-services-architecture");

    let steps = [
        ("agent_complete", WorkflowState::Gate1),
        ("human_rejected", WorkflowState::Phase1),
        ("agent_complete", WorkflowState::Gate1),
        ("human_approved", WorkflowState::Phase2),
        ("agent_complete", WorkflowState::Done),
    ];
    for (trigger, state) in steps {
        let mut request = advance(trigger);
        // The work's author may not approve it: people decide, agents do the work.
        let actor = if trigger.starts_with("human") {
            "reviewer"
        } else {
            "tester"
        };
        request.actor = Some(actor.into());
        request.reason = Some(format!("step {trigger}"));
        request.metadata = Some(json!({"step": trigger}));
        let workflow = app.client.advance_workflow(&f, &request).await.unwrap();
        assert_eq!(workflow.state, state);
    }

    let done = app.client.get_workflow(&f).await.unwrap();
    assert_eq!(
        (done.state, done.version, done.progress.percent),
        (WorkflowState::Done, 6, 100)
    );
    assert_eq!(done.progress.rework_count, 1);
    assert!(done.completed_at.is_some());

    let history = app.client.get_history(&f).await.unwrap();
    assert_eq!(history.feature_id, f);
    let seqs: Vec<u64> = history.transitions.iter().map(|t| t.seq).collect();
    assert_eq!(seqs, vec![1, 2, 3, 4, 5, 6]);
    assert_eq!(history.transitions[0].trigger, Trigger::Start);
    assert_eq!(
        history.transitions[3].actor.as_ref().unwrap().as_str(),
        "tester"
    );
    assert_eq!(
        history.transitions[3].metadata.as_map()["step"],
        "agent_complete"
    );
    for pair in history.transitions.windows(2) {
        assert_eq!(pair[0].to, pair[1].from);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn every_trigger_outside_the_table_is_refused_and_changes_nothing() {
    let app = spawn_app().await;
    // One workflow parked in each state.
    let setups: [(&str, &[&str]); 5] = [
        ("in-idle", &["cancel"]),
        ("in-phase-1", &[]),
        ("in-gate-1", &["agent_complete"]),
        ("in-phase-2", &["agent_complete", "human_approved"]),
        (
            "in-done",
            &["agent_complete", "human_approved", "agent_complete"],
        ),
    ];
    for (name, triggers) in setups {
        app.start_workflow(name).await;
        for trigger in triggers {
            app.client
                .advance_workflow(&id(name), &advance(trigger))
                .await
                .unwrap();
        }
        let before = app.client.get_workflow(&id(name)).await.unwrap();
        for trigger in Trigger::ALL {
            if before.state.allowed_triggers().contains(&trigger) {
                continue;
            }
            let err = app
                .client
                .advance_workflow(&id(name), &advance(trigger.as_str()))
                .await
                .unwrap_err();
            assert_eq!(
                err.code(),
                Some(ErrorCode::InvalidTransition),
                "{name} {trigger}"
            );
            let orchestrator_client::ClientError::Api { body, .. } = &err else {
                unreachable!()
            };
            let details = body.details.clone().unwrap_or_default();
            assert!(
                details.contains(&format!("state: {}", before.state)),
                "{details:?}"
            );
            assert!(details.iter().any(|d| d.starts_with("allowed_triggers:")));
        }
        let after = app.client.get_workflow(&id(name)).await.unwrap();
        assert_eq!(after, before);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unknown_trigger_is_a_validation_error() {
    let app = spawn_app().await;
    app.start_workflow("f").await;
    let err = app
        .client
        .advance_workflow(&id("f"), &advance("approve"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::ValidationError));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cancelled_workflow_restarts_with_start() {
    let app = spawn_app().await;
    app.start_workflow("f").await;
    let idle = app
        .client
        .advance_workflow(&id("f"), &advance("cancel"))
        .await
        .unwrap();
    assert_eq!(
        (idle.state, idle.progress.percent),
        (WorkflowState::Idle, 0)
    );
    let again = app
        .client
        .advance_workflow(&id("f"), &advance("start"))
        .await
        .unwrap();
    assert_eq!((again.state, again.version), (WorkflowState::Phase1, 3));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_duplicate_start_is_refused_unless_use_existing() {
    let app = spawn_app().await;
    let first = app.start_workflow("dup").await;
    let err = app
        .client
        .start_workflow(&StartWorkflowRequest::new("dup", "another"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::WorkflowAlreadyExists));
    assert!(err.is_conflict());

    let mut retry = StartWorkflowRequest::new("dup", "another description");
    retry.use_existing = Some(true);
    let found = app.client.start_workflow_reporting(&retry).await.unwrap();
    assert!(!found.created, "found, not created");
    let existing = found.workflow;
    assert_eq!(existing.version, first.version);
    retry.feature_id = "dup-new".into();
    let made = app.client.start_workflow_reporting(&retry).await.unwrap();
    assert!(made.created);
    assert_eq!(made.workflow.version, 1);
    assert_eq!(existing.description, first.description);
    assert_eq!(
        app.client
            .get_history(&id("dup"))
            .await
            .unwrap()
            .transitions
            .len(),
        1
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unknown_workflow_is_not_found_everywhere() {
    let app = spawn_app().await;
    let ghost = id("ghost");
    let errors = [
        app.client.get_workflow(&ghost).await.unwrap_err(),
        app.client
            .advance_workflow(&ghost, &advance("cancel"))
            .await
            .unwrap_err(),
        app.client.get_history(&ghost).await.unwrap_err(),
    ];
    for err in errors {
        assert_eq!(err.code(), Some(ErrorCode::WorkflowNotFound));
        assert!(err.is_not_found());
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stale_expected_version_is_a_conflict() {
    let app = spawn_app().await;
    app.start_workflow("v").await;
    let mut request = advance("agent_complete");
    request.expected_version = Some(5);
    let err = app
        .client
        .advance_workflow(&id("v"), &request)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::VersionConflict));
    request.expected_version = Some(1);
    let moved = app
        .client
        .advance_workflow(&id("v"), &request)
        .await
        .unwrap();
    assert_eq!(moved.version, 2);
    // The same request again is now stale.
    let err = app
        .client
        .advance_workflow(&id("v"), &request)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::VersionConflict));
}

#[tokio::test(flavor = "multi_thread")]
async fn listing_pages_through_all_workflows_in_order_and_filters_by_state() {
    let app = spawn_app().await;
    let mut names: Vec<String> = (0..23).map(|n| format!("feature-{n:02}")).collect();
    names.reverse();
    for name in &names {
        app.start_workflow(name).await;
    }
    for name in ["feature-03", "feature-11", "feature-17"] {
        app.client
            .advance_workflow(&id(name), &advance("agent_complete"))
            .await
            .unwrap();
    }

    let mut params = ListWorkflowsParams {
        limit: Some(5),
        ..Default::default()
    };
    let mut seen = Vec::new();
    let mut pages = 0;
    loop {
        let page = app.client.list_workflows(&params).await.unwrap();
        pages += 1;
        seen.extend(page.items.iter().map(|w| w.feature_id.to_string()));
        match page.next_cursor {
            Some(cursor) => params.cursor = Some(cursor),
            None => break,
        }
    }
    names.sort();
    assert_eq!(seen, names);
    assert_eq!(pages, 5);

    let gate = app
        .client
        .list_workflows(&ListWorkflowsParams {
            state: Some(WorkflowState::Gate1),
            ..Default::default()
        })
        .await
        .unwrap();
    let gate_ids: BTreeSet<String> = gate
        .items
        .iter()
        .map(|w| w.feature_id.to_string())
        .collect();
    assert_eq!(
        gate_ids,
        BTreeSet::from([
            "feature-03".into(),
            "feature-11".into(),
            "feature-17".into()
        ])
    );
    assert_eq!(gate.next_cursor, None);

    let summary = app.client.get_summary().await.unwrap();
    assert_eq!(summary.total, 23);
    assert_eq!(summary.counts[&WorkflowState::Gate1], 3);
    assert_eq!(summary.counts[&WorkflowState::Phase1], 20);
    assert_eq!(summary.counts[&WorkflowState::Done], 0);
    assert_eq!(summary.counts.len(), 5);
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_list_parameters_are_validation_errors() {
    let app = spawn_app().await;
    for params in [
        ListWorkflowsParams {
            limit: Some(0),
            ..Default::default()
        },
        ListWorkflowsParams {
            limit: Some(501),
            ..Default::default()
        },
        ListWorkflowsParams {
            cursor: Some("not-a-cursor".into()),
            ..Default::default()
        },
    ] {
        let err = app.client.list_workflows(&params).await.unwrap_err();
        assert_eq!(err.code(), Some(ErrorCode::ValidationError), "{params:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn workflows_survive_a_restart_on_the_same_file() {
    let app = spawn_app().await;
    app.start_workflow("keep").await;
    app.client
        .advance_workflow(&id("keep"), &advance("agent_complete"))
        .await
        .unwrap();
    let before = app.client.get_history(&id("keep")).await.unwrap();

    let app = app.restart().await;
    let after = app.client.get_history(&id("keep")).await.unwrap();
    assert_eq!(after, before);
    let workflow = app.client.get_workflow(&id("keep")).await.unwrap();
    assert_eq!(
        (workflow.state, workflow.version),
        (WorkflowState::Gate1, 2)
    );
}

/// 32 clients advance one workflow at the same moment: exactly one wins. On SQLite each
/// advance is judged in turn on the workflow as stored, so the others are told the trigger no
/// longer fits the new state — never a version conflict they did not ask for.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn thirty_two_concurrent_advances_have_exactly_one_winner() {
    race_one_workflow(advance("agent_complete"), ErrorCode::InvalidTransition).await;
}

/// The same race, each client naming the version it read: the losers get the version
/// conflict they asked for.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn thirty_two_concurrent_advances_at_one_expected_version_have_one_winner() {
    let request = AdvanceRequest {
        expected_version: Some(1),
        ..advance("agent_complete")
    };
    race_one_workflow(request, ErrorCode::VersionConflict).await;
}

/// 32 clients send `request` for one new workflow at once: exactly one wins, every other is
/// refused with `losers`, and one transition is stored.
async fn race_one_workflow(request: AdvanceRequest, losers: ErrorCode) {
    let app = spawn_app().await;
    app.start_workflow("race").await;
    let winners = race(32, &[losers], |_| {
        let client = app.client.clone();
        let request = request.clone();
        async move { client.advance_workflow(&id("race"), &request).await }
    })
    .await;
    assert_eq!(winners, 1);
    let history = app.client.get_history(&id("race")).await.unwrap();
    assert_eq!(history.transitions.len(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn with_a_token_only_public_endpoints_are_open() {
    let app = spawn_app_with(|c| c.api_token = Some("s3cret".into())).await;
    // The app's client sends the token.
    app.start_workflow("guarded").await;

    let anonymous = orchestrator_client::Client::new(format!("http://{}", app.address)).unwrap();
    let err = anonymous.get_workflow(&id("guarded")).await.unwrap_err();
    assert!(err.is_unauthorized());
    assert_eq!(err.code(), Some(ErrorCode::Unauthorized));

    let wrong = orchestrator_client::Client::builder()
        .base_url(format!("http://{}", app.address))
        .token("s3cres")
        .build()
        .unwrap();
    assert!(wrong.get_summary().await.unwrap_err().is_unauthorized());

    assert!(anonymous.get_health().await.is_ok());
    let http = reqwest::Client::new();
    // The scheme's name in any case, as HTTP reads it.
    let lower = http
        .get(app.url("/workflows/summary"))
        .header("authorization", "bearer s3cret")
        .send()
        .await
        .unwrap();
    assert_eq!(lower.status(), 200);
    for path in ["/metrics", "/openapi.json", "/docs/", "/redoc"] {
        let status = http.get(app.url(path)).send().await.unwrap().status();
        assert_eq!(status, 200, "{path}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn health_and_service_info_report_the_original_fields() {
    let app = spawn_app().await;
    let health = app.client.get_health().await.unwrap();
    assert_eq!(health.version, "0.1.0");
    assert_eq!(health.service, "orchestrator");
    assert_eq!(health.checks["database"].status, "ok");
    let info = app.client.get_service_info().await.unwrap();
    assert_eq!(
        (info.service.as_str(), info.docs.as_str()),
        ("orchestrator", "/docs")
    );
    // Every link it gives leads somewhere.
    for link in [
        &info.docs,
        &info.redoc,
        &info.openapi,
        &info.health,
        &info.board,
        &info.events,
        &info.metrics,
    ] {
        assert!(link.len() > 1 && link.starts_with('/'), "{info:?}");
        let status = reqwest::get(app.url(link)).await.unwrap().status();
        assert_eq!(status, 200, "{link}");
    }

    let raw: serde_json::Value = reqwest::get(app.url("/health"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(raw["status"], "healthy");
    assert!(raw["uptime_seconds"].is_u64());
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_count_requests_transitions_and_workflows() {
    let app = spawn_app().await;
    app.start_workflow("m").await;
    // Sent twice with one key: carried out once, and counted once.
    for _ in 0..2 {
        let answer = reqwest::Client::new()
            .post(app.url("/workflow/m/advance"))
            .header("idempotency-key", "counted-once")
            .json(&json!({"trigger": "agent_complete"}))
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 200);
    }
    let text = app.metrics().await;
    // Server errors show at 0 before the first one, so that it shows as a rise.
    assert!(text.contains(r#"orchestrator_http_requests_total{route="/workflow/{feature_id}/advance",method="POST",status="500"} 0"#), "{text}");
    assert!(text.contains(r#"orchestrator_http_requests_total{route="/workflow/start",method="POST",status="201"} 1"#), "{text}");
    assert!(text.contains(r#"orchestrator_transitions_total{trigger="agent_complete"} 1"#));
    assert!(text.contains(r#"orchestrator_workflows{state="GATE_1"} 1"#));
    assert!(text.contains("orchestrator_http_request_duration_seconds_bucket"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rejection_needs_a_reason_and_the_author_may_not_approve() {
    let app = spawn_app().await;
    app.start_workflow("gate-rules").await;
    let f = id("gate-rules");
    let mut done = AdvanceRequest::new("agent_complete");
    done.actor = Some("spec-agent".into());
    app.client.advance_workflow(&f, &done).await.unwrap();

    // Raw HTTP: the status and the envelope, and nothing changes.
    let post = |body: serde_json::Value| {
        let url = app.url("/workflow/gate-rules/advance");
        async move {
            let response = reqwest::Client::new()
                .post(url)
                .json(&body)
                .send()
                .await
                .unwrap();
            let status = response.status().as_u16();
            (status, response.json::<serde_json::Value>().await.unwrap())
        }
    };
    for body in [
        json!({"trigger": "human_rejected"}),
        json!({"trigger": "human_rejected", "reason": "   "}),
    ] {
        let (status, answer) = post(body).await;
        assert_eq!(status, 400, "{answer}");
        assert_eq!(answer["error"]["code"], "VALIDATION_ERROR");
        assert!(
            answer["error"]["details"][0]
                .as_str()
                .unwrap()
                .starts_with("reason")
        );
    }
    let (status, answer) = post(json!({"trigger": "human_approved", "actor": "spec-agent"})).await;
    assert_eq!(status, 409, "{answer}");
    assert_eq!(answer["error"]["code"], "SELF_APPROVAL");
    let unchanged = app.client.get_workflow(&f).await.unwrap();
    assert_eq!(
        (unchanged.state, unchanged.version),
        (WorkflowState::Gate1, 2)
    );

    // Somebody else decides; a rejection with a reason is recorded with it.
    let (status, _) =
        post(json!({"trigger": "human_rejected", "reason": "add the migration"})).await;
    assert_eq!(status, 200);
    let history = app.client.get_history(&f).await.unwrap().transitions;
    assert_eq!(
        history[2].reason.as_ref().map(|r| r.as_str()),
        Some("add the migration")
    );
    app.client.advance_workflow(&f, &done).await.unwrap();
    let (status, answer) = post(json!({"trigger": "human_approved", "actor": "lead"})).await;
    assert_eq!((status, &answer["state"]), (200, &json!("PHASE_2")));
}

#[tokio::test(flavor = "multi_thread")]
async fn reviewers_approving_at_once_are_each_judged_in_turn_not_refused() {
    let app = spawn_app_with(|c| c.gate_required_approvals = 10).await;
    app.start_workflow("all-hands").await;
    let f = id("all-hands");
    app.client
        .advance_workflow(&f, &AdvanceRequest::new("agent_complete"))
        .await
        .unwrap();
    // The most reviewers a gate may need approve at the same moment, none naming the version
    // it saw: each is judged on the approvals that landed before it, none gets a version
    // conflict (the last may lose to each of the nine others).
    let approvals: Vec<_> = [
        "ann", "bea", "cy", "dee", "eve", "fay", "gus", "hal", "ivy", "jo",
    ]
    .into_iter()
    .map(|actor| {
        let client = app.client.clone();
        let f = f.clone();
        let mut approve = AdvanceRequest::new("human_approved");
        approve.actor = Some(actor.to_owned());
        tokio::spawn(async move { client.advance_workflow(&f, &approve).await })
    })
    .collect();
    for approval in approvals {
        approval.await.unwrap().expect("each approval lands");
    }
    let after = app.client.get_workflow(&f).await.unwrap();
    assert_eq!((after.state, after.version), (WorkflowState::Phase2, 12));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_two_approval_gate_records_each_approval_until_the_second_distinct_one() {
    let app = spawn_app_with(|c| c.gate_required_approvals = 2).await;
    let started = app.start_workflow("two-keys").await;
    assert_eq!(started.gate.required_approvals, 2);
    let f = id("two-keys");
    let mut done = AdvanceRequest::new("agent_complete");
    done.actor = Some("spec-agent".into());
    let at_gate = app.client.advance_workflow(&f, &done).await.unwrap();
    assert!(at_gate.gate.entered_at.is_some());
    assert_eq!(
        serde_json::to_value(&at_gate.gate.blocked_by).unwrap(),
        json!([{"kind": "approvals", "have": 0, "need": 2}])
    );

    let approve = |actor: Option<&str>| {
        let mut request = AdvanceRequest::new("human_approved");
        request.actor = actor.map(str::to_owned);
        request
    };
    // Several approvals are needed, so each must name its actor.
    let unnamed = app
        .client
        .advance_workflow(&f, &approve(None))
        .await
        .unwrap_err();
    assert_eq!(unnamed.code(), Some(ErrorCode::ValidationError));
    let first = app
        .client
        .advance_workflow(&f, &approve(Some("alice")))
        .await
        .unwrap();
    assert_eq!((first.state, first.version), (WorkflowState::Gate1, 3));
    assert_eq!(first.gate.approvals.len(), 1);
    let again = app
        .client
        .advance_workflow(&f, &approve(Some("alice")))
        .await
        .unwrap_err();
    assert_eq!(again.code(), Some(ErrorCode::AlreadyApproved));
    let second = app
        .client
        .advance_workflow(&f, &approve(Some("bo")))
        .await
        .unwrap();
    assert_eq!((second.state, second.version), (WorkflowState::Phase2, 4));
    assert!(second.gate.approvals.is_empty() && second.gate.entered_at.is_none());
    let history = app.client.get_history(&f).await.unwrap().transitions;
    let steps: Vec<_> = history.iter().map(|t| (t.from, t.to)).collect();
    assert_eq!(
        steps[2..],
        [
            (WorkflowState::Gate1, WorkflowState::Gate1),
            (WorkflowState::Gate1, WorkflowState::Phase2)
        ]
    );

    // A start may name its own policy; an override passes whatever is missing, with a reason.
    let mut start = orchestrator_core::api::StartWorkflowRequest::new("three-keys", "urgent");
    start.gate = Some(orchestrator_core::api::GateRequest {
        required_approvals: Some(3),
        ..Default::default()
    });
    let started = app.client.start_workflow(&start).await.unwrap();
    assert_eq!(started.gate.required_approvals, 3);
    app.client
        .advance_workflow(&id("three-keys"), &done)
        .await
        .unwrap();
    let mut override_ = approve(Some("cto"));
    override_.override_gate = Some(true);
    let refused = app
        .client
        .advance_workflow(&id("three-keys"), &override_)
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Some(ErrorCode::ValidationError));
    override_.reason = Some("release blocker".into());
    let passed = app
        .client
        .advance_workflow(&id("three-keys"), &override_)
        .await
        .unwrap();
    assert_eq!(passed.state, WorkflowState::Phase2);
    let last = last_entry(&app.client, &id("three-keys")).await;
    assert!(last.override_gate);

    let mut bad = orchestrator_core::api::StartWorkflowRequest::new("eleven-keys", "x");
    bad.gate = Some(orchestrator_core::api::GateRequest {
        required_approvals: Some(11),
        ..Default::default()
    });
    let refused = app.client.start_workflow(&bad).await.unwrap_err();
    assert_eq!(refused.code(), Some(ErrorCode::ValidationError));
    bad.gate = Some(orchestrator_core::api::GateRequest {
        required_approvals: Some(2_147_483_646),
        ..Default::default()
    });
    let refused = app.client.start_workflow(&bad).await.unwrap_err();
    assert_eq!(
        refused.code(),
        Some(ErrorCode::ValidationError),
        "{refused}"
    );
}

/// A name is the same person with white space around it or in another case: the author cannot
/// approve as `"spec-agent "` or `"Spec-Agent"`, and an approver cannot count twice as
/// `" alice"` or `"ALICE"`; a name with an invisible character in it is refused.
#[tokio::test(flavor = "multi_thread")]
async fn white_space_around_a_name_does_not_make_another_person() {
    let app = spawn_app_with(|c| c.gate_required_approvals = 2).await;
    app.start_workflow("padded").await;
    let f = id("padded");
    let by = |trigger: &str, actor: &str| {
        let mut request = AdvanceRequest::new(trigger);
        request.actor = Some(actor.to_owned());
        request
    };
    let at_gate = app
        .client
        .advance_workflow(&f, &by("agent_complete", "spec-agent"))
        .await
        .unwrap();
    assert_eq!(at_gate.state, WorkflowState::Gate1);
    let own = app
        .client
        .advance_workflow(&f, &by("human_approved", "spec-agent\u{3000}"))
        .await
        .unwrap_err();
    assert_eq!(own.code(), Some(ErrorCode::SelfApproval), "{own}");
    let cased = app
        .client
        .advance_workflow(&f, &by("human_approved", "Spec-Agent"))
        .await
        .unwrap_err();
    assert_eq!(cased.code(), Some(ErrorCode::SelfApproval), "{cased}");
    let hidden = app
        .client
        .advance_workflow(&f, &by("human_approved", "spec-agent\u{200b}"))
        .await
        .unwrap_err();
    assert_eq!(hidden.code(), Some(ErrorCode::ValidationError), "{hidden}");
    assert!(hidden.to_string().contains("invisible"), "{hidden}");
    let first = app
        .client
        .advance_workflow(&f, &by("human_approved", "alice"))
        .await
        .unwrap();
    assert_eq!(first.gate.approvals[0].actor.as_str(), "alice");
    let twice = app
        .client
        .advance_workflow(&f, &by("human_approved", " alice "))
        .await
        .unwrap_err();
    assert_eq!(twice.code(), Some(ErrorCode::AlreadyApproved), "{twice}");
    let shouted = app
        .client
        .advance_workflow(&f, &by("human_approved", "ALICE"))
        .await
        .unwrap_err();
    assert_eq!(
        shouted.code(),
        Some(ErrorCode::AlreadyApproved),
        "{shouted}"
    );
    let history = app.client.get_history(&f).await.unwrap().transitions;
    assert_eq!(history.len(), 3, "nothing recorded for the refusals");
}
