//! Table definitions, as `diesel print-schema` writes them (see `storage/README.md`).
//! Portable SQL types only, so one schema serves every back end.

diesel::table! {
    /// One row per feature: the current snapshot.
    workflows (feature_id) {
        /// The feature id.
        feature_id -> Text,
        /// What the feature is.
        description -> Text,
        /// JSON object given at start.
        metadata -> Text,
        /// Wire name of the state.
        state -> Text,
        /// Number of accepted transitions.
        version -> BigInt,
        /// `human_rejected` transitions.
        rework_count -> BigInt,
        /// JSON object: state → whole seconds in closed stays.
        time_in_state -> Text,
        /// Unix microseconds.
        created_at -> BigInt,
        /// Unix microseconds.
        updated_at -> BigInt,
        /// Unix microseconds.
        completed_at -> Nullable<BigInt>,
        /// The Agent Hub session of the workflow's consultations.
        hub_session_id -> Nullable<Text>,
        /// JSON: the gate policy, fixed at start.
        gate_policy -> Text,
        /// JSON: the current stay at GATE_1.
        gate_stay -> Nullable<Text>,
        /// Unix microseconds: when the current stay at GATE_1 is due.
        gate_due_at -> Nullable<BigInt>,
    }
}

diesel::table! {
    /// One row per stay at GATE_1 seen past its deadline.
    gate_overdue_notes (feature_id, due_at) {
        /// The workflow.
        feature_id -> Text,
        /// Unix microseconds: when the stay was due.
        due_at -> BigInt,
        /// Unix microseconds: when the deadline was seen passed.
        noted_at -> BigInt,
        /// flag, reject or cancel: what the policy did.
        on_expiry -> Text,
    }
}

diesel::table! {
    /// One row per accepted transition.
    transitions (feature_id, seq) {
        /// The feature id.
        feature_id -> Text,
        /// 1, 2, 3…
        seq -> BigInt,
        /// Wire name of the state before.
        from_state -> Text,
        /// Wire name of the state after.
        to_state -> Text,
        /// Wire name of the trigger.
        trigger -> Text,
        /// Who.
        actor -> Nullable<Text>,
        /// Why.
        reason -> Nullable<Text>,
        /// JSON object.
        metadata -> Text,
        /// Unix microseconds.
        at -> BigInt,
        /// human, agent or system, when known.
        actor_kind -> Nullable<Text>,
        /// Whom the actor acted for.
        on_behalf_of -> Nullable<Text>,
        /// Whether an admin passed the gate with this entry, whatever was missing.
        gate_override -> Bool,
        /// The `workflow.transitioned` event written with the entry (NULL if it was
        /// imported without one).
        event_id -> Nullable<BigInt>,
    }
}

diesel::table! {
    /// One row per question asked of the Agent Hub.
    consultations (id) {
        /// UUID.
        id -> Text,
        /// The asking workflow.
        feature_id -> Text,
        /// Expert area.
        topic -> Text,
        /// The question.
        question -> Text,
        /// Extra context sent.
        context -> Nullable<Text>,
        /// The expert's (possibly tentative) answer.
        answer -> Text,
        /// The expert's reasoning.
        rationale -> Nullable<Text>,
        /// 0–100.
        confidence -> BigInt,
        /// asking, resolved, pending_human, needs_reroute or failed.
        status -> Text,
        /// The hub's escalation id.
        escalation_id -> Nullable<Text>,
        /// The answer that stands.
        final_answer -> Nullable<Text>,
        /// confirm, correct or add_context.
        human_action -> Nullable<Text>,
        /// The human's correction or context.
        human_response -> Nullable<Text>,
        /// Wire name of the workflow's state when asked.
        asked_in_state -> Text,
        /// Unix microseconds.
        created_at -> BigInt,
        /// Unix microseconds.
        updated_at -> BigInt,
        /// JSON list: why the expert was unsure.
        uncertainty_reasons -> Text,
        /// Who answered the escalation.
        human_responder -> Nullable<Text>,
        /// Unix microseconds: when the escalation was answered.
        resolved_at -> Nullable<BigInt>,
        /// False while the row is a reservation no reader sees.
        visible -> Bool,
        /// Why a failed ask failed: a short code.
        error_code -> Nullable<Text>,
        /// Why a failed ask failed, in words.
        error_message -> Nullable<Text>,
    }
}

diesel::table! {
    /// One row per idempotency key and scope.
    idempotency_keys (scope, name) {
        /// The principal's name, or `*` without principals.
        scope -> Text,
        /// The key.
        name -> Text,
        /// SHA-256 (hex) of the request's method, path and body.
        fingerprint -> Text,
        /// The stored answer; NULL while the first request is being answered.
        answer -> Nullable<Text>,
        /// Unix microseconds: when the key was first claimed.
        created_at -> BigInt,
        /// Unix microseconds: until when an unanswered key is held by its request.
        lease_until -> BigInt,
    }
}

diesel::table! {
    /// One row: the event log's last id and how far retention deleted.
    event_log (id) {
        /// Always 1.
        id -> Integer,
        /// The newest event's id (0: none yet).
        last_id -> BigInt,
        /// Every event up to this id was deleted by retention.
        purged_through -> BigInt,
    }
}

diesel::table! {
    /// One row per event, numbered in commit order.
    events (id) {
        /// 1, 2, 3…
        id -> BigInt,
        /// workflow.transitioned, gate.overdue, consultation.created or consultation.updated.
        event_type -> Text,
        /// The workflow.
        subject -> Text,
        /// Unix microseconds of the change.
        time -> BigInt,
        /// The CloudEvent's `data`, JSON; empty for a `workflow.transitioned` event, whose
        /// data is rebuilt from its history entry.
        data -> Text,
        /// A `workflow.transitioned` event's history entry (with `subject`).
        seq -> Nullable<BigInt>,
    }
}

diesel::table! {
    /// One row, rewritten by health checks and at start-up to prove that writes succeed.
    storage_probe (id) {
        /// Always 1.
        id -> Integer,
        /// Unix microseconds of the last probe.
        at -> BigInt,
    }
}

diesel::table! {
    /// Signed-in browsers of the reviewer board.
    board_sessions (id_sha256) {
        /// SHA-256 (hex) of the cookie's session id.
        id_sha256 -> Text,
        /// Who the session acts as.
        actor -> Text,
        /// What signed it in: `principal:`/`shared:` and a token's SHA-256, or `open`.
        credential -> Text,
        /// The token the page sends back with its writes.
        csrf -> Text,
        /// Unix microseconds.
        created_at -> BigInt,
        /// Unix microseconds: the session ends then.
        expires_at -> BigInt,
    }
}

diesel::table! {
    /// Where events are POSTed.
    webhooks (id) {
        /// `wh_` and 32 hex digits.
        id -> Text,
        /// The target URL.
        url -> Text,
        /// Space-separated event types; empty: every type.
        event_types -> Text,
        /// Free text.
        description -> Nullable<Text>,
        /// `whsec_…`, the signing key.
        secret -> Text,
        /// Unix microseconds.
        created_at -> BigInt,
        /// The last event turned into this webhook's deliveries.
        enqueued_through -> BigInt,
        /// Being deleted: passed over by every read, enqueue and claim.
        deleted -> Bool,
    }
}

diesel::table! {
    /// One event sent to one webhook.
    webhook_deliveries (id) {
        /// `msg_` and 32 hex digits: the `webhook-id` header.
        id -> Text,
        /// The webhook.
        webhook_id -> Text,
        /// The event.
        event_id -> BigInt,
        /// Its type.
        event_type -> Text,
        /// The CloudEvent JSON that is POSTed.
        payload -> Text,
        /// pending, delivered or failed.
        status -> Text,
        /// Attempts made.
        attempts -> Integer,
        /// The last attempt's HTTP status.
        last_status_code -> Nullable<Integer>,
        /// Why the last attempt failed.
        last_error -> Nullable<Text>,
        /// Unix microseconds: when it is attempted next.
        next_attempt_at -> Nullable<BigInt>,
        /// Unix microseconds: when a 2xx arrived.
        delivered_at -> Nullable<BigInt>,
        /// Unix microseconds: a replica is attempting it until then.
        lease_until -> Nullable<BigInt>,
        /// Unix microseconds.
        created_at -> BigInt,
        /// Attempts made before the retry schedule last started (at a redelivery).
        schedule_from -> Integer,
        /// How many times it was redelivered.
        redeliveries -> Integer,
    }
}

diesel::joinable!(transitions -> workflows (feature_id));
diesel::joinable!(webhook_deliveries -> webhooks (webhook_id));
diesel::joinable!(consultations -> workflows (feature_id));
diesel::joinable!(gate_overdue_notes -> workflows (feature_id));
diesel::allow_tables_to_appear_in_same_query!(
    board_sessions,
    consultations,
    event_log,
    events,
    gate_overdue_notes,
    idempotency_keys,
    storage_probe,
    transitions,
    webhook_deliveries,
    webhooks,
    workflows
);
