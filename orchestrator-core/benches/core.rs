//! Micro-benchmarks of the core's hot path: judging a trigger, folding a transition, rebuilding
//! from history, and encoding and decoding the wire types.
//!
//! `cargo bench -p orchestrator-core` (results in `docs/PERFORMANCE.md`).

use std::hint::black_box;

use chrono::{Duration, TimeZone, Utc};
use criterion::{Criterion, criterion_group, criterion_main};
use orchestrator_core::api::{AdvanceRequest, WorkflowResponse};
use orchestrator_core::{
    Advance, Description, FeatureId, Metadata, Transition, TransitionContext, Trigger, Workflow,
};

fn started() -> (Workflow, Transition) {
    Workflow::start(
        FeatureId::parse("008-services-architecture").unwrap(),
        Description::parse("Refactor to microservices").unwrap(),
        Metadata::default(),
        TransitionContext::at(Utc.with_ymd_and_hms(2026, 11, 24, 10, 0, 0).unwrap()),
    )
}

fn rules(c: &mut Criterion) {
    let (workflow, first) = started();
    let at = workflow.updated_at() + Duration::seconds(30);

    c.bench_function("apply (accepted)", |b| {
        b.iter(|| black_box(&workflow).apply(Trigger::AgentComplete, TransitionContext::at(at)))
    });
    c.bench_function("apply (refused)", |b| {
        b.iter(|| black_box(&workflow).apply(Trigger::HumanApproved, TransitionContext::at(at)))
    });
    let transition = workflow
        .apply(Trigger::AgentComplete, TransitionContext::at(at))
        .unwrap();
    c.bench_function("apply + record", |b| {
        b.iter(|| {
            let mut next = black_box(&workflow).clone();
            next.record(black_box(&transition));
            next
        })
    });

    let mut history = vec![first];
    let mut current = workflow.clone();
    for n in 0..100 {
        let trigger = if n % 2 == 0 {
            Trigger::AgentComplete
        } else {
            Trigger::HumanRejected
        };
        let t = current
            .apply(
                trigger,
                TransitionContext {
                    reason: orchestrator_core::Reason::parse("rework").ok(),
                    ..TransitionContext::at(at + Duration::seconds(n))
                },
            )
            .unwrap();
        current.record(&t);
        history.push(t);
    }
    c.bench_function("replay 101 transitions", |b| {
        b.iter(|| {
            Workflow::replay(
                workflow.feature_id().clone(),
                workflow.description().clone(),
                workflow.metadata().clone(),
                black_box(&history),
            )
        })
    });
}

fn wire(c: &mut Criterion) {
    let (workflow, _) = started();
    let now = workflow.updated_at() + Duration::seconds(12);
    let response = WorkflowResponse::new(&workflow, now);
    c.bench_function("encode WorkflowResponse", |b| {
        b.iter(|| serde_json::to_vec(black_box(&response)))
    });
    let encoded = serde_json::to_vec(&response).unwrap();
    c.bench_function("decode WorkflowResponse", |b| {
        b.iter(|| serde_json::from_slice::<WorkflowResponse>(black_box(&encoded)))
    });
    let body = br#"{"trigger":"agent_complete","actor":"spec-agent","reason":"plan written"}"#;
    c.bench_function("decode + validate AdvanceRequest", |b| {
        b.iter(|| {
            let request: AdvanceRequest = serde_json::from_slice(black_box(body)).unwrap();
            Advance::try_from(request)
        })
    });
}

criterion_group!(benches, rules, wire);
criterion_main!(benches);
