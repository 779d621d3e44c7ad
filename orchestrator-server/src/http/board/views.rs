//! The board's markup, as pure functions from what a page shows to HTML (maud escapes every
//! value). No request, store or clock is reached from here: `super` gathers the data, with
//! `now` taken once per page.

use maud::{DOCTYPE, Markup, html};
use orchestrator_core::api::{Blocker, GateView, WorkflowResponse};
use orchestrator_core::consultation::CONTEXT_MAX_CHARS;
use orchestrator_core::hub::HumanAction;
use orchestrator_core::values::REASON_MAX_CHARS;
use orchestrator_core::{
    ActorKind, Consultation, EventType, Metadata, Summary, Timestamp, Transition, Trigger,
    WorkflowState,
};

/// Who looks at the page, as the page shows it.
pub struct Who<'a> {
    /// Their name.
    pub name: &'a str,
    /// Human or agent.
    pub kind: ActorKind,
    /// The session's CSRF token, sent back with the page's writes.
    pub csrf: &'a str,
}

/// What every page has around its main part.
pub struct Frame<'a> {
    /// The page's title.
    pub title: &'a str,
    /// The signed-in person, if any.
    pub who: Option<Who<'a>>,
    /// The feature the page is about; its live updates follow only that feature's events.
    pub feature: Option<&'a str>,
    /// The page's own address (a filtered overview's with its query): signing in from the
    /// form above it comes back here.
    pub here: &'a str,
    /// The last event id when the page was made: the live stream resumes after it.
    pub last_event_id: u64,
    /// Whether sign-in needs a token (shared token and principals modes).
    pub token_required: bool,
    /// Whether sign-in asks for a name (open and shared-token modes: no principal names one).
    pub name_asked: bool,
    /// The server's bound on a request (`REQUEST_TIMEOUT_SECONDS` as used), in milliseconds:
    /// the page gives up waiting for a decision's answer a little after it.
    pub request_timeout_ms: u128,
}

/// The sign-in form, alone on a page or at the top of an open board; `focus`: its first field
/// takes the focus (a page for signing in and nothing else).
pub fn sign_in_form(
    token_required: bool,
    name_asked: bool,
    next: &str,
    refused: Option<&Refused<'_>>,
    focus: bool,
) -> Markup {
    let wrong = |field| {
        refused
            .filter(|r| r.field == field)
            .map(|_| ("true", "sign-in-error"))
            .unzip()
    };
    let (token_invalid, token_described) = wrong(Field::Token);
    let (name_invalid, name_described) = wrong(Field::Name);
    let first = focus && refused.is_none();
    html! {
        form.sign-in method="post" action="/board/session" {
            @if let Some(refused) = refused {
                p #sign-in-error.error role="alert" { (refused.message) }
            }
            input type="hidden" name="next" value=(next);
            @if token_required {
                label for="token" { "Token" }
                // A token refused: the focus is back in its field, to type it again.
                input #token type="password" name="token" autocomplete="current-password" required
                    autofocus[token_invalid.is_some() || first]
                    aria-invalid=[token_invalid] aria-describedby=[token_described];
            }
            @if name_asked {
                label for="name" { "Name" }
                // The name typed is given back; a token never is.
                input #name type="text" name="name" autocomplete="username" maxlength="128" required
                    value=[refused.map(|r| r.name).filter(|n| !n.is_empty())]
                    autofocus[(name_invalid.is_some() && token_invalid.is_none()) || (first && !token_required)]
                    aria-invalid=[name_invalid] aria-describedby=[name_described];
            }
            button type="submit" { "Sign in" }
        }
    }
}

/// A sign-in the server refused: why, which field was wrong, and the name that was typed.
#[derive(Debug, Clone, Copy)]
pub struct Refused<'a> {
    /// What to tell the person, in a sentence.
    pub message: &'a str,
    /// The field that was wrong.
    pub field: Field,
    /// The name typed (given back in its field).
    pub name: &'a str,
}

/// A field of the sign-in form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    /// The API token.
    Token,
    /// The name.
    Name,
}

/// A whole page: `main` inside the frame. The live script replaces `#main` with the same
/// page fetched again when an event arrives.
pub fn page(frame: &Frame<'_>, main: Markup) -> Markup {
    let types: Vec<&str> = EventType::ALL.iter().map(|t| t.as_str()).collect();
    html! {
        (DOCTYPE)
        html lang="en" {
            (head(frame.title, true))
            body data-feature=[frame.feature]
                data-last-event-id=(frame.last_event_id)
                data-event-types=(types.join(" "))
                data-csrf=[frame.who.as_ref().map(|w| w.csrf)]
                data-actor=[frame.who.as_ref().map(|w| w.name)]
                data-actor-kind=[frame.who.as_ref().map(|w| w.kind.as_str())]
                data-request-timeout-ms=(frame.request_timeout_ms) {
                header.top {
                    a.brand href="/board" { "Orchestrator board" }
                    // Filled by the script once it connects: without it, nothing to say here.
                    span #live.live role="status" {}
                    noscript { span.live { "Deciding and following changes need JavaScript." } }
                    @if let Some(who) = &frame.who {
                        span.who { "Signed in as " strong { (who.name) } " (" (who.kind) ")" }
                        form.sign-out method="post" action="/board/sign-out" {
                            input type="hidden" name="csrf" value=(who.csrf);
                            button type="submit" { "Sign out" }
                        }
                    }
                }
                @if frame.who.is_none() {
                    (sign_in_form(frame.token_required, frame.name_asked, frame.here, None, false))
                }
                p #message.message role="alert" aria-live="assertive" {}
                // What a live update changed, for screen readers (the page shows it).
                p #changes.visually-hidden role="status" aria-live="polite" {}
                (main)
            }
        }
    }
}

/// The `<head>` of every page: its title, the stylesheet, and (live pages) the script.
fn head(title: &str, live: bool) -> Markup {
    html! {
        head {
            meta charset="utf-8";
            meta name="viewport" content="width=device-width, initial-scale=1";
            title { (title) " · Orchestrator board" }
            link rel="stylesheet" href="/board/assets/board.css";
            link rel="icon" href="/board/assets/icon.svg" type="image/svg+xml";
            @if live {
                script src="/board/assets/board.js" defer {}
            }
        }
    }
}

/// A page with no session, no script and no live updates: `main` under the bar.
fn plain_page(title: &str, main: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            (head(title, false))
            body {
                header.top { a.brand href="/board" { "Orchestrator board" } }
                main #main { (main) }
            }
        }
    }
}

/// A page that only asks for sign-in.
pub fn sign_in_page(
    token_required: bool,
    name_asked: bool,
    next: &str,
    refused: Option<&Refused<'_>>,
) -> Markup {
    plain_page(
        "Sign in",
        html! {
            h1 { "Sign in" }
            p {
                "The board shows the features at the gate and lets reviewers decide. "
                @if token_required { "Sign in with your API token." }
                @else { "Sign in with your name; it is recorded as the actor of your decisions." }
            }
            (sign_in_form(token_required, name_asked, next, refused, true))
        },
    )
}

/// The page a link from another site (chat, mail, an issue) lands on without a session: the
/// browser withholds the SameSite=Strict session cookie from such a navigation, so this one
/// loads the same address again from the board's own origin, which carries it. A reviewer
/// signed in here sees the page the link names; somebody who is not, the sign-in form.
pub fn continue_page(next: &str) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta http-equiv="refresh" content=(format!("0; url={next}"));
                title { "Opening · Orchestrator board" }
                link rel="stylesheet" href="/board/assets/board.css";
                link rel="icon" href="/board/assets/icon.svg" type="image/svg+xml";
            }
            body {
                header.top { a.brand href="/board" { "Orchestrator board" } }
                main #main { p { "Opening the board… " a href=(next) { "Continue" } } }
            }
        }
    }
}

/// A page that says what went wrong.
pub fn problem_page(title: &str, message: &str) -> Markup {
    plain_page(
        title,
        html! {
            h1 { (title) }
            p { (message) }
            p { a href="/board" { "Back to the board" } }
        },
    )
}

/// The features of one state, on the overview.
pub struct Group {
    /// The state.
    pub state: WorkflowState,
    /// The first of them, by feature id.
    pub items: Vec<WorkflowResponse>,
    /// How many there are.
    pub total: u64,
    /// The next page of them, if this list has pages and there is one.
    pub next: Option<String>,
    /// Their first page, on a later one.
    pub first: Option<String>,
}

impl Group {
    /// Whether the list is shown in pages (a link to another page of it).
    fn paged(&self) -> bool {
        self.next.is_some() || self.first.is_some()
    }
}

/// The overview's data.
pub struct Overview {
    /// Counts per state, and overdue gates.
    pub summary: Summary,
    /// GATE_1 features, overdue first, then by due date, each with what holds its gate.
    pub waiting: Vec<WorkflowResponse>,
    /// How many features wait at the gate.
    pub waiting_total: u64,
    /// The other features by state (only `filter`'s, if any).
    pub others: Vec<Group>,
    /// The state the other features are filtered by.
    pub filter: Option<WorkflowState>,
    /// When the page was made.
    pub now: Timestamp,
}

/// The overview's main part.
pub fn overview(data: &Overview) -> Markup {
    let now = data.now;
    html! {
        main #main data-now=(instant(now)) data-waiting=(data.waiting_total)
            data-overdue=(data.summary.overdue) {
            h1 { "Features" }
            section aria-labelledby="counts-title" {
                h2 #counts-title { "By state" }
                ul.counts {
                    // Each a link to its list: a keyboard reaches any state's features from
                    // here, not past every feature waiting for review.
                    @for state in WorkflowState::ALL {
                        li.count data-state=(state) {
                            a href=(super::state_page(state, None)) {
                                span.n { (data.summary.counts.get(state)) }
                                span.label { (state) }
                            }
                        }
                    }
                    li.count.overdue-count {
                        span.n { (data.summary.overdue) }
                        span.label { "Overdue" }
                    }
                }
            }
            // A list filtered by state comes first: it is what was asked for (the gate's, paged
            // past the 200 the overview shows, among others).
            @if data.filter.is_some() {
                (others(data))
            }
            section aria-labelledby="waiting-title" {
                h2 #waiting-title { "Waiting for review" }
                @if data.waiting.is_empty() {
                    p.empty { "Nothing waits at the gate." }
                } @else {
                    ul.waiting {
                        @for item in &data.waiting {
                            (waiting_item(item, now))
                        }
                    }
                    @if (data.waiting.len() as u64) < data.waiting_total {
                        p.note {
                            "Showing " (data.waiting.len()) " of " (data.waiting_total) "; "
                            a href=(super::state_page(WorkflowState::Gate1, None)) { "every feature at the gate" }
                            ", by feature id."
                        }
                    }
                }
            }
            @if data.filter.is_none() {
                (others(data))
            }
        }
    }
}

/// The overview's features by state: all but the gate's, or the one state filtered by.
fn others(data: &Overview) -> Markup {
    html! {
        section aria-labelledby="others-title" {
            h2 #others-title {
                @if data.filter.is_some() { "Features by state" } @else { "Other features" }
            }
            form #filter.filter method="get" action="/board" {
                label for="state" { "State" }
                select #state name="state" {
                    option value="" selected[data.filter.is_none()] { "All but GATE_1" }
                    @for state in WorkflowState::ALL {
                        option value=(state) selected[data.filter == Some(state)] { (state) }
                    }
                }
                button type="submit" { "Filter" }
            }
            @for group in &data.others {
                (group_list(group, data.now))
            }
        }
    }
}

/// Characters of a description the overview shows: a description may hold 10 000, and the
/// overview, which lists hundreds of features and is fetched again after every event, shows
/// what each is about; its page has the rest.
const EXCERPT_CHARS: usize = 200;

/// `text` cut to [`EXCERPT_CHARS`] characters, with an ellipsis where it was cut.
fn excerpt(text: &str) -> std::borrow::Cow<'_, str> {
    match text.char_indices().nth(EXCERPT_CHARS) {
        Some((cut, _)) => format!("{}…", text[..cut].trim_end()).into(),
        None => text.into(),
    }
}

fn group_list(group: &Group, now: Timestamp) -> Markup {
    let title = format!("state-{}", group.state.as_str());
    html! {
        h3 id=(title) { (group.state) " " span.total { "(" (group.total) ")" } }
        @if group.items.is_empty() {
            p.empty { "None." }
        } @else {
            table.features aria-labelledby=(title) {
                thead { tr { th scope="col" { "Feature" } th scope="col" { "Progress" } th scope="col" { "Last change" } } }
                tbody {
                    @for w in &group.items {
                        tr {
                            td { a href=(feature_href(w.feature_id.as_str())) { (w.feature_id.as_str()) } div.description { (excerpt(w.description.as_str())) } }
                            td { (w.progress.percent) "\u{202f}%" }
                            td { (since(w.updated_at, now)) " ago" }
                        }
                    }
                }
            }
            @if !group.paged() && (group.items.len() as u64) < group.total {
                p.note { "Showing " (group.items.len()) " of " (group.total) "; filter by state for more." }
            }
        }
        // Outside the list: a later page left empty (its features moved on) still leads back.
        @if group.paged() {
            nav.pages aria-label=(format!("Pages of {}", group.state)) {
                "Showing " (group.items.len()) " of " (group.total) "."
                @if let Some(first) = &group.first { " " a href=(first) { "First page" } }
                @if let Some(next) = &group.next { " " a href=(next) rel="next" { "Next page" } }
            }
        }
    }
}

fn waiting_item(w: &WorkflowResponse, now: Timestamp) -> Markup {
    let gate = &w.gate;
    html! {
        li.waiting-item data-feature-id=(w.feature_id.as_str()) {
            div.line {
                a.feature href=(feature_href(w.feature_id.as_str())) { (w.feature_id.as_str()) }
                @if gate.overdue {
                    span.badge.overdue { "Overdue" }
                }
                (blockers_badge(gate))
            }
            div.description { (excerpt(w.description.as_str())) }
            div.facts {
                span.approvals { "Approvals " (gate.approvals.len()) " of " (gate.required_approvals) }
                @if let Some(entered) = gate.entered_at {
                    span.at-gate { "At the gate for " (since(entered, now)) }
                }
                @if let Some(due) = gate.due_at {
                    span.due { "Due " (due_at(due, now)) }
                }
            }
        }
    }
}

/// Whether and why the signed-in person may decide at the gate.
pub enum Verdict {
    /// Nobody is signed in.
    SignedOut,
    /// They may approve (and reject).
    May,
    /// They may not approve, for this reason; `may_reject` says whether Reject is open.
    MayNot {
        /// Why, in a sentence.
        why: String,
        /// Whether they may still reject.
        may_reject: bool,
        /// Only escalations waiting for a human hold the gate, as stored: Approve is offered
        /// all the same, since an approval asks the hub again (an escalation answered at the
        /// hub itself then no longer holds it), and is refused if one still does.
        ask_hub: bool,
    },
}

/// The feature page's data.
pub struct Feature {
    /// The workflow, its gate held by its blocking consultations.
    pub workflow: WorkflowResponse,
    /// Its history, oldest first.
    pub history: Vec<Transition>,
    /// Its consultations, oldest first.
    pub consultations: Vec<Consultation>,
    /// The signed-in person's standing at the gate (GATE_1 only).
    pub verdict: Verdict,
    /// Whether the signed-in person may answer escalations (a human reviewer).
    pub may_respond: bool,
    /// When the page was made.
    pub now: Timestamp,
}

/// The feature page's main part.
pub fn feature(data: &Feature) -> Markup {
    let w = &data.workflow;
    let gate = &w.gate;
    let now = data.now;
    let in_state_since = match (w.state, gate.entered_at) {
        (WorkflowState::Gate1, Some(entered)) => entered,
        _ => w.updated_at,
    };
    let rejections: Vec<&Transition> = data
        .history
        .iter()
        .filter(|t| t.trigger == Trigger::HumanRejected)
        .collect();
    html! {
        main #main data-version=(w.version) data-state=(w.state) data-now=(instant(now)) {
            p.crumbs { a href="/board" { "Board" } " / " (w.feature_id.as_str()) }
            h1 #feature-title { (w.feature_id.as_str()) }
            p.description { (w.description.as_str()) }
            (metadata(&w.metadata, "What was given with the feature"))
            dl.facts {
                dt { "State" } dd { span #state.state data-state=(w.state) { (w.state) } }
                dt { "Version" } dd #version { (w.version) }
                dt { "Progress" } dd { progress max="100" value=(w.progress.percent) aria-label="Progress" { (w.progress.percent) "\u{202f}%" } " " span aria-hidden="true" { (w.progress.percent) "\u{202f}%" } }
                dt { "Time in state" } dd { (since(in_state_since, now)) }
                dt { "Rework" } dd #rework { (w.progress.rework_count) @if w.progress.rework_count == 1 { " time" } @else { " times" } }
            }
            @if !rejections.is_empty() {
                section aria-labelledby="rejections-title" {
                    h2 #rejections-title { "Earlier rejections" }
                    ul.rejections {
                        @for t in &rejections {
                            li { span.when { (when(t.at)) } " " (actor_of(t)) ": " q { (t.reason.as_ref().map_or("", |r| r.as_str())) } }
                        }
                    }
                }
            }
            @if w.state == WorkflowState::Gate1 {
                (gate_section(data))
            }
            section aria-labelledby="consultations-title" {
                h2 #consultations-title { "Consultations" }
                @if data.consultations.is_empty() {
                    p.empty { "No consultations." }
                } @else {
                    table.consultations aria-labelledby="consultations-title" {
                        thead { tr { th scope="col" { "Topic" } th scope="col" { "Question" } th scope="col" { "Answer" } th scope="col" { "Confidence" } th scope="col" { "Status" } } }
                        tbody {
                            @for c in &data.consultations {
                                tr data-status=(c.status.as_str()) {
                                    td data-label="Topic" { (c.topic.as_str()) }
                                    td.text data-label="Question" id=(format!("question-{}", c.id)) { (c.question.as_str()) }
                                    td data-label="Answer" { (answer_cell(c)) }
                                    td data-label="Confidence" { @if let Some(conf) = c.confidence { (conf) "\u{202f}%" } @else { "—" } }
                                    td data-label="Status" {
                                        (c.status.as_str())
                                        @if c.blocks_gate() && w.state == WorkflowState::Gate1 {
                                            " " span.badge.blocking { "Blocking" }
                                        }
                                        @if let Some(error) = &c.error {
                                            p.text.failure { (error.message) }
                                        }
                                    }
                                }
                                @if c.is_pending() && data.may_respond {
                                    tr.answer { td colspan="5" { (respond_form(w, c)) } }
                                }
                            }
                        }
                    }
                }
            }
            section aria-labelledby="history-title" {
                h2 #history-title { "History" }
                ol.timeline {
                    @for t in data.history.iter().rev() {
                        li {
                            span.when { (when(t.at)) }
                            " "
                            span.move { (t.from) " → " (t.to) }
                            " "
                            // In words, the API's name beside them for whoever knows it.
                            span.trigger title=(t.trigger) { (done_as(t.trigger)) }
                            " by " (actor_of(t))
                            @if t.override_gate { " " span.badge { "override" } }
                            @if let Some(reason) = &t.reason { div.reason { q { (reason.as_str()) } } }
                            // The start's is the feature's, shown under its description.
                            @if t.metadata != w.metadata || t.trigger != Trigger::Start {
                                (metadata(&t.metadata, "What was given with this step"))
                            }
                        }
                    }
                }
            }
        }
    }
}

/// What a history entry's trigger did, in words ("approved by alice").
fn done_as(trigger: Trigger) -> &'static str {
    match trigger {
        Trigger::Start => "started",
        Trigger::AgentComplete => "work completed",
        Trigger::HumanApproved => "approved",
        Trigger::HumanRejected => "rejected",
        Trigger::Cancel => "cancelled",
    }
}

/// "2 blocking escalations", "1 question to the Agent Hub": what holds the gate besides its
/// approvals, if anything.
fn blockers_badge(gate: &GateView) -> Markup {
    let escalations = gate
        .blocked_by
        .iter()
        .filter(|b| matches!(b, Blocker::Escalation { .. }))
        .count();
    let asking = gate
        .blocked_by
        .iter()
        .filter(|b| matches!(b, Blocker::Asking { .. }))
        .count();
    html! {
        @if escalations > 0 {
            span.badge.blocking { (escalations) " blocking escalation" @if escalations > 1 { "s" } }
        }
        @if escalations > 0 && asking > 0 { " " }
        @if asking > 0 {
            span.badge.blocking { (asking) " question" @if asking > 1 { "s" } " to the Agent Hub" }
        }
    }
}

fn gate_section(data: &Feature) -> Markup {
    let w = &data.workflow;
    let gate = &w.gate;
    html! {
        section.gate aria-labelledby="gate-title" {
            h2 #gate-title { "Gate" }
            p {
                span #approvals.approvals { "Approvals " (gate.approvals.len()) " of " (gate.required_approvals) }
                @if gate.overdue { " " span.badge.overdue { "Overdue" } }
                " " (blockers_badge(gate))
            }
            @if !gate.approvals.is_empty() {
                p { "Approved by " @for (i, a) in gate.approvals.iter().enumerate() { @if i > 0 { ", " } strong { (a.actor.as_str()) } @if let Some(whom) = &a.on_behalf_of { " for " strong { (whom.as_str()) } } } "." }
            }
            @if let Some(due) = gate.due_at { p { "Due " (due_at(due, data.now)) "." } }
            @match &data.verdict {
                Verdict::SignedOut => p #verdict.verdict { "Sign in to approve or reject." },
                Verdict::May => {
                    p #verdict.verdict.may { "You may approve." }
                    (decision_form(w, true, true))
                }
                Verdict::MayNot { why, may_reject, ask_hub } => {
                    // Held by escalations only: Approve is offered, as it asks the hub again.
                    @if *ask_hub {
                        p #verdict.verdict.may-not { "Not yet, as last known here: " (why) }
                        p.note { "Approve asks the Agent Hub again, so an escalation answered there does not hold the gate; while one still waits, the approval is not recorded." }
                    } @else {
                        p #verdict.verdict.may-not { "You may not approve: " (why) }
                    }
                    @if *may_reject || *ask_hub { (decision_form(w, *ask_hub, *may_reject)) }
                }
            }
        }
    }
}

fn decision_form(w: &WorkflowResponse, approve: bool, reject: bool) -> Markup {
    html! {
        // The buttons work once the page's script has bound them (it sends the decision as
        // JSON with `If-Match`): disabled until then, so an early click submits nothing. The
        // stay at the gate, named by the version that entered it (each approval that does not
        // pass the gate adds one), tells the script when a new round of work has arrived.
        form #decide.decide data-feature=(w.feature_id.as_str()) data-version=(w.version)
            data-stay=[w.gate.entered_at.map(|_| w.version.saturating_sub(w.gate.approvals.len() as u64))] {
            label for="reason" { "Reason" }
            p #reason-hint.hint { "Required to reject; optional to approve." }
            textarea #reason name="reason" rows="3" maxlength=(REASON_MAX_CHARS) aria-describedby="reason-hint" {}
            div.buttons {
                @if approve { button type="submit" name="trigger" value="human_approved" disabled { "Approve" } }
                @if reject { button.reject type="submit" name="trigger" value="human_rejected" disabled { "Reject" } }
            }
        }
    }
}

/// A consultation's answer as it stands, what a person did with it (so that nobody takes a
/// person's correction for the expert's), and the expert's reasoning, folded.
fn answer_cell(c: &Consultation) -> Markup {
    let who = c.human_responder.as_deref().unwrap_or("someone unnamed");
    html! {
        span.text { (c.final_answer.as_deref().or(c.answer.as_deref()).unwrap_or("—")) }
        @match c.human_action {
            Some(HumanAction::Confirm) => p.human { "Confirmed by " (who) "." }
            Some(HumanAction::Correct) => p.human {
                "Corrected by " (who) "; the expert had said: "
                q.text { (c.answer.as_deref().unwrap_or("—")) }
            }
            Some(HumanAction::AddContext) => p.human {
                (who) " added context: "
                q.text { (c.human_response.as_deref().unwrap_or("—")) }
                " The question is to be asked again with it (by the feature's agent); the answer above is the expert's first, not final."
            }
            None => {}
        }
        @if c.rationale.is_some() || !c.uncertainty_reasons.is_empty() {
            // An id, so that a refresh leaves it open if the reader opened it.
            details id=(format!("reasoning-{}", c.id)) {
                summary { "The expert's reasoning" }
                @if let Some(rationale) = &c.rationale { p.text { (rationale) } }
                @if !c.uncertainty_reasons.is_empty() {
                    p { "Unsure because:" }
                    ul { @for reason in &c.uncertainty_reasons { li.text { (reason) } } }
                }
            }
        }
    }
}

/// Confirm, Correct or Add context for an escalation waiting for a human: the answer goes to
/// the Agent Hub through `POST …/consultations/{id}/respond`.
fn respond_form(w: &WorkflowResponse, c: &Consultation) -> Markup {
    let field = format!("response-{}", c.id);
    // Named by its question, so that with two escalations a screen reader tells the forms (and
    // their buttons) apart.
    let question = format!("question-{}", c.id);
    html! {
        form.respond data-feature=(w.feature_id.as_str()) data-consultation=(c.id) aria-labelledby=(question) {
            p.note { "The expert's answer waits for a human: confirm it, correct it, or add context (the question is then to be asked again with it, by the feature's agent)." }
            label for=(field) { "Response" }
            textarea id=(field) name="response" rows="2" maxlength=(CONTEXT_MAX_CHARS) placeholder="Required to correct or add context" {}
            // The three weigh the same: the expert was unsure, and the page does not lean the
            // reader towards confirming.
            div.buttons {
                button.secondary type="submit" name="action" value="confirm" aria-describedby=(question) disabled { "Confirm" }
                button.secondary type="submit" name="action" value="correct" aria-describedby=(question) disabled { "Correct" }
                button.secondary type="submit" name="action" value="add_context" aria-describedby=(question) disabled { "Add context" }
            }
        }
    }
}

fn actor_of(t: &Transition) -> Markup {
    html! {
        @match &t.actor {
            Some(actor) => span.actor { (actor.as_str()) }
            None => span.actor.unknown { "someone unnamed" }
        }
        @if let Some(kind) = t.actor_kind { " (" (kind) ")" }
        @if let Some(on) = &t.on_behalf_of { " for " (on.as_str()) }
    }
}

/// What a caller kept with the feature or with a step (an agent's spec, plan or pull request),
/// for the reviewer to follow: each key with its value, an http(s) address as a link, any
/// other value that is not text as its JSON. Nothing when there is none.
fn metadata(metadata: &Metadata, label: &str) -> Markup {
    html! {
        @if !metadata.is_empty() {
            dl.metadata aria-label=(label) {
                @for (key, value) in metadata.as_map() {
                    dt { (key) }
                    dd {
                        @match value {
                            serde_json::Value::String(text) => {
                                @match link(text) {
                                    Some(href) => a href=(href) rel="noreferrer" { (text) },
                                    None => (text),
                                }
                            }
                            other => code { (other) }
                        }
                    }
                }
            }
        }
    }
}

/// The address a page may link to for `text`, if it is an http(s) one (never `javascript:`),
/// written out as parsed: the address a browser would follow, whatever the text holds (a tab
/// inside, say, which parsers drop).
fn link(text: &str) -> Option<String> {
    (text.starts_with("http://") || text.starts_with("https://"))
        .then(|| reqwest::Url::parse(text).ok())
        .flatten()
        .filter(|url| url.has_host())
        .map(String::from)
}

fn feature_href(id: &str) -> String {
    // Feature ids are URL-safe by their definition.
    format!("/board/feature/{id}")
}

/// A time as people read it, in UTC.
fn when(at: Timestamp) -> String {
    at.format("%Y-%m-%d %H:%M UTC").to_string()
}

/// `at` as the page's script reads it (RFC 3339, milliseconds, UTC).
fn instant(at: Timestamp) -> String {
    at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// How long ago `at` was (as [`ago`] says it), in a `<time>` the page's script keeps current
/// while no event brings the page again.
fn since(at: Timestamp, now: Timestamp) -> Markup {
    html! { time datetime=(instant(at)) data-ago { (ago(at, now)) } }
}

/// A deadline: when, and how far off it is from `now` ([`until`]), kept current by the page's
/// script: "2026-12-08 02:45 UTC (in 3 min)".
fn due_at(at: Timestamp, now: Timestamp) -> Markup {
    html! { (when(at)) " (" time datetime=(instant(at)) data-until { (until(at, now)) } ")" }
}

/// How far off `at` is: "in 3 min" before it, "5 min ago" once past ([`ago`]'s words).
pub fn until(at: Timestamp, now: Timestamp) -> String {
    if at > now {
        format!("in {}", ago(now, at))
    } else {
        format!("{} ago", ago(at, now))
    }
}

/// How long ago `at` was, roughly: "45 s", "3 min", "2 h 5 min", "4 d 3 h".
pub fn ago(at: Timestamp, now: Timestamp) -> String {
    let s = (now - at).num_seconds().max(0);
    match s {
        0..60 => format!("{s} s"),
        60..3600 => format!("{} min", s / 60),
        3600..86_400 => format!("{} h {} min", s / 3600, s % 3600 / 60),
        _ => format!("{} d {} h", s / 86_400, s % 86_400 / 3600),
    }
}

/// Why an approval would be refused, in a sentence for the person who would make it.
pub fn why_not(error: &orchestrator_core::TransitionError) -> String {
    use orchestrator_core::TransitionError as E;
    match error {
        E::AgentMayNotDecide { .. } => {
            "you are an agent, and only a person decides at the gate.".to_owned()
        }
        E::SelfApproval { .. } => {
            "this is your own work, and its author may not approve it.".to_owned()
        }
        E::AlreadyApproved { .. } => {
            "you approved this stay at the gate already; it waits for someone else.".to_owned()
        }
        other => format!("{other}."),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_people_say_them() {
        let now = chrono::DateTime::from_timestamp(1_000_000, 0).unwrap_or_default();
        let before = |s| now - chrono::Duration::seconds(s);
        assert_eq!(ago(before(42), now), "42 s");
        assert_eq!(ago(before(3 * 60 + 5), now), "3 min");
        assert_eq!(ago(before(2 * 3600 + 5 * 60), now), "2 h 5 min");
        assert_eq!(ago(before(4 * 86_400 + 3 * 3600), now), "4 d 3 h");
        assert_eq!(ago(now + chrono::Duration::seconds(5), now), "0 s");
        // A deadline, before and after.
        assert_eq!(until(now + chrono::Duration::seconds(185), now), "in 3 min");
        assert_eq!(until(before(300), now), "5 min ago");
        assert_eq!(until(now, now), "0 s ago");
    }

    #[test]
    fn a_long_description_is_cut_at_a_character_with_an_ellipsis() {
        assert_eq!(excerpt("short"), "short");
        let exact = "é".repeat(EXCERPT_CHARS);
        assert_eq!(excerpt(&exact), exact);
        let long = format!("{} tail", "é".repeat(EXCERPT_CHARS - 1));
        assert_eq!(
            excerpt(&long),
            format!("{}…", "é".repeat(EXCERPT_CHARS - 1))
        );
    }

    #[test]
    fn values_are_escaped() {
        let markup = problem_page("<b>x</b>", "a & b <script>");
        let html = markup.into_string();
        assert!(html.contains("&lt;b&gt;x&lt;/b&gt;"));
        assert!(html.contains("a &amp; b &lt;script&gt;"));
        assert!(!html.contains("<script>"));
    }
}
