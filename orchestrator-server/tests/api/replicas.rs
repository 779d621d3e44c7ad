//! Two server replicas on one PostgreSQL database (when `TEST_DATABASE_URL` is set): what one
//! writes the other sees at once, and races across them have exactly one winner.

use orchestrator_core::WorkflowState;
use orchestrator_core::api::{AdvanceRequest, ErrorCode, GateRequest, StartWorkflowRequest};
use orchestrator_server::storage::DatabaseUrl;

use crate::helpers::{TestApp, id, race, spawn_app_with};
use crate::postgres::TestDatabase;

async fn replicas() -> Option<(TestDatabase, TestApp, TestApp)> {
    let db = TestDatabase::create().await?;
    let url = DatabaseUrl::Postgres(db.url.clone());
    // Both start (and migrate) at the same time.
    let (a, b) = tokio::join!(
        spawn_app_with(|c| c.database_url = url.clone()),
        spawn_app_with(|c| c.database_url = url.clone()),
    );
    Some((db, a, b))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_workflow_started_on_one_replica_is_visible_on_the_other() {
    let Some((_db, a, b)) = replicas().await else {
        return;
    };
    let started = a.start_workflow("shared").await;
    let seen = b.client.get_workflow(&id("shared")).await.unwrap();
    assert_eq!(seen.version, started.version);
    b.client
        .advance_workflow(&id("shared"), &AdvanceRequest::new("agent_complete"))
        .await
        .unwrap();
    assert_eq!(
        a.client.get_workflow(&id("shared")).await.unwrap().version,
        2
    );
    assert_eq!(a.client.get_summary().await.unwrap().total, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_duplicate_start_is_refused_across_replicas() {
    let Some((_db, a, b)) = replicas().await else {
        return;
    };
    a.start_workflow("once").await;
    let err = b
        .client
        .start_workflow(&StartWorkflowRequest::new("once", "again"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::WorkflowAlreadyExists));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_starts_of_one_feature_across_replicas_create_it_once() {
    let Some((_db, a, b)) = replicas().await else {
        return;
    };
    let created = race(16, &[ErrorCode::WorkflowAlreadyExists], |n| {
        let client = if n % 2 == 0 {
            a.client.clone()
        } else {
            b.client.clone()
        };
        async move {
            client
                .start_workflow(&StartWorkflowRequest::new("born-once", "x"))
                .await
        }
    })
    .await;
    assert_eq!(created, 1);
    assert_eq!(
        a.client
            .get_history(&id("born-once"))
            .await
            .unwrap()
            .transitions
            .len(),
        1
    );
}

/// 32 clients, half on each replica, advance one workflow at once, ten rounds in a row.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn thirty_two_concurrent_advances_across_replicas_have_one_winner() {
    let Some((_db, a, b)) = replicas().await else {
        return;
    };
    a.start_workflow("contested").await;
    let rounds = ["agent_complete", "human_rejected"].repeat(5);
    for (round, trigger) in rounds.iter().enumerate() {
        let winners = race(
            32,
            &[ErrorCode::VersionConflict, ErrorCode::InvalidTransition],
            |n| {
                let client = if n % 2 == 0 {
                    a.client.clone()
                } else {
                    b.client.clone()
                };
                let request = crate::helpers::step(trigger);
                async move { client.advance_workflow(&id("contested"), &request).await }
            },
        )
        .await;
        assert_eq!(winners, 1, "round {round}");
    }
    let history = b.client.get_history(&id("contested")).await.unwrap();
    assert_eq!(history.transitions.len(), rounds.len() + 1);
    for (index, entry) in history.transitions.iter().enumerate() {
        assert_eq!(entry.seq, index as u64 + 1);
    }
    for pair in history.transitions.windows(2) {
        assert_eq!(pair[0].to, pair[1].from);
    }
}

/// One keyed request sent many times at once to both replicas (a client retrying through a
/// proxy): it is carried out once; every other copy gets its kept answer or is told the key
/// is in use, never a second change.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_key_sent_to_both_replicas_at_once_is_carried_out_once() {
    let Some((_db, a, b)) = replicas().await else {
        return;
    };
    a.start_workflow("keyed").await;
    let http = reqwest::Client::new();
    let sends = (0..16).map(|n| {
        let url = if n % 2 == 0 { &a } else { &b }.url("/workflow/keyed/advance");
        let http = http.clone();
        async move {
            let answer = http
                .post(url)
                .header("idempotency-key", "one-key-both-replicas")
                .json(&serde_json::json!({"trigger": "agent_complete"}))
                .send()
                .await
                .unwrap();
            let replayed = answer.headers().contains_key("idempotent-replayed");
            let status = answer.status().as_u16();
            let body: serde_json::Value = answer.json().await.unwrap();
            (status, replayed, body)
        }
    });
    let answers = futures_util::future::join_all(sends).await;
    let mut carried_out = 0;
    for (status, replayed, body) in &answers {
        match (status, replayed) {
            (200, false) => carried_out += 1,
            (200, true) => assert_eq!(body["version"], 2, "{body}"),
            (409, _) => assert_eq!(body["error"]["code"], "IDEMPOTENCY_KEY_IN_USE", "{body}"),
            _ => panic!("{status}: {body}"),
        }
    }
    assert_eq!(carried_out, 1, "{answers:?}");
    let history = b.client.get_history(&id("keyed")).await.unwrap();
    assert_eq!(history.transitions.len(), 2, "advanced once");
}

/// Reviewers approving one gate at once on both replicas, none naming the version it saw:
/// each approval is judged on those that landed before it (on either replica), so a gate of
/// three passes with three distinct people and the others are told it moved on; one reviewer
/// approving on both replicas at the same moment is counted once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn approvals_racing_across_replicas_count_each_person_once() {
    let Some((_db, a, b)) = replicas().await else {
        return;
    };
    for round in 0..4 {
        let feature = format!("quorum-{round}");
        let mut start = StartWorkflowRequest::new(feature.as_str(), "x");
        start.gate = Some(GateRequest {
            required_approvals: Some(3),
            ..GateRequest::default()
        });
        a.client.start_workflow(&start).await.unwrap();
        let f = id(&feature);
        b.client
            .advance_workflow(&f, &AdvanceRequest::new("agent_complete"))
            .await
            .unwrap();
        // Six reviewers, alternating replicas, and "ann" on both.
        let people = ["ann", "ann", "bea", "cy", "dee", "eve", "fay"];
        let approvals: Vec<_> = people
            .iter()
            .enumerate()
            .map(|(n, person)| {
                let client = if n % 2 == 0 { &a } else { &b }.client.clone();
                let mut approve = AdvanceRequest::new("human_approved");
                approve.actor = Some((*person).to_owned());
                let f = f.clone();
                tokio::spawn(async move { client.advance_workflow(&f, &approve).await })
            })
            .collect();
        let mut landed = 0;
        for approval in approvals {
            match approval.await.unwrap() {
                Ok(_) => landed += 1,
                Err(e) => assert!(
                    matches!(
                        e.code(),
                        Some(ErrorCode::AlreadyApproved | ErrorCode::InvalidTransition)
                    ),
                    "{feature}: {e}"
                ),
            }
        }
        assert_eq!(landed, 3, "{feature}");
        let history = a.client.get_history(&f).await.unwrap().transitions;
        let steps: Vec<_> = history[2..].iter().map(|t| (t.from, t.to)).collect();
        assert_eq!(
            steps,
            [
                (WorkflowState::Gate1, WorkflowState::Gate1),
                (WorkflowState::Gate1, WorkflowState::Gate1),
                (WorkflowState::Gate1, WorkflowState::Phase2),
            ],
            "{feature}"
        );
        let mut approvers: Vec<_> = history[2..]
            .iter()
            .map(|t| t.actor.as_ref().map(|a| a.as_str().to_owned()))
            .collect();
        approvers.sort();
        approvers.dedup();
        assert_eq!(approvers.len(), 3, "three distinct people: {approvers:?}");
    }
}

/// Advances judged again after losing their compare-and-set.
const REJUDGED: &str = "orchestrator_db_advances_rejudged_total";

/// Each replica remembers the rows it wrote, to judge its next advance of them without a
/// read; advances that alternate between replicas must still each be judged on the stored
/// workflow. Replica `a` remembers each workflow as it started it (PHASE_1, version 1).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn advances_alternating_between_replicas_are_judged_on_the_stored_workflow() {
    let Some((_db, a, b)) = replicas().await else {
        return;
    };
    let advance = async |app: &TestApp, feature: &str, trigger: &str| {
        app.client
            .advance_workflow(&id(feature), &crate::helpers::step(trigger))
            .await
            .unwrap_or_else(|e| panic!("{trigger} of {feature}: {e}"))
    };

    // After `b` moves it to the gate, `a`'s remembered row would refuse `human_rejected`
    // (not allowed in PHASE_1): a refusal is judged again on the row as read.
    a.start_workflow("refused-on-memory").await;
    advance(&b, "refused-on-memory", "agent_complete").await;
    let back = advance(&a, "refused-on-memory", "human_rejected").await;
    assert_eq!((back.state, back.version), (WorkflowState::Phase1, 3));

    // After `b` moves it to the gate and back (PHASE_1 again, version 3), `a`'s row from
    // version 1 would accept `agent_complete`: the compare-and-set catches it, and the
    // advance is judged again on the row as read.
    a.start_workflow("accepted-on-memory").await;
    advance(&b, "accepted-on-memory", "agent_complete").await;
    advance(&b, "accepted-on-memory", "human_rejected").await;
    let on = advance(&a, "accepted-on-memory", "agent_complete").await;
    assert_eq!((on.state, on.version), (WorkflowState::Gate1, 4));
    assert_eq!(
        a.metric(REJUDGED).await,
        1.0,
        "the stale remembered row lost its compare-and-set once"
    );
    // From now on `a` reads the workflow before each advance: after `b` moves it back and to
    // the gate again, the row `a` wrote at version 4 (at the gate too) would accept
    // `human_rejected` and lose; it is not judged on, so nothing is judged again.
    advance(&b, "accepted-on-memory", "human_rejected").await;
    advance(&b, "accepted-on-memory", "agent_complete").await;
    let last = advance(&a, "accepted-on-memory", "human_rejected").await;
    assert_eq!((last.state, last.version), (WorkflowState::Phase1, 7));
    assert_eq!(
        a.metric(REJUDGED).await,
        1.0,
        "a workflow found stale once is read, not judged on memory"
    );

    for feature in ["refused-on-memory", "accepted-on-memory"] {
        let history = b.client.get_history(&id(feature)).await.unwrap();
        for pair in history.transitions.windows(2) {
            assert_eq!(pair[0].to, pair[1].from);
            assert_eq!(pair[0].seq + 1, pair[1].seq);
        }
    }
}

/// Random advances through both replicas at once are answered as they were stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn random_advances_across_replicas_are_answered_as_stored() {
    let Some((_db, a, b)) = replicas().await else {
        return;
    };
    crate::helpers::advance_at_random(&a, &b).await;
}
