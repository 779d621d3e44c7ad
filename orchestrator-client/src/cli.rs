//! The `orchestrator` command-line tool: every endpoint as a subcommand, for humans and
//! scripts. Answers are printed as pretty JSON on standard output (`gates` and `watch` print
//! a line per item, or JSON with `--json`; `metrics` the Prometheus text); a refusal prints
//! the server's error envelope on standard error.
//!
//! Exit codes: 0 success, 1 the server refused (4xx/5xx with an error body), 2 bad usage,
//! 3 the server could not be reached or answered something unreadable (or the answer could
//! not be written out), 4 `health` found the server unhealthy (its answer is printed all the
//! same); a write stopped by Ctrl-C (SIGTERM) before its answer came says its key, then ends
//! by the signal (a shell's 130, 143).

use std::io::{IsTerminal, Read, Write};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use orchestrator_core::api::{
    AdvanceRequest, ApiErrorBody, ConsultRequest, ErrorCode, ErrorEnvelope, GateRequest,
    ListWorkflowsParams, RespondRequest, StartWorkflowRequest, WorkflowResponse,
};
use orchestrator_core::api::{CloudEvent, CreateWebhookRequest, DeliveriesQuery, EventsQuery};
use orchestrator_core::consultation::ConsultationStatus;
use orchestrator_core::gate::{MAX_DUE_SECONDS, MAX_REQUIRED_APPROVALS};
use orchestrator_core::webhook::DeliveryStatus;
use orchestrator_core::{Actor, EventType, FeatureId, PageLimit, Trigger, WorkflowState};
use serde::Serialize;

use crate::{Client, ClientError};

const AFTER_HELP: &str = "\
Exit codes:
  0  done (health: healthy or degraded)
  1  the server refused; its error envelope is printed on standard error
  2  bad usage
  3  the server could not be reached, or answered something unreadable (or the answer
     could not be written, or `watch`'s stream sent what it cannot read)
  4  health: the server is unhealthy (its answer is printed)
  130  a write stopped by Ctrl-C (143: by SIGTERM) before its answer came; it tells its
     key, as below (any other command ends at once, as the signal ends a program)

--timeout: a call is tried up to three times (after a timeout, a dropped or refused
  connection, or a 503 that is not the Agent Hub's), so a server that never answers takes
  about three times --timeout (where nothing takes the connection, each try gives up after
  10 s at most; but a write the server says an earlier attempt of is still
  being carried out is asked about until that attempt's answer comes: up to the server's
  request bound plus 5 s, 10 minutes at most); `health` is tried once, and `watch` waits on
  its stream as long as it runs, --timeout aside: a minute for the stream to open, then it
  reconnects after four of the server's heartbeats of silence, a minute at least. Against a
  server whose request bound is raised (REQUEST_TIMEOUT_SECONDS, or a longer
  AGENT_HUB_WAIT_SECONDS), give `ask` at least that.

A text given as `-` (a description, --reason, --metadata, a question, --context,
  --response, a webhook's --description) is read from standard input, its last line end
  dropped: a long text needs no quoting. One text per run may be read so.

--idempotency-key: for writes only (start, advance, approve, reject, consult, respond,
  webhooks add and redeliver); running the same command again with the same key, even after
  the first run was cut off, gets the first answer back and changes nothing more (for 24
  hours): the answer as it was then, so read the workflow (`get`) for its state now.
  1-255 printable ASCII characters (spaces inside only). Default: a new key per run,
  told on stderr when the run ends without knowing whether the change was made (no answer,
  exit 3; a 5xx or the key still in use, exit 1; stopped by Ctrl-C, exit 130) so it can be
  run again, and when its answer could not be written out (exit 3), to have it shown again.

Examples:
  orchestrator start 042-payment-retries \"Retry failed card payments\"
  orchestrator advance 042-payment-retries agent_complete --actor spec-agent --expected-version 1
  orchestrator list --state GATE_1 --all
  orchestrator gates --actor alice
  orchestrator events --after 40 --type gate.overdue
  ORCHESTRATOR_TOKEN=$ALICE_TOKEN orchestrator approve 042-payment-retries
  orchestrator reject 042-payment-retries --reason \"retries must back off\"
  orchestrator reject 042-payment-retries --reason - < review-notes.md
  orchestrator ask 042-payment-retries testing \"Which failure modes must the tests cover?\"
  orchestrator respond 042-payment-retries <consultation id> confirm --actor qa-lead
  orchestrator webhooks add https://example.com/orchestrator --type gate.overdue
  orchestrator health || echo \"not healthy\"
  orchestrator info
  orchestrator metrics | grep orchestrator_workflows";

/// `orchestrator webhooks …`.
#[derive(Debug, Subcommand)]
pub enum WebhookCommand {
    /// Subscribe a URL to events; prints the webhook with its secret (shown only now).
    Add {
        /// Where events are POSTed (absolute http or https), given as the positional
        /// argument: `--url` is the server's address.
        // Its own id and name: `url` and `<URL>` are the global --url's, and an error that
        // named both `<URL>` read as if `--url` were the target.
        #[arg(id = "receiver", value_name = "TARGET_URL")]
        url: String,
        /// Only these types (repeat, or separate by commas); default: every type.
        #[arg(long = "type", value_delimiter = ',', value_parser = event_type)]
        types: Vec<String>,
        /// Free text for people.
        #[arg(long)]
        description: Option<String>,
    },
    /// List every webhook.
    List,
    /// Show one webhook.
    Get {
        /// The webhook's id.
        #[arg(value_parser = an_id)]
        id: String,
    },
    /// Delete a webhook and its deliveries.
    Delete {
        /// The webhook's id.
        #[arg(value_parser = an_id)]
        id: String,
    },
    /// A page of a webhook's deliveries, newest event first.
    Deliveries {
        /// The webhook's id.
        #[arg(value_parser = an_id)]
        id: String,
        /// Only pending, delivered or failed ones.
        #[arg(long, value_parser = |v: &str| DeliveryStatus::parse(v)
            .ok_or_else(|| "one of pending, delivered, failed".to_owned()))]
        status: Option<DeliveryStatus>,
        /// Page size, 1–500.
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=i64::from(PageLimit::MAX)))]
        limit: Option<u32>,
        /// `next_cursor` of the previous page.
        #[arg(long)]
        cursor: Option<String>,
    },
    /// Attempt a delivery again now (same webhook-id).
    Redeliver {
        /// The webhook's id.
        #[arg(value_parser = an_id)]
        id: String,
        /// The delivery's id.
        #[arg(value_parser = an_id)]
        delivery_id: String,
    },
}

/// Drive an orchestrator server from the command line.
#[derive(Parser)]
#[command(name = "orchestrator", version, after_help = AFTER_HELP)]
pub struct Cli {
    /// The server's base URL.
    #[arg(
        long,
        global = true,
        help_heading = "Global options",
        env = "ORCHESTRATOR_URL",
        default_value = "http://localhost:8000",
        // A URL may carry a password: `--help` does not print the variable's value.
        hide_env_values = true
    )]
    pub url: String,
    /// Bearer token: a principal's (principals mode) or the server's ORCHESTRATOR_API_TOKEN.
    /// Read from ORCHESTRATOR_TOKEN, else ORCHESTRATOR_API_TOKEN, when not given (an empty one
    /// counts as not given).
    #[arg(
        long,
        global = true,
        help_heading = "Global options",
        env = "ORCHESTRATOR_TOKEN",
        hide_env_values = true
    )]
    pub token: Option<String>,
    /// Seconds to wait for each attempt's answer (a call is tried up to three times;
    /// `orchestrator --help` says more).
    #[arg(long, global = true, help_heading = "Global options", default_value_t = 60,
          value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub timeout: u64,
    /// The Idempotency-Key a write sends: run again with the same key, it gets the first answer
    /// back and changes nothing more (`orchestrator --help` says more).
    #[arg(long, global = true, help_heading = "Global options", value_parser = idempotency_key)]
    pub idempotency_key: Option<String>,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

impl std::fmt::Debug for Cli {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cli")
            .field("url", &crate::url_shown(&self.url))
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("timeout", &self.timeout)
            .field("idempotency_key", &self.idempotency_key)
            .field("command", &self.command)
            .finish()
    }
}

/// One endpoint each.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Start a feature's workflow.
    Start {
        /// The feature id, e.g. 008-services-architecture.
        feature_id: String,
        /// What the feature is.
        description: String,
        /// A JSON object kept with the workflow.
        #[arg(long)]
        metadata: Option<String>,
        /// Return the existing workflow instead of failing when the feature exists.
        #[arg(long)]
        use_existing: bool,
        /// Distinct approvals its gate needs, 1–10 (default: the server's).
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..=u64::from(MAX_REQUIRED_APPROVALS)))]
        required_approvals: Option<u64>,
        /// Seconds a stay at its gate may last before it is overdue, 1–31536000 (default: the
        /// server's).
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..=u64::from(MAX_DUE_SECONDS)))]
        due_in_seconds: Option<u64>,
        /// What happens past the deadline: flag, reject or cancel (default flag).
        #[arg(long, value_parser = ["flag", "reject", "cancel"])]
        on_expiry: Option<String>,
        /// Let whoever completed the work approve it.
        #[arg(long)]
        allow_self_approval: bool,
    },
    /// Show a workflow.
    Get {
        /// The feature id.
        feature_id: String,
    },
    /// Approve a feature at its gate (`human_approved`): as the token's principal with a
    /// principals file, else as --actor (without it the approval names nobody: the rule that
    /// whoever completed the work may not approve it cannot apply, and a gate that needs more
    /// than one approval refuses it, 400).
    Approve {
        /// The feature id.
        feature_id: String,
        /// Who approves (without principals; with them, whom the principal acts for).
        #[arg(long)]
        actor: Option<String>,
        /// human or agent: taken without principals; with them the token's principal's kind
        /// counts, and agent is refused either way (an agent may not approve).
        #[arg(long, value_parser = ["human", "agent"])]
        actor_kind: Option<String>,
        /// Why, kept with the history entry (required with --override).
        #[arg(long)]
        reason: Option<String>,
        /// Pass the gate whatever is missing (admins only; needs --reason).
        #[arg(long = "override", requires = "reason")]
        override_gate: bool,
        /// A JSON object kept with the history entry.
        #[arg(long)]
        metadata: Option<String>,
        /// Only if the workflow is at this version.
        #[arg(long)]
        expected_version: Option<u64>,
    },
    /// Send a feature back from its gate to PHASE_1 (`human_rejected`), saying why.
    Reject {
        /// The feature id.
        feature_id: String,
        /// What must change.
        #[arg(long)]
        reason: String,
        /// Who rejects (without principals; with them, whom the principal acts for).
        #[arg(long)]
        actor: Option<String>,
        /// human or agent: taken without principals; with them the token's principal's kind
        /// counts, and agent is refused either way (an agent may not reject).
        #[arg(long, value_parser = ["human", "agent"])]
        actor_kind: Option<String>,
        /// A JSON object kept with the history entry.
        #[arg(long)]
        metadata: Option<String>,
        /// Only if the workflow is at this version.
        #[arg(long)]
        expected_version: Option<u64>,
    },
    /// Apply a trigger: start, agent_complete, human_approved, human_rejected or cancel.
    Advance {
        /// The feature id.
        feature_id: String,
        /// The trigger: start, agent_complete, human_approved, human_rejected or cancel.
        #[arg(value_parser = |v: &str| v.parse::<Trigger>().map(|_| v.to_owned()).map_err(|e| e.to_string()))]
        trigger: String,
        /// Who triggers it (with principals: whom the token's principal acts for).
        #[arg(long)]
        actor: Option<String>,
        /// human or agent: taken without principals; with them the token's principal's kind
        /// counts, but an approval or rejection that says agent is refused either way.
        #[arg(long, value_parser = ["human", "agent"])]
        actor_kind: Option<String>,
        /// Why.
        #[arg(long)]
        reason: Option<String>,
        /// A JSON object kept with the history entry.
        #[arg(long)]
        metadata: Option<String>,
        /// Only if the workflow is at this version.
        #[arg(long)]
        expected_version: Option<u64>,
    },
    /// Show a workflow's history, oldest first.
    History {
        /// The feature id.
        feature_id: String,
    },
    /// List workflows, in feature-id order.
    List {
        /// Only this state (IDLE, PHASE_1, GATE_1, PHASE_2, DONE).
        #[arg(long)]
        state: Option<WorkflowState>,
        /// Page size, 1–500.
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=i64::from(PageLimit::MAX)))]
        limit: Option<u32>,
        /// Continue after this cursor.
        #[arg(long)]
        cursor: Option<String>,
        /// Only gates past their deadline.
        #[arg(long)]
        overdue: bool,
        /// Follow the cursors and print every page's items as one list.
        #[arg(long)]
        all: bool,
    },
    /// What waits at the gate, oldest first: one line each, with how long it has waited, its
    /// approvals (`1 of 2`), past its deadline `OVERDUE`, and `BLOCKED by N consultations`
    /// while consultations wait for a human or for the Agent Hub (no approval passes then),
    /// with each one's id (`respond` answers one waiting for a human). That is as stored: an
    /// escalation answered at the hub itself, or one the hub lost, shows until something asks
    /// the hub (`consultations FEATURE` does, and so does an approval, before it is judged).
    /// With --actor, only the gates that person may still approve. When none waits, stdout
    /// stays empty and stderr says so. For scripts, --json prints the same gates as a JSON
    /// list of workflows.
    Gates {
        /// Leave out the gates this person approved already, or completed (unless the gate
        /// allows self-approval); names compare as the gate compares them, whatever their case
        /// or Unicode encoding.
        #[arg(long, value_parser = |v: &str| Actor::parse_name(v).map_err(|e| e.to_string()))]
        actor: Option<Actor>,
        /// Only gates past their deadline.
        #[arg(long)]
        overdue: bool,
        /// Print the gates as a JSON list of workflows (oldest at the gate first) instead.
        #[arg(long)]
        json: bool,
    },
    /// Count workflows by state.
    Summary,
    /// Print events as they happen, one line each (`ID TYPE FEATURE WHAT`), resuming by id
    /// after a disconnect; runs until interrupted (or --count events). A server unreachable at
    /// the start is exit 3; once it has streamed, one that goes away is waited for as long as
    /// `watch` runs (a warning on stderr at each try, a few seconds apart).
    Watch {
        /// Which events.
        #[command(flatten)]
        which: Which,
        /// Start after this event id (default: only events from now on).
        #[arg(long)]
        after: Option<u64>,
        /// Start at the oldest event the server keeps (`--after 0` is refused 410 once
        /// retention has deleted events).
        #[arg(long, conflicts_with = "after")]
        from_oldest: bool,
        /// Stop after this many events.
        #[arg(long)]
        count: Option<u64>,
        /// Print each event's CloudEvent JSON instead, one event per line.
        #[arg(long)]
        json: bool,
    },
    /// Print one page of the event log as JSON (`items`, `next_after`) and exit: from the
    /// oldest event kept, or after --after; pass `next_after` as the next --after until it
    /// comes back unchanged.
    Events {
        /// Which events.
        #[command(flatten)]
        which: Which,
        /// Start after this event id (default: the oldest event kept).
        #[arg(long)]
        after: Option<u64>,
        /// At most this many events (1–1000).
        #[arg(long, default_value_t = 100,
              value_parser = clap::value_parser!(u32).range(1..=i64::from(EventsQuery::MAX_LIMIT)))]
        limit: u32,
    },
    /// Manage webhooks (admin): subscribe a URL to events, list, delete, deliveries,
    /// redeliver.
    #[command(subcommand)]
    Webhooks(WebhookCommand),
    /// Ask the Agent Hub's experts a question for a workflow.
    #[command(visible_alias = "ask")]
    Consult {
        /// The feature id.
        feature_id: String,
        /// architecture, testing, frontend, backend, devops or security.
        topic: String,
        /// The question, at least 10 characters.
        question: String,
        /// Extra context for the expert.
        #[arg(long)]
        context: Option<String>,
    },
    /// Show a workflow's consultations.
    Consultations {
        /// The feature id.
        feature_id: String,
    },
    /// Answer a consultation's escalation as a human reviewer.
    Respond {
        /// The feature id.
        feature_id: String,
        /// The consultation's id (from `orchestrator consultations`).
        consultation_id: String,
        /// confirm, correct or add_context.
        #[arg(value_parser = ["confirm", "correct", "add_context"])]
        action: String,
        /// The correction or the context (required for correct and add_context).
        #[arg(long, required_if_eq_any = [("action", "correct"), ("action", "add_context")])]
        response: Option<String>,
        /// Who answers (without principals; with them, the token's principal does).
        #[arg(long)]
        actor: Option<String>,
        /// human or agent: taken without principals; with them the token's principal's kind
        /// counts, and agent is refused either way (an agent may not answer).
        #[arg(long, value_parser = ["human", "agent"])]
        actor_kind: Option<String>,
    },
    /// Show the server's health.
    Health,
    /// Show what the server is: its name, version and where its documents are (`GET /`).
    Info,
    /// Print the server's metrics: the OpenMetrics text Prometheus scrapes (`GET /metrics`).
    Metrics,
    /// Print the server's OpenAPI document (`GET /openapi.json`).
    Openapi,
}

impl Command {
    /// The texts the command sends that may be read from standard input (given as `-`), with
    /// the names the command line gives them.
    fn texts(&mut self) -> Vec<(&'static str, &mut String)> {
        let mut texts: Vec<(&'static str, &mut String)> = Vec::new();
        match self {
            Command::Start {
                description,
                metadata,
                ..
            } => {
                texts.push(("DESCRIPTION", description));
                texts.extend(metadata.as_mut().map(|m| ("--metadata", m)));
            }
            Command::Approve {
                reason, metadata, ..
            }
            | Command::Advance {
                reason, metadata, ..
            } => {
                texts.extend(reason.as_mut().map(|r| ("--reason", r)));
                texts.extend(metadata.as_mut().map(|m| ("--metadata", m)));
            }
            Command::Reject {
                reason, metadata, ..
            } => {
                texts.push(("--reason", reason));
                texts.extend(metadata.as_mut().map(|m| ("--metadata", m)));
            }
            Command::Consult {
                question, context, ..
            } => {
                texts.push(("QUESTION", question));
                texts.extend(context.as_mut().map(|c| ("--context", c)));
            }
            Command::Respond { response, .. } => {
                texts.extend(response.as_mut().map(|r| ("--response", r)));
            }
            Command::Webhooks(WebhookCommand::Add { description, .. }) => {
                texts.extend(description.as_mut().map(|d| ("--description", d)));
            }
            _ => {}
        }
        texts
    }

    /// Whether the command POSTs a change (and so sends an Idempotency-Key).
    fn writes(&self) -> bool {
        match self {
            Command::Start { .. }
            | Command::Approve { .. }
            | Command::Reject { .. }
            | Command::Advance { .. }
            | Command::Consult { .. }
            | Command::Respond { .. } => true,
            Command::Webhooks(command) => matches!(
                command,
                WebhookCommand::Add { .. } | WebhookCommand::Redeliver { .. }
            ),
            Command::Get { .. }
            | Command::History { .. }
            | Command::List { .. }
            | Command::Gates { .. }
            | Command::Summary
            | Command::Watch { .. }
            | Command::Events { .. }
            | Command::Consultations { .. }
            | Command::Health
            | Command::Info
            | Command::Metrics
            | Command::Openapi => false,
        }
    }
}

/// Where a stream from the oldest event kept starts: just before the first of `which`
/// events a page from the oldest one holds, or where that page ends when it holds none.
async fn oldest_kept(client: &Client, which: &Which) -> Result<u64, Failure> {
    let page = client.list_events(&which.query(None, 1)?).await?;
    match page.items.first() {
        Some(event) => Ok(event.seq().saturating_sub(1)),
        None => page
            .next_after
            .parse()
            .map_err(|_| Failure::Broken(format!("next_after {:?} is no id", page.next_after))),
    }
}

/// A webhook's or a delivery's id: not blank (the request would name no webhook, and the
/// server would answer that it has no such route).
fn an_id(id: &str) -> Result<String, String> {
    if id.trim().is_empty() {
        Err("must not be empty or blank".to_owned())
    } else {
        Ok(id.to_owned())
    }
}

/// An event type's wire name, checked (the server would refuse another).
fn event_type(name: &str) -> Result<String, String> {
    EventType::parse_field("type", name)
        .map(|t| t.as_str().to_owned())
        .map_err(|e| e.rule.to_string())
}

/// Which events `watch` and `events` show.
#[derive(Debug, Args)]
pub struct Which {
    /// Only this feature's events.
    #[arg(long = "feature")]
    feature_id: Option<String>,
    /// Only these types (repeat, or separate by commas): workflow.transitioned,
    /// gate.overdue, consultation.created, consultation.updated.
    #[arg(long = "type", value_delimiter = ',')]
    types: Vec<String>,
}

impl Which {
    /// The query of these events after `after`, `limit` to a page.
    fn query(&self, after: Option<u64>, limit: u32) -> Result<EventsQuery, Failure> {
        let limit = limit.to_string();
        let mut pairs: Vec<(&str, &str)> = vec![("limit", &limit)];
        if let Some(id) = &self.feature_id {
            pairs.push(("feature_id", id));
        }
        let types = self.types.join(",");
        if !types.is_empty() {
            pairs.push(("type", &types));
        }
        let mut query = EventsQuery::parse_query(pairs)
            .map_err(|e| Failure::Usage(format!("{}: {}", e.field, e.rule)))?;
        query.after = after;
        Ok(query)
    }
}

/// Runs `cli`, writing answers to `out` and refusals to `err`; returns the exit code. A text
/// given as `-` is read from standard input. A write stopped by SIGINT or SIGTERM tells its
/// key on `err` (both writers flushed), then ends the process by that signal (on Unix; else
/// returns 130 or 143).
pub async fn run(mut cli: Cli, out: &mut impl Write, err: &mut impl Write) -> ExitCode {
    let input = std::io::stdin();
    if input.is_terminal()
        && let Some(hint) = terminal_hint(&mut cli.command)
    {
        let _ = writeln!(err, "{hint}");
    }
    // Only a write has something to tell when stopped; any other command is left to the
    // signal's own end, which also stops a shell loop that runs it (an exit code does not).
    let writes = cli.command.writes();
    run_until(cli, input, out, err, interrupted(writes)).await
}

/// Resolves when the person or a supervisor stops the tool (Ctrl-C's SIGINT, or SIGTERM), with
/// the exit code a shell gives for that signal (130, 143); never if not `listening` (the
/// signals then keep their own effect) or where it cannot listen.
async fn interrupted(listening: bool) -> u8 {
    if !listening {
        return std::future::pending().await;
    }
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
        ) {
            (Ok(mut interrupt), Ok(mut terminate)) => tokio::select! {
                _ = interrupt.recv() => 130,
                _ = terminate.recv() => 143,
            },
            _ => std::future::pending().await,
        }
    }
    #[cfg(not(unix))]
    {
        match tokio::signal::ctrl_c().await {
            Ok(()) => 130,
            Err(_) => std::future::pending().await,
        }
    }
}

/// Ends the process by the signal an interrupted run's exit `code` stands for (130 SIGINT, 143
/// SIGTERM), with that signal's own action, as if it had not been caught: a shell then stops
/// the loop or script that ran the tool on Ctrl-C, which an exit code alone does not make it
/// do. Returns only off Unix, or for another code (the caller then exits with `code`).
fn end_by_signal(code: u8) {
    #[cfg(unix)]
    {
        use signal_hook::consts::{SIGINT, SIGTERM};
        let signal = match code {
            130 => SIGINT,
            143 => SIGTERM,
            _ => return,
        };
        let _ = signal_hook::low_level::emulate_default_handler(signal);
    }
    #[cfg(not(unix))]
    let _ = code;
}

/// What a person who gave one text as `-` and typed nothing after the command is told while
/// the CLI waits on their terminal: which text it reads and how to end it.
fn terminal_hint(command: &mut Command) -> Option<String> {
    let mut dashes = command
        .texts()
        .into_iter()
        .filter(|(_, text)| text.as_str() == "-");
    let (name, _) = dashes.next()?;
    // Two are refused before anything is read.
    if dashes.next().is_some() {
        return None;
    }
    Some(format!(
        "reading {name} from standard input: type it, then Ctrl-D on a line of its own \
         (Ctrl-Z, Enter on Windows)"
    ))
}

/// [`run`], reading a text given as `-` from `input` instead of standard input (and leaving
/// signals alone).
pub async fn run_with_input(
    cli: Cli,
    input: impl Read,
    out: &mut impl Write,
    err: &mut impl Write,
) -> ExitCode {
    run_until(cli, input, out, err, std::future::pending()).await
}

/// [`run_with_input`], stopped when `interrupt` resolves (with the exit code to end with): a
/// write stopped before its answer came tells its key, as one whose answer never came does.
async fn run_until(
    mut cli: Cli,
    input: impl Read,
    out: &mut impl Write,
    err: &mut impl Write,
    interrupt: impl Future<Output = u8>,
) -> ExitCode {
    if let Err(message) = read_dashes(&mut cli.command, input) {
        let _ = writeln!(err, "error: {message}");
        return ExitCode::from(2);
    }
    // A write whose answer never came may have been carried out: its key, told on failure,
    // lets the person run it again and have it carried out once.
    let retry_key = cli.command.writes().then(|| {
        cli.idempotency_key
            .get_or_insert_with(|| format!("cli-{}", uuid::Uuid::new_v4().simple()))
            .clone()
    });
    let url = cli.url.clone();
    let starting = matches!(cli.command, Command::Start { .. });
    let tokenless = token_given(
        cli.token.clone(),
        std::env::var("ORCHESTRATOR_API_TOKEN").ok(),
    )
    .is_none();
    let outcome = {
        let work = execute(cli, out, err);
        tokio::pin!(work);
        tokio::select! {
            outcome = &mut work => outcome,
            code = interrupt => Err(Failure::Interrupted(code)),
        }
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Usage(message)) => {
            let _ = writeln!(err, "error: {message}");
            ExitCode::from(2)
        }
        Err(Failure::Client(ClientError::Api {
            status,
            body,
            wire_code,
            request_id,
        })) => {
            // A 5xx (a 503: the server stopped waiting for the change) or an earlier attempt
            // still being answered says nothing about whether the change was made — but for
            // the Agent Hub's failures, after which the server stored nothing.
            let hub_failed = matches!(
                body.code,
                ErrorCode::AgentHubUnavailable | ErrorCode::AgentHubError
            );
            let unsettled = (status.is_server_error() && !hub_failed)
                || body.code == ErrorCode::IdempotencyKeyInUse;
            // What to do next, where the refusal alone does not say it.
            let note = match body.code {
                ErrorCode::WorkflowAlreadyExists if starting => {
                    Some("run it with --use-existing to be given the existing workflow instead")
                }
                ErrorCode::EventsExpired => Some(
                    "retention deleted events after that id: `watch --from-oldest` reads on \
                     from the oldest kept (so does `events` without --after); without --after, \
                     `watch` follows only new events",
                ),
                // The details name escalations by their ids, and consultations still being
                // asked in words ("consultation … is still being asked").
                ErrorCode::GateBlocked
                    if body
                        .details
                        .iter()
                        .flatten()
                        .any(|detail| !detail.starts_with("consultation ")) =>
                {
                    Some(
                        "the details name escalations at the Agent Hub; `respond` takes a \
                         consultation's id: `orchestrator consultations FEATURE` lists them with \
                         their escalation ids",
                    )
                }
                ErrorCode::GateBlocked => Some(
                    "a question to the Agent Hub holds the gate until the hub answers it (or \
                     it fails): `orchestrator consultations FEATURE` shows how it stands",
                ),
                _ if tokenless && status == reqwest::StatusCode::UNAUTHORIZED => {
                    Some("no token was sent: this server needs one (--token or ORCHESTRATOR_TOKEN)")
                }
                _ => None,
            };
            let mut envelope = refusal(body, wire_code, request_id);
            if let Some(note) = note {
                envelope["note"] = note.into();
            }
            if unsettled && let Some(key) = retry_key {
                // Beside the envelope, so standard error stays one JSON document.
                envelope["note"] = retry_note(&key).into();
                envelope["idempotency_key"] = key.into();
            }
            let _ = print(err, &envelope);
            ExitCode::from(1)
        }
        // A success in JSON this version cannot read (a newer server's answer): a write was
        // carried out, so running it again is not the advice. (Not JSON at all, it may be
        // something between that answered instead.)
        Err(Failure::Client(ClientError::Decode { status, source }))
            if source.classify() == serde_json::error::Category::Data =>
        {
            let done = if retry_key.is_some() {
                "; the request was carried out"
            } else {
                ""
            };
            let _ = writeln!(
                err,
                "error: the server answered {status}{done}, but this version of the tool cannot \
                 read its answer (a newer server?): {source}"
            );
            ExitCode::from(3)
        }
        Err(Failure::Client(other)) => {
            let _ = writeln!(err, "error: {other}");
            if matches!(&other, ClientError::Transport(e) if e.is_connect()) {
                // Nothing was sent (the client reports an earlier attempt's failure when one
                // may have been carried out): no change to worry about.
                // A server that speaks plain HTTP fails an https:// URL's handshake.
                let plain = if url.starts_with("https://") {
                    " (or does it speak plain HTTP? then its URL starts with http://)"
                } else {
                    ""
                };
                let _ = writeln!(
                    err,
                    "note: no server could be reached at {}: is one running there?{plain} \
                     (--url or ORCHESTRATOR_URL names it); nothing was changed",
                    crate::url_shown(&url)
                );
            } else if let ClientError::UnexpectedBody { status, .. } = &other
                && status.is_client_error()
            {
                // The orchestrator's errors are JSON envelopes: a 4xx page is something else's
                // (another service at that address, a path prefix, a proxy refusing), and
                // nothing reached the orchestrator.
                let _ = writeln!(
                    err,
                    "note: that answer is not the orchestrator's: is {} its base URL? (--url or \
                     ORCHESTRATOR_URL names it); nothing was changed",
                    crate::url_shown(&url)
                );
            } else {
                note_retry_key(err, retry_key.as_deref());
            }
            ExitCode::from(3)
        }
        Err(Failure::Broken(message)) => {
            let _ = writeln!(err, "error: {message}");
            ExitCode::from(3)
        }
        Err(Failure::Unwritten { reader_gone, .. }) if reader_gone && retry_key.is_none() => {
            ExitCode::SUCCESS
        }
        // A write was carried out, and its answer (a new webhook's secret, say) is lost unless
        // asked for again with its key.
        Err(Failure::Unwritten { message, .. }) => {
            let _ = writeln!(err, "error: {message}");
            if let Some(key) = retry_key {
                let _ = writeln!(
                    err,
                    "note: the change was made; run the command again with --idempotency-key \
                     {key} within 24 hours to see its answer again (it is not made twice)"
                );
            }
            ExitCode::from(3)
        }
        Err(Failure::Unhealthy) => ExitCode::from(4),
        Err(Failure::Interrupted(code)) => {
            // The request may have reached the server before the tool was stopped.
            note_retry_key(err, retry_key.as_deref());
            let _ = (out.flush(), err.flush());
            end_by_signal(code);
            ExitCode::from(code)
        }
    }
}

/// Told after a write whose outcome is unknown: the key that has it made once.
fn retry_note(key: &str) -> String {
    format!(
        "the change may have been made; run the command again with --idempotency-key {key} to have it made once"
    )
}

/// After a write that got no answer: the key that has it made once if run again.
fn note_retry_key(err: &mut impl Write, key: Option<&str>) {
    if let Some(key) = key {
        let _ = writeln!(err, "note: {}", retry_note(key));
    }
}

/// The server's error envelope as it sent it (its code as spelled on the wire, also one this
/// version does not know), with the answer's `request_id` beside `error` when it had one: the
/// id the server's log names the request by.
fn refusal(body: ApiErrorBody, wire_code: String, request_id: Option<String>) -> serde_json::Value {
    let mut envelope = serde_json::to_value(ErrorEnvelope { error: body }).unwrap_or_default();
    envelope["error"]["code"] = serde_json::Value::String(wire_code);
    if let Some(id) = request_id {
        envelope["request_id"] = serde_json::Value::String(id);
    }
    envelope
}

enum Failure {
    Usage(String),
    Client(ClientError),
    /// Not the caller's doing: the event stream ended for good, the server's answer made no
    /// sense (a page's `next_after` that is no id), or the client could not be set up (TLS).
    Broken(String),
    /// The answer came but could not be written out (`reader_gone`: whoever read it stopped,
    /// as `watch | head -1` does).
    Unwritten {
        reader_gone: bool,
        message: String,
    },
    /// `health` answered: unhealthy.
    Unhealthy,
    /// Stopped by a signal before it was done: the exit code a shell gives for it.
    Interrupted(u8),
}

impl From<ClientError> for Failure {
    fn from(error: ClientError) -> Self {
        Failure::Client(error)
    }
}

/// What `gates` says of the consultations that hold a gate: each one's id (what `respond`
/// takes) and what it waits for (a human, or the Agent Hub); empty when none does. Neither
/// the approvals still needed nor a kind this version does not know is a consultation.
fn consultations_holding(blocked_by: &[orchestrator_core::api::Blocker]) -> String {
    use orchestrator_core::api::Blocker;
    let holding: Vec<String> = blocked_by
        .iter()
        .filter_map(|b| match b {
            Blocker::Escalation {
                consultation_id, ..
            } => Some(format!("{consultation_id} waits for a human")),
            Blocker::Asking { consultation_id } => {
                Some(format!("{consultation_id} is being asked"))
            }
            _ => None,
        })
        .collect();
    match holding.len() {
        0 => String::new(),
        1 => format!("BLOCKED by 1 consultation: {}\t", holding[0]),
        n => format!("BLOCKED by {n} consultations: {}\t", holding.join(", ")),
    }
}

/// Replaces the one text of `command` given as `-` with what `input` holds, its last line end
/// dropped; `input` is read only then. Two texts given as `-`, or an input that is not UTF-8,
/// is a usage error.
fn read_dashes(command: &mut Command, mut input: impl Read) -> Result<(), String> {
    let mut dashes: Vec<(&'static str, &mut String)> = command
        .texts()
        .into_iter()
        .filter(|(_, text)| text.as_str() == "-")
        .collect();
    let Some((name, text)) = dashes.pop() else {
        return Ok(());
    };
    if let Some((other, _)) = dashes.pop() {
        return Err(format!(
            "{other} and {name} are both `-`: only one text may be read from standard input"
        ));
    }
    let mut read = String::new();
    input
        .read_to_string(&mut read)
        .map_err(|e| format!("{name} is `-`, but standard input could not be read: {e}"))?;
    let end = read
        .strip_suffix("\r\n")
        .or_else(|| read.strip_suffix('\n'))
        .map_or(read.len(), str::len);
    read.truncate(end);
    *text = read;
    Ok(())
}

fn feature(id: &str) -> Result<FeatureId, Failure> {
    FeatureId::parse(id).map_err(|e| Failure::Usage(e.to_string()))
}

fn json_object(field: &str, text: Option<String>) -> Result<Option<serde_json::Value>, Failure> {
    text.map(|t| {
        let value: serde_json::Value = serde_json::from_str(&t)
            .map_err(|e| Failure::Usage(format!("--{field} is not JSON: {e}")))?;
        if value.is_object() {
            Ok(value)
        } else {
            Err(Failure::Usage(format!("--{field} must be a JSON object")))
        }
    })
    .transpose()
}

/// One line for an event: id, type, feature, and what happened.
fn event_line(event: &CloudEvent) -> String {
    let data = &event.data;
    let text = |field: &str| data[field].as_str().unwrap_or("-").to_owned();
    let what = match event.event_type {
        EventType::WorkflowTransitioned => format!(
            "{} -> {} ({}) by {} v{}",
            text("from"),
            text("to"),
            text("trigger"),
            text("actor"),
            data["version"]
        ),
        EventType::GateOverdue => {
            // A list; a count in events written before it was one.
            let approvals = data["approvals"].as_array().map_or_else(
                || data["approvals"].as_u64().unwrap_or(0),
                |a| a.len() as u64,
            );
            format!("due {}, {approvals} approval(s)", text("due_at"))
        }
        EventType::ConsultationCreated | EventType::ConsultationUpdated => {
            format!("{} {} {}", text("id"), text("topic"), text("status"))
        }
    };
    format!("{} {} {} {what}", event.id, event.event_type, event.subject)
}

fn print(out: &mut impl Write, value: &impl Serialize) -> std::io::Result<()> {
    let text = serde_json::to_string_pretty(value).map_err(std::io::Error::other)?;
    writeln!(out, "{text}")
}

/// `value` as JSON on one line: one record per line for a stream read line by line.
fn print_line(out: &mut impl Write, value: &impl Serialize) -> std::io::Result<()> {
    let text = serde_json::to_string(value).map_err(std::io::Error::other)?;
    writeln!(out, "{text}")
}

/// The token to send: `--token` (or `ORCHESTRATOR_TOKEN`), else the server's own variable,
/// so that one shell can run both; an empty one is none, and does not hide the other.
fn token_given(given: Option<String>, servers: Option<String>) -> Option<String> {
    given
        .filter(|token| !token.is_empty())
        .or(servers)
        .filter(|token| !token.is_empty())
}

/// Runs `cli`; answers go to `out`, notes for a person (never data) to `err`.
async fn execute(cli: Cli, out: &mut impl Write, err: &mut impl Write) -> Result<(), Failure> {
    let mut builder = Client::builder()
        .base_url(cli.url)
        .timeout(Duration::from_secs(cli.timeout));
    let token = token_given(cli.token, std::env::var("ORCHESTRATOR_API_TOKEN").ok());
    if let Some(token) = token {
        builder = builder.token(token);
    }
    let mut client = builder.build().map_err(|e| match e {
        ClientError::InvalidBaseUrl(_) | ClientError::InvalidToken => Failure::Usage(e.to_string()),
        // TLS could not be set up: nothing the command line said.
        e => Failure::Broken(e.to_string()),
    })?;
    if let Some(key) = cli.idempotency_key {
        // A key on a read, or on a delete (whose repeat is safe without one), would do nothing.
        if !cli.command.writes() {
            return Err(Failure::Usage(
                "--idempotency-key applies to writes only: start, advance, approve, reject, \
                 consult, respond, webhooks add and webhooks redeliver"
                    .into(),
            ));
        }
        client = client.with_idempotency_key(key);
    }
    let written = match cli.command {
        Command::Start {
            feature_id,
            description,
            metadata,
            use_existing,
            required_approvals,
            due_in_seconds,
            on_expiry,
            allow_self_approval,
        } => {
            // A bad id is the command line's error (exit 2), as for every other command.
            feature(&feature_id)?;
            let mut request = StartWorkflowRequest::new(feature_id, description);
            request.metadata = json_object("metadata", metadata)?;
            request.use_existing = use_existing.then_some(true);
            let gate = GateRequest {
                required_approvals,
                allow_self_approval: allow_self_approval.then_some(true),
                due_in_seconds,
                on_expiry,
            };
            request.gate = (gate != GateRequest::default()).then_some(gate);
            let started = client.start_workflow_reporting(&request).await?;
            if !started.created {
                let _ = writeln!(
                    err,
                    "note: {} was started before; it is unchanged",
                    started.workflow.feature_id
                );
            }
            print(out, &started.workflow)
        }
        Command::Get { feature_id } => {
            print(out, &client.get_workflow(&feature(&feature_id)?).await?)
        }
        Command::Advance {
            feature_id,
            trigger,
            actor,
            actor_kind,
            reason,
            metadata,
            expected_version,
        } => {
            let request = AdvanceRequest {
                trigger,
                actor,
                actor_kind,
                override_gate: None,
                reason,
                metadata: json_object("metadata", metadata)?,
                expected_version,
            };
            print(
                out,
                &client
                    .advance_workflow(&feature(&feature_id)?, &request)
                    .await?,
            )
        }
        Command::Approve {
            feature_id,
            actor,
            actor_kind,
            reason,
            override_gate,
            metadata,
            expected_version,
        } => {
            let request = AdvanceRequest {
                actor,
                actor_kind,
                reason,
                override_gate: override_gate.then_some(true),
                metadata: json_object("metadata", metadata)?,
                expected_version,
                ..AdvanceRequest::new("human_approved")
            };
            print(
                out,
                &client
                    .advance_workflow(&feature(&feature_id)?, &request)
                    .await?,
            )
        }
        Command::Reject {
            feature_id,
            reason,
            actor,
            actor_kind,
            metadata,
            expected_version,
        } => {
            let request = AdvanceRequest {
                actor,
                actor_kind,
                reason: Some(reason),
                metadata: json_object("metadata", metadata)?,
                expected_version,
                ..AdvanceRequest::new("human_rejected")
            };
            print(
                out,
                &client
                    .advance_workflow(&feature(&feature_id)?, &request)
                    .await?,
            )
        }
        Command::History { feature_id } => {
            print(out, &client.get_history(&feature(&feature_id)?).await?)
        }
        Command::List {
            state,
            limit,
            cursor,
            overdue,
            all,
        } => {
            let mut params = ListWorkflowsParams {
                state,
                limit,
                cursor,
                overdue,
            };
            if all {
                let mut items = Vec::new();
                loop {
                    let page = client.list_workflows(&params).await?;
                    items.extend(page.items);
                    match page.next_cursor {
                        Some(next) => params.cursor = Some(next),
                        None => break,
                    }
                }
                print(out, &items)
            } else {
                print(out, &client.list_workflows(&params).await?)
            }
        }
        Command::Summary => print(out, &client.get_summary().await?),
        Command::Webhooks(command) => webhooks(&client, command, out).await?,
        Command::Events {
            which,
            after,
            limit,
        } => {
            let query = which.query(after, limit)?;
            let (page, unreadable) = client.list_events_reporting(&query).await?;
            if !unreadable.is_empty() {
                let _ = writeln!(
                    err,
                    "warning: events {} are of a kind this version cannot read; they are left out",
                    unreadable.join(", ")
                );
            }
            print(out, &page)
        }
        Command::Watch {
            which,
            after,
            from_oldest,
            count,
            json,
        } => {
            // Retention may pass the oldest event between reading it and opening the stream
            // (410): the stream is opened again from the new oldest, once.
            let mut expired_once = false;
            let mut events = 'open: loop {
                let after = if from_oldest {
                    Some(oldest_kept(&client, &which).await?)
                } else {
                    after
                };
                let query = which.query(after, EventsQuery::DEFAULT_LIMIT)?;
                let mut events = client.stream_events(query);
                // A server that cannot be reached at the start is the caller's error (exit 3),
                // not a reconnection to wait for; one that answers 5xx (starting, draining, its
                // database down), or a proxy's 408 or 429, is waited for, as later.
                loop {
                    match events.attach().await {
                        Ok(()) => break 'open events,
                        Err(e) if e.status().is_some() && crate::events::retryable(&e) => {
                            let _ = writeln!(err, "warning: {e}; connecting again");
                        }
                        Err(e) if from_oldest && !expired_once && e.is_gone() => {
                            expired_once = true;
                            continue 'open;
                        }
                        Err(e) => return Err(e.into()),
                    }
                }
            };
            let mut seen = 0;
            let mut last_error = None;
            loop {
                if count.is_some_and(|count| seen >= count) {
                    break Ok(());
                }
                match events.next().await {
                    Some(Ok(event)) => {
                        seen += 1;
                        let written = if json {
                            print_line(out, &event)
                        } else {
                            writeln!(out, "{}", event_line(&event))
                        };
                        if written.is_err() {
                            break written;
                        }
                    }
                    // Transient: the stream reconnects on the next call; the person watching
                    // sees why nothing comes meanwhile.
                    Some(Err(e)) => {
                        match &e {
                            // An event this version cannot read is passed over; the stream
                            // goes on.
                            ClientError::UnreadableEvent { .. } => {
                                let _ = writeln!(err, "warning: {e}; the event is skipped");
                            }
                            // A refusal (400, 401, 409, 410) ends the stream; it is the
                            // exit's error.
                            e if !crate::events::retryable(e) => {}
                            e => {
                                let _ = writeln!(err, "warning: {e}; reconnecting");
                            }
                        }
                        last_error = Some(e);
                    }
                    None => {
                        return Err(last_error.map_or_else(
                            || Failure::Broken("the event stream ended".into()),
                            Failure::from,
                        ));
                    }
                }
            }
        }
        Command::Gates {
            actor,
            overdue,
            json,
        } => {
            let mut params = ListWorkflowsParams {
                state: Some(WorkflowState::Gate1),
                overdue,
                ..ListWorkflowsParams::default()
            };
            let mut waiting = Vec::new();
            loop {
                let page = client.list_workflows(&params).await?;
                waiting.extend(page.items);
                match page.next_cursor {
                    Some(next) => params.cursor = Some(next),
                    None => break,
                }
            }
            let mine = |w: &WorkflowResponse| {
                let Some(me) = &actor else { return true };
                (w.gate.allow_self_approval || !w.gate.authors.iter().any(|a| a.same_person(me)))
                    && !w
                        .gate
                        .approvals
                        .iter()
                        .flat_map(|a| a.people())
                        .any(|a| a.same_person(me))
            };
            waiting.retain(mine);
            waiting.sort_by_key(|w| w.gate.entered_at);
            if json {
                print(out, &waiting)
            } else {
                let now = chrono::Utc::now();
                let lines: Vec<String> = waiting
                    .iter()
                    .map(|w| {
                        let waited = w
                            .gate
                            .entered_at
                            .map_or(0, |at| (now - at).num_seconds().max(0));
                        let blocked = consultations_holding(&w.gate.blocked_by);
                        format!(
                            "{}\twaiting {}\t{} of {} approvals\t{}{blocked}{}",
                            w.feature_id,
                            duration(waited),
                            w.gate.approvals.len(),
                            w.gate.required_approvals,
                            if w.gate.overdue { "OVERDUE\t" } else { "" },
                            one_line(w.description.as_str())
                        )
                    })
                    .collect();
                if lines.is_empty() {
                    // Nothing on stdout, so scripts read an empty list; a person sees why. The
                    // listing succeeded even if this note cannot be written.
                    let why = match (&actor, overdue) {
                        (Some(actor), false) => format!("no gate waits for {actor}"),
                        (Some(actor), true) => {
                            format!("no gate past its deadline waits for {actor}")
                        }
                        (None, true) => "no gate is past its deadline".to_owned(),
                        (None, false) => "no gate waits".to_owned(),
                    };
                    let _ = writeln!(err, "{why}");
                    Ok(())
                } else {
                    writeln!(out, "{}", lines.join("\n"))
                }
            }
        }
        Command::Consult {
            feature_id,
            topic,
            question,
            context,
        } => {
            let request = ConsultRequest {
                topic,
                question,
                context,
            };
            let consultation = client
                .create_consultation(&feature(&feature_id)?, &request)
                .await?;
            if consultation.status == ConsultationStatus::Asking {
                let _ = writeln!(
                    err,
                    "note: the Agent Hub has not answered yet; it is asked on in the background: \
                     `orchestrator consultations {feature_id}` shows the answer once it comes"
                );
            }
            print(out, &consultation)
        }
        Command::Consultations { feature_id } => print(
            out,
            &client.list_consultations(&feature(&feature_id)?).await?,
        ),
        Command::Respond {
            feature_id,
            consultation_id,
            action,
            response,
            actor,
            actor_kind,
        } => {
            let consultation = consultation_id
                .parse::<orchestrator_core::ConsultationId>()
                .map_err(|_| {
                    Failure::Usage(format!(
                        "'{consultation_id}' is not a consultation id (a UUID)"
                    ))
                })?;
            let request = RespondRequest {
                action,
                response,
                actor,
                actor_kind,
            };
            print(
                out,
                &client
                    .respond_to_consultation(&feature(&feature_id)?, &consultation, &request)
                    .await?,
            )
        }
        Command::Info => print(out, &client.get_service_info().await?),
        Command::Metrics => write!(out, "{}", client.get_metrics().await?),
        Command::Openapi => print(out, &client.get_openapi().await?),
        Command::Health => {
            let health = client.get_health().await?;
            let written = print(out, &health);
            // The verdict is the command's point: an answer that could not be written out
            // (`health | grep -q …`, its reader gone) does not hide it.
            if health.status == orchestrator_core::api::HealthStatus::Unhealthy {
                return Err(Failure::Unhealthy);
            }
            written
        }
    };
    written_out(written)
}

/// Whether the answer was written; [`run`] decides what a failure means (a reader that went
/// away from a read, `orchestrator watch | head -1`, leaves nothing to say).
fn written_out(written: std::io::Result<()>) -> Result<(), Failure> {
    written.map_err(|e| Failure::Unwritten {
        reader_gone: e.kind() == std::io::ErrorKind::BrokenPipe,
        message: format!("cannot write the answer: {e}"),
    })
}

/// An `--idempotency-key` as the server takes it: 1–255 printable ASCII characters, spaces
/// inside only (HTTP would drop those around it, and the key would be another).
fn idempotency_key(key: &str) -> Result<String, String> {
    let bytes = key.as_bytes();
    let printable = bytes.iter().all(|b| *b == b' ' || b.is_ascii_graphic());
    let ends = bytes.first().zip(bytes.last());
    if key.len() <= 255 && printable && ends.is_some_and(|(a, z)| *a != b' ' && *z != b' ') {
        Ok(key.to_owned())
    } else {
        Err("must be 1-255 printable ASCII characters, without spaces around it".to_owned())
    }
}

/// `text` on one line: each line break, tab or other control character becomes a space, so
/// a description cannot break a listing's one line per item.
fn one_line(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// Whole seconds as `2d 3h`, `3h 12m`, `12m`, or `45s`.
fn duration(seconds: i64) -> String {
    let (d, h, m) = (seconds / 86_400, seconds / 3_600 % 24, seconds / 60 % 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{seconds}s"),
        (0, 0, m) => format!("{m}m"),
        (0, h, m) => format!("{h}h {m}m"),
        (d, h, _) => format!("{d}d {h}h"),
    }
}

async fn webhooks(
    client: &Client,
    command: WebhookCommand,
    out: &mut impl Write,
) -> Result<std::io::Result<()>, Failure> {
    match command {
        WebhookCommand::Add {
            url,
            types,
            description,
        } => {
            let request = CreateWebhookRequest {
                url,
                event_types: (!types.is_empty()).then_some(types),
                description,
            };
            Ok(print(out, &client.create_webhook(&request).await?))
        }
        WebhookCommand::List => Ok(print(out, &client.list_webhooks().await?)),
        WebhookCommand::Get { id } => Ok(print(out, &client.get_webhook(&id).await?)),
        WebhookCommand::Delete { id } => {
            client.delete_webhook(&id).await?;
            Ok(print(out, &serde_json::json!({ "deleted": id })))
        }
        WebhookCommand::Deliveries {
            id,
            status,
            limit,
            cursor,
        } => {
            let query = DeliveriesQuery {
                status,
                limit,
                cursor,
            };
            Ok(print(out, &client.list_deliveries(&id, &query).await?))
        }
        WebhookCommand::Redeliver { id, delivery_id } => {
            client.redeliver(&id, &delivery_id).await?;
            Ok(print(
                out,
                &serde_json::json!({ "redelivering": delivery_id }),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use std::process::ExitCode;
    use std::sync::atomic::Ordering;

    use clap::Parser;

    use super::{Cli, consultations_holding, event_line, run, terminal_hint, token_given};

    /// A person waited on at their terminal is told which text is read and how to end it;
    /// nothing is said when no text, or two (refused), are `-`.
    #[test]
    fn a_text_read_from_a_terminal_is_announced() {
        let hint = |args: &[&str]| {
            let mut cli = Cli::try_parse_from(["orchestrator"].iter().chain(args))
                .unwrap_or_else(|e| panic!("{args:?}: {e}"));
            terminal_hint(&mut cli.command)
        };
        let told = hint(&["reject", "f", "--reason", "-"]).expect("a hint");
        assert!(
            told.starts_with("reading --reason from standard input"),
            "{told}"
        );
        assert!(told.contains("Ctrl-D"), "{told}");
        assert_eq!(hint(&["reject", "f", "--reason", "r"]), None);
        assert_eq!(
            hint(&["approve", "f", "--reason", "-", "--metadata", "-"]),
            None
        );
    }

    /// What the server would refuse anyway is the command line's error (exit 2), found
    /// before anything is sent.
    #[test]
    fn values_the_server_would_refuse_are_usage_errors() {
        for args in [
            &["approve", "f", "--override"][..],
            &["respond", "f", "c", "correct"],
            &["respond", "f", "c", "add_context"],
            &["approve", "f", "--actor-kind", "robot"],
            &["reject", "f", "--reason", "r", "--actor-kind", "system"],
            &["advance", "f", "start", "--actor-kind", "Human"],
            &["respond", "f", "c", "confirm", "--actor-kind", "x"],
            &["webhooks", "add", "http://h/x", "--type", "bogus"],
            &["webhooks", "add", "http://h/x", "--type", "gate.overdue,"],
            &["webhooks", "get", ""],
            &["webhooks", "delete", " "],
            &["webhooks", "deliveries", ""],
            &["webhooks", "redeliver", "wh_1", ""],
        ] {
            let refused = Cli::try_parse_from(["orchestrator"].iter().chain(args))
                .expect_err(&format!("{args:?}"));
            assert_eq!(refused.exit_code(), 2, "{args:?}: {refused}");
        }
        for args in [
            &["approve", "f", "--override", "--reason", "r"][..],
            &["respond", "f", "c", "confirm"],
            &["respond", "f", "c", "correct", "--response", "this"],
            &["approve", "f", "--actor-kind", "human"],
            &["webhooks", "redeliver", "wh_1", "d1"],
            &[
                "webhooks",
                "add",
                "http://h/x",
                "--type",
                "gate.overdue,consultation.created",
            ],
        ] {
            Cli::try_parse_from(["orchestrator"].iter().chain(args))
                .unwrap_or_else(|e| panic!("{args:?}: {e}"));
        }
        // `--url` before a webhook's target is the server's address: the error names the
        // missing target apart from it.
        let refused =
            Cli::try_parse_from(["orchestrator", "webhooks", "add", "--url", "http://h/x"])
                .expect_err("no target");
        let told = refused.to_string();
        assert!(told.contains("<TARGET_URL>"), "{told}");
    }

    /// `watch` says how many approvals an overdue stay had, from the list the event carries.
    #[test]
    fn an_overdue_gate_is_one_line_counting_its_approvals() {
        let event: orchestrator_core::api::CloudEvent = serde_json::from_value(serde_json::json!({
            "specversion": "1.0", "id": "42", "source": "orchestrator", "type": "gate.overdue",
            "subject": "f-1", "time": "2026-12-07T10:00:00Z",
            "datacontenttype": "application/json",
            "data": {"feature_id": "f-1", "due_at": "2026-12-07T09:59:58Z",
                     "approvals": [{"actor": "alice", "at": "2026-12-07T09:59:00Z"}],
                     "on_expiry": "flag"}
        }))
        .unwrap();
        assert_eq!(
            event_line(&event),
            "42 gate.overdue f-1 due 2026-12-07T09:59:58Z, 1 approval(s)"
        );
        let mut older = event.clone();
        older.data["approvals"] = 2.into();
        assert!(event_line(&older).ends_with(", 2 approval(s)"));
    }

    /// `--token` or `ORCHESTRATOR_TOKEN` first, the server's variable else; an empty one (an
    /// exported variable left blank) is none and does not hide the other.
    #[test]
    fn an_empty_token_falls_back_to_the_servers_variable() {
        let some = |s: &str| Some(s.to_owned());
        assert_eq!(token_given(some("mine"), some("server")), some("mine"));
        assert_eq!(token_given(None, some("server")), some("server"));
        assert_eq!(token_given(some(""), some("server")), some("server"));
        assert_eq!(token_given(some(""), some("")), None);
        assert_eq!(token_given(None, None), None);
    }

    /// A subcommand's help lists the global options apart, one line each; their full
    /// explanation is the top-level help's, once.
    #[test]
    fn global_options_are_told_apart_and_explained_once() {
        use clap::CommandFactory;
        let mut top = Cli::command();
        let full = top.render_long_help().to_string();
        let list = top
            .find_subcommand_mut("list")
            .expect("list")
            .render_long_help()
            .to_string();
        let (own, global) = list.split_once("Global options:").expect("a heading");
        assert!(
            own.contains("--state") && !own.contains("--timeout"),
            "{list}"
        );
        for option in ["--url", "--token", "--timeout", "--idempotency-key"] {
            assert!(global.contains(option), "{option}: {list}");
        }
        let explained = "a call is tried up to three times (after a timeout";
        assert!(full.contains(explained), "{full}");
        assert!(!list.contains(explained), "{list}");
    }

    /// `gates` names the consultations that hold a gate: neither the approvals it still
    /// needs nor a kind a newer server sends are consultations.
    #[test]
    fn only_consultations_count_as_holding_a_gate() {
        use orchestrator_core::api::Blocker;
        let blocked_by: Vec<Blocker> = serde_json::from_value(serde_json::json!([
            {"kind": "approvals", "have": 0, "need": 1},
            {"kind": "a_kind_from_a_newer_server"},
            {"kind": "asking", "consultation_id": "7f1c2a52-52b7-4a57-9e3b-1d6c7e0b9a11"},
        ]))
        .unwrap();
        assert_eq!(
            consultations_holding(&blocked_by),
            "BLOCKED by 1 consultation: 7f1c2a52-52b7-4a57-9e3b-1d6c7e0b9a11 is being asked\t"
        );
        assert_eq!(consultations_holding(&blocked_by[..1]), "");
    }

    /// Runs the tool with `args` after `orchestrator --url url`: exit code and standard error.
    async fn orchestrator(url: &str, args: &[&str]) -> (ExitCode, String) {
        let head = ["orchestrator", "--url", url];
        let cli = Cli::try_parse_from(head.iter().chain(args)).expect("arguments parse");
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let code = run(cli, &mut out, &mut err).await;
        (code, String::from_utf8_lossy(&err).into_owned())
    }

    #[tokio::test]
    async fn watch_waits_out_a_proxy_s_rate_limit_at_the_start_and_goes_on() {
        let event = crate::events::tests::event_json(6, "gate.overdue");
        let (url, connections) = crate::tests::scripted(vec![
            (
                429,
                "text/html\r\nretry-after: 1",
                "<html>slow down</html>".to_owned(),
            ),
            (
                200,
                "text/event-stream",
                format!("id: 5\n\nid: 6\ndata: {event}\n\n"),
            ),
        ]);
        let (code, err) = orchestrator(&url, &["watch", "--count", "1"]).await;
        assert_eq!(code, ExitCode::SUCCESS, "{err}");
        assert!(
            err.contains("429") && err.contains("connecting again"),
            "{err}"
        );
        assert_eq!(connections.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn watch_from_oldest_starts_again_once_when_retention_passed_it_meanwhile() {
        let event = |id| crate::events::tests::event_json(id, "gate.overdue");
        let page = |id: u64| {
            let body = format!(r#"{{"items":[{}],"next_after":"{id}"}}"#, event(id));
            (200, "application/json", body)
        };
        let expired = (
            410,
            "application/json",
            r#"{"error": {"code": "EVENTS_EXPIRED", "message": "gone"}}"#.to_owned(),
        );
        let stream = |id: u64| {
            let body = format!("id: {}\n\nid: {id}\ndata: {}\n\n", id - 1, event(id));
            (200, "text/event-stream", body)
        };
        let (url, connections) =
            crate::tests::scripted(vec![page(5), expired.clone(), page(9), stream(9)]);
        let (code, err) = orchestrator(&url, &["watch", "--from-oldest", "--count", "1"]).await;
        assert_eq!(code, ExitCode::SUCCESS, "{err}");
        assert_eq!(connections.load(Ordering::SeqCst), 4);

        // Twice in a row: the second 410 is the command's error.
        let (url, connections) =
            crate::tests::scripted(vec![page(5), expired.clone(), page(9), expired]);
        let (code, err) = orchestrator(&url, &["watch", "--from-oldest", "--count", "1"]).await;
        assert_eq!(code, ExitCode::from(1), "{err}");
        assert!(err.contains("EVENTS_EXPIRED"), "{err}");
        assert_eq!(connections.load(Ordering::SeqCst), 4);
    }

    #[tokio::test]
    async fn a_401_without_a_token_says_the_server_needs_one() {
        let refused = (
            401,
            "application/json",
            r#"{"error": {"code": "UNAUTHORIZED", "message": "missing or invalid bearer token"}}"#
                .to_owned(),
        );
        let (url, _) = crate::tests::scripted(vec![refused]);
        let (code, err) = orchestrator(&url, &["summary"]).await;
        assert_eq!(code, ExitCode::from(1), "{err}");
        assert!(err.contains("no token was sent"), "{err}");
        let (code, err) = orchestrator(&url, &["--token", "wrong", "summary"]).await;
        assert_eq!(code, ExitCode::from(1), "{err}");
        assert!(!err.contains("no token was sent"), "a wrong one was: {err}");
    }

    #[tokio::test]
    async fn a_write_s_success_this_version_cannot_read_says_the_change_was_made() {
        let (url, _) = crate::tests::scripted(vec![(
            200,
            "application/json",
            r#"{"feature_id":"x","state":"SOMETHING_NEW"}"#.to_owned(),
        )]);
        let (code, err) = orchestrator(&url, &["approve", "x", "--actor", "alice"]).await;
        assert_eq!(code, ExitCode::from(3), "{err}");
        assert!(err.contains("200 OK; the request was carried out"), "{err}");
        assert!(!err.contains("may have been made"), "{err}");
        let (code, err) = orchestrator(&url, &["get", "x"]).await;
        assert_eq!(code, ExitCode::from(3), "{err}");
        assert!(!err.contains("change"), "{err}");
        // A page that is no JSON at all came from something else: nothing says it was made.
        let (url, _) =
            crate::tests::scripted(vec![(200, "text/html", "<html>sign in</html>".to_owned())]);
        let (code, err) = orchestrator(&url, &["approve", "x", "--actor", "alice"]).await;
        assert_eq!(code, ExitCode::from(3), "{err}");
        assert!(!err.contains("carried out"), "{err}");
        assert!(err.contains("may have been made"), "{err}");
    }

    /// A write sent to something other than the orchestrator (another service's port, a path
    /// prefix) is refused with a 4xx that is no error envelope: nothing was changed, and the
    /// note asks about the URL rather than offering a retry.
    #[tokio::test]
    async fn a_4xx_that_is_not_the_orchestrators_asks_about_the_url() {
        for (content_type, body) in [
            ("application/json", r#"{"detail": "Not Found"}"#),
            ("text/html", "<html>404</html>"),
        ] {
            let (url, _) = crate::tests::scripted(vec![(404, content_type, body.to_owned())]);
            let (code, err) = orchestrator(&url, &["start", "x", "a description"]).await;
            assert_eq!(code, ExitCode::from(3), "{err}");
            assert!(err.contains("its base URL?"), "{err}");
            assert!(err.contains("nothing was changed"), "{err}");
            assert!(!err.contains("may have been made"), "{err}");
        }
    }

    #[tokio::test]
    async fn a_redirect_is_not_followed() {
        let (url, connections) = crate::tests::scripted(vec![(
            302,
            "text/html\r\nlocation: /sign-in",
            "<html>moved</html>".to_owned(),
        )]);
        let (code, err) = orchestrator(&url, &["approve", "x", "--actor", "alice"]).await;
        assert_eq!(code, ExitCode::from(3), "{err}");
        assert!(err.contains("302"), "{err}");
        assert_eq!(connections.load(Ordering::SeqCst), 1, "not followed");
    }

    #[tokio::test]
    async fn a_token_a_header_cannot_carry_is_the_command_line_s_error() {
        let (url, connections) = crate::tests::scripted(vec![(500, "text/html", String::new())]);
        let (code, err) = orchestrator(&url, &["--token", "s3cret\r", "start", "x", "y"]).await;
        assert_eq!(code, ExitCode::from(2), "{err}");
        assert!(!err.contains("may have been made"), "{err}");
        assert!(!err.contains("s3cret"), "{err}");
        assert_eq!(connections.load(Ordering::SeqCst), 0, "nothing sent");
    }
}
