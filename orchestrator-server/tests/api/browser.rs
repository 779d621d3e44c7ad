//! The reviewer board in a real headless Chromium, driven over WebDriver (Debian's `chromium`
//! and `chromium-driver`, which `.ci/run` installs): sign-in, two reviewers taking a feature
//! through a two-approval gate while the other's page follows live (and, after the server
//! restarts under it, reconnects and resumes by id), a rejection refused without
//! a reason and accepted with one, a conflict explained, an overdue badge, an agent told why it
//! may not approve, sign-out ending the session on the server, and a page that asks nothing of
//! any other origin; a busy log refreshing a page at most once a second, a hidden tab
//! letting its stream go and catching up when shown, a decision saying it is on its way, a
//! rejection without a reason asked for in the page, the focus kept on the page when a live
//! update takes its field away, a sign-in in another window followed;
//! and (on PostgreSQL) a page that follows a log restored from an older
//! copy under the running server, and a feature's page that follows on past events retention
//! deleted. With `BOARD_SCREENSHOTS=<dir>` it saves the screenshots shown in the README.
//!
//! Without `/usr/bin/chromedriver` the test says so and passes, except under `CI`, where it
//! fails: CI must run it.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client as Browser, ClientBuilder, Locator};
use orchestrator_core::api::{AdvanceRequest, ConsultRequest, GateRequest, StartWorkflowRequest};
use orchestrator_core::{ActorKind, Role};
use serde_json::{Value, json};
use tempfile::TempDir;

use crate::helpers::{TestApp, free_port, mint, spawn_app_with};

const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const CHROMIUM: &str = "/usr/bin/chromium";
/// How long a page may take to show what a step expects. Generous: the machine may be busy
/// with the other tests; the live path itself is measured and printed.
const PATIENCE: Duration = Duration::from_secs(15);

/// A chromedriver process, stopped on drop.
struct Driver {
    child: Child,
    url: String,
    _profiles: TempDir,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Driver {
    async fn start() -> Option<Driver> {
        if !Path::new(CHROMEDRIVER).exists() {
            assert!(
                std::env::var_os("CI").is_none(),
                "{CHROMEDRIVER} is missing: .ci/run installs chromium-driver"
            );
            eprintln!(
                "skipped: {CHROMEDRIVER} is not installed (apt-get install chromium chromium-driver)"
            );
            return None;
        }
        let port = free_port();
        let child = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let driver = Driver {
            child,
            url: format!("http://127.0.0.1:{port}"),
            _profiles: TempDir::new().unwrap(),
        };
        let started = Instant::now();
        while reqwest::get(format!("{}/status", driver.url))
            .await
            .is_err()
        {
            assert!(started.elapsed() < PATIENCE, "chromedriver did not come up");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Some(driver)
    }

    /// A new headless browser with a profile of its own (so its own cookies).
    async fn browser(&self, name: &str) -> Browser {
        let profile = self._profiles.path().join(name);
        let args = [
            "--headless=new".to_owned(),
            "--no-sandbox".to_owned(),
            "--disable-gpu".to_owned(),
            "--disable-dev-shm-usage".to_owned(),
            // This machine has no internet: keep Chromium from trying.
            "--disable-background-networking".to_owned(),
            "--disable-component-update".to_owned(),
            "--disable-sync".to_owned(),
            "--disable-quic".to_owned(),
            "--no-first-run".to_owned(),
            "--window-size=1400,1000".to_owned(),
            // A name that is not loopback, for pages that behave otherwise on `localhost`.
            "--host-resolver-rules=MAP docs.example 127.0.0.1".to_owned(),
            format!("--user-data-dir={}", profile.display()),
        ];
        let mut capabilities = serde_json::Map::new();
        capabilities.insert(
            "goog:chromeOptions".to_owned(),
            json!({ "binary": CHROMIUM, "args": args }),
        );
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        ClientBuilder::new(connector)
            .capabilities(capabilities)
            .connect(&self.url)
            .await
            .expect("a browser session")
    }
}

/// The element a control's label names.
fn labelled(label: &str) -> String {
    format!("//*[@id=//label[normalize-space()='{label}']/@for]")
}

fn button(name: &str) -> String {
    format!("//button[normalize-space()='{name}']")
}

/// Waits until `script` returns `expected` in the page.
async fn wait_script(browser: &Browser, script: &str, expected: &str) {
    let started = Instant::now();
    let mut last = Value::Null;
    while started.elapsed() < PATIENCE {
        last = browser.execute(script, vec![]).await.unwrap_or(Value::Null);
        if last.as_str() == Some(expected) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{script} never returned {expected:?}; last: {last}");
}

/// Nothing on `page` is wider than its window (no sideways scrolling).
async fn no_wider_than_the_window(page: &Browser) {
    let overflow = page
        .execute(
            "return document.documentElement.scrollWidth - window.innerWidth;",
            vec![],
        )
        .await
        .unwrap();
    assert!(
        overflow.as_i64().unwrap_or(1) <= 0,
        "wider than the window by {overflow} px at {}",
        page.current_url().await.unwrap()
    );
}

/// `agent` asks the experts a question about `feature` that they answer at once; `page`, open
/// on the feature, shows it.
async fn asked_and_shown(
    agent: &orchestrator_client::Client,
    feature: &orchestrator_core::FeatureId,
    page: &Browser,
    question: &str,
) {
    agent
        .create_consultation(
            feature,
            &ConsultRequest::new("architecture", format!("{question} [confidence=95]")),
        )
        .await
        .unwrap();
    wait_text(page, "table.consultations", |t| t.contains(question)).await;
}

/// Waits until `check` holds for the page's text at `css`, and answers the text.
async fn wait_text(browser: &Browser, css: &str, check: impl Fn(&str) -> bool) -> String {
    let started = Instant::now();
    let mut last = String::new();
    while started.elapsed() < PATIENCE {
        if let Ok(element) = browser.find(Locator::Css(css)).await
            && let Ok(text) = element.text().await
        {
            if check(&text) {
                return text;
            }
            last = text;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let url = browser
        .current_url()
        .await
        .map(|u| u.to_string())
        .unwrap_or_default();
    let source = browser.source().await.unwrap_or_default();
    panic!("{css} never matched; last seen: {last:?}, at {url}:\n{source}");
}

async fn sign_in(browser: &Browser, app: &TestApp, token: &str) {
    browser.goto(&app.url("/board")).await.unwrap();
    browser
        .find(Locator::XPath(&labelled("Token")))
        .await
        .unwrap()
        .send_keys(token)
        .await
        .unwrap();
    browser
        .find(Locator::XPath(&button("Sign in")))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_text(browser, "header .who", |t| t.starts_with("Signed in as")).await;
}

/// Clicks the button `name`. A button found just before the board swapped its content in is
/// stale, and the click is refused without reaching the page: then the new one is clicked
/// (only then: another error might come from a click that did reach it).
async fn click(browser: &Browser, name: &str) {
    let started = Instant::now();
    loop {
        let button = browser.find(Locator::XPath(&button(name))).await.unwrap();
        match button.click().await {
            Ok(()) => return,
            Err(e) if e.is_stale_element_reference() && started.elapsed() < PATIENCE => {
                eprintln!("clicking {name} again: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("cannot click {name}: {e}"),
        }
    }
}

/// Types `text` into the field labelled `label`. The board swaps its content in whenever an
/// event arrives (keeping what was typed), which makes a field found just before a swap
/// stale: then the new one is emptied and typed into again.
async fn type_into(browser: &Browser, label: &str, text: &str) {
    let started = Instant::now();
    loop {
        let field = browser
            .find(Locator::XPath(&labelled(label)))
            .await
            .unwrap();
        match field.send_keys(text).await {
            Ok(()) => return,
            Err(e) if started.elapsed() < PATIENCE => {
                eprintln!("typing into {label} again: {e}");
                if let Ok(field) = browser.find(Locator::XPath(&labelled(label))).await {
                    let _ = field.clear().await;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("cannot type into {label}: {e}"),
        }
    }
}

async fn screenshot(browser: &Browser, name: &str) {
    let Some(dir) = std::env::var_os("BOARD_SCREENSHOTS") else {
        return;
    };
    let png = browser.screenshot().await.unwrap();
    std::fs::write(PathBuf::from(dir).join(name), png).unwrap();
}

/// Every resource the page loaded came from `origin`, and its markup names no other origin and
/// holds nothing its content security policy refuses (nor did the browser meet any) — but for
/// the links to what a caller gave with a feature (its spec, its pull request), which load
/// nothing.
async fn only_own_origin(browser: &Browser, origin: &str) {
    let loaded = browser
        .execute(
            "return performance.getEntriesByType('resource').map(e => e.name).concat([location.href]);",
            vec![],
        )
        .await
        .unwrap();
    let urls: Vec<String> = serde_json::from_value(loaded).unwrap();
    assert!(
        urls.len() >= 3,
        "the page, its stylesheet and script: {urls:?}"
    );
    for url in urls {
        assert!(url.starts_with(origin), "{url} is not from {origin}");
    }
    // What the policy blocks never loads, so it is not among the resources above: the page's
    // markup names nothing of another origin, and holds nothing the policy would refuse to run
    // (inline script or style, an event handler attribute).
    let refused = browser
        .execute(
            "const found = [];
             for (const e of document.querySelectorAll('*')) {
               for (const a of e.attributes) {
                 if (a.name === 'style' || a.name.startsWith('on')) found.push(e.tagName + ' ' + a.name);
               }
               if ((e.tagName === 'SCRIPT' && !e.src) || e.tagName === 'STYLE') found.push('inline ' + e.tagName);
               for (const name of ['src', 'href', 'action', 'srcset', 'poster', 'data']) {
                 const value = e.getAttribute(name);
                 if (e.tagName === 'A' && name === 'href' && e.closest('dl.metadata')) continue;
                 if (value && new URL(value, location.href).origin !== location.origin) {
                   found.push(e.tagName + ' ' + name + '=' + value);
                 }
               }
             }
             return found;",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(
        refused,
        json!([]),
        "at {}",
        browser.current_url().await.unwrap()
    );
    // And the browser met nothing its policy refused since the page loaded.
    assert_eq!(policy_violations(browser).await, Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread")]
async fn reviewers_take_a_feature_through_a_two_approval_gate_in_the_browser() {
    let Some(driver) = Driver::start().await else {
        return;
    };
    let keys = TempDir::new().unwrap();
    let file = keys.path().join("principals.toml");
    let alice = mint(&file, "alice", ActorKind::Human, &[Role::Reviewer]);
    let bob = mint(&file, "bob", ActorKind::Human, &[Role::Reviewer]);
    // An agent holding the reviewer role too: it still may not approve.
    let bot = mint(
        &file,
        "build-bot",
        ActorKind::Agent,
        &[Role::Agent, Role::Reviewer],
    );
    // A fixed port, so that the server can restart under the open pages.
    let port = free_port();
    let app = spawn_app_with(|c| {
        c.principals_file = Some(file.clone());
        c.port = port;
    })
    .await;
    let origin = app.url("");
    let agent = app.client_with(&bot);
    let at_gate = |id: &'static str, approvals: u64, due: Option<u64>| {
        let agent = agent.clone();
        async move {
            let mut start = StartWorkflowRequest::new(id, format!("{id}: the work to review"));
            start.gate = Some(GateRequest {
                required_approvals: Some(approvals),
                due_in_seconds: due,
                ..GateRequest::default()
            });
            // What the agent worked from and what it made, for the reviewer to follow.
            start.metadata = Some(json!({"spec": format!("https://docs.example/specs/{id}")}));
            agent.start_workflow(&start).await.unwrap();
            let f = orchestrator_core::FeatureId::parse(id).unwrap();
            let mut done = AdvanceRequest::new("agent_complete");
            done.metadata = Some(json!({
                "pr": format!("https://git.example/shop/pull/{}", id.len()),
                "tests": "412 passed"
            }));
            agent.advance_workflow(&f, &done).await.unwrap();
        }
    };
    at_gate("checkout-flow", 2, None).await;
    at_gate("search-filters", 1, None).await;
    at_gate("password-reset", 1, Some(1)).await;
    at_gate("stale-page", 1, None).await;
    at_gate("late-session", 1, None).await;
    for (id, description) in [
        ("dark-mode", "A dark theme for the settings pages"),
        ("export-csv", "Export the order history as CSV"),
    ] {
        agent
            .start_workflow(&StartWorkflowRequest::new(id, description))
            .await
            .unwrap();
    }
    // One answered consultation, and two escalated to a human: they block the gate.
    at_gate("payments-retry", 2, Some(86_400)).await;
    let payments = orchestrator_core::FeatureId::parse("payments-retry").unwrap();
    for (topic, question) in [
        (
            "architecture",
            "Which backoff suits the card processor's rate limits? [confidence=92]",
        ),
        (
            "security",
            "May we store the card token for retries? [confidence=30]",
        ),
        (
            "security",
            "Must the retry log leave out the card number? [confidence=40]",
        ),
    ] {
        agent
            .create_consultation(&payments, &ConsultRequest::new(topic, question))
            .await
            .unwrap();
    }

    let a = driver.browser("alice").await;
    let b = driver.browser("bob").await;

    // Signed out, the board asks for a token (in a POST body: never in a URL).
    a.goto(&app.url("/board")).await.unwrap();
    wait_text(&a, "h1", |t| t == "Sign in").await;
    sign_in(&a, &app, &alice).await;
    assert!(!a.current_url().await.unwrap().as_str().contains(&alice));
    // The overdue gate is listed first, with its badge (the sweep notes it within seconds
    // and the page follows the stream).
    a.set_window_size(1400, 1400).await.unwrap();
    let first = wait_text(&a, "ul.waiting li:first-child", |t| t.contains("Overdue")).await;
    assert!(first.contains("password-reset"), "{first}");
    let waiting = wait_text(&a, "ul.waiting", |t| t.contains("checkout-flow")).await;
    assert!(waiting.contains("Approvals 0 of 2"), "{waiting}");
    only_own_origin(&a, &origin).await;
    screenshot(&a, "board-overview.png").await;
    // A feature reaching the gate while she looks is told to a screen reader, not only shown.
    at_gate("late-arrival", 1, None).await;
    wait_script(
        &a,
        "return document.getElementById('changes').textContent;",
        "7 features wait for review, 1 overdue.",
    )
    .await;

    // A link from another site (a page on `localhost`, another site than `127.0.0.1`) brings
    // no SameSite=Strict cookie: the board asks for the page again from its own origin, and
    // she is still signed in there, not asked to sign in again.
    let elsewhere = app.url("/health").replace("127.0.0.1", "localhost");
    assert_ne!(
        elsewhere,
        app.url("/health"),
        "the server is not on 127.0.0.1"
    );
    a.goto(&elsewhere).await.unwrap();
    a.execute(
        "location.href = arguments[0];",
        vec![json!(app.url("/board/feature/checkout-flow"))],
    )
    .await
    .unwrap();
    wait_text(&a, "#verdict", |t| t == "You may approve.").await;
    // "Time in state" is kept current on a page no event brings again (here: as if the page
    // had been made two hours ago, told when the tab is shown again).
    a.execute(
        "const main = document.getElementById('main');
         const time = document.querySelector('dl.facts time[data-ago]');
         time.dateTime = new Date(Date.parse(main.dataset.now) - (2 * 3600 + 5 * 60) * 1000).toISOString();
         document.dispatchEvent(new Event('visibilitychange'));",
        vec![],
    )
    .await
    .unwrap();
    wait_text(&a, "dl.facts time[data-ago]", |t| t == "2 h 5 min").await;
    // So is a deadline's "in 3 min", and once past, its "… ago".
    a.execute(
        "const main = document.getElementById('main');
         const made = Date.parse(main.dataset.now);
         for (const [id, offset] of [['soon', 185], ['past', -300]]) {
           const time = document.createElement('time');
           time.id = id;
           time.dataset.until = '';
           time.dateTime = new Date(made + offset * 1000).toISOString();
           main.append(time);
         }
         document.dispatchEvent(new Event('visibilitychange'));",
        vec![],
    )
    .await
    .unwrap();
    wait_text(&a, "#soon", |t| t == "in 3 min").await;
    wait_text(&a, "#past", |t| t == "5 min ago").await;

    // Bob has the feature open while Alice approves first: 1 of 2, and now she may not
    // approve again.
    sign_in(&b, &app, &bob).await;
    b.goto(&app.url("/board/feature/checkout-flow"))
        .await
        .unwrap();
    wait_text(&b, "#approvals", |t| t == "Approvals 0 of 2").await;
    a.goto(&app.url("/board/feature/checkout-flow"))
        .await
        .unwrap();
    wait_text(&a, "#verdict", |t| t == "You may approve.").await;
    click(&a, "Approve").await;
    wait_text(&a, "#message", |t| t.contains("Approved: 1 of 2")).await;
    wait_text(&a, "#approvals", |t| t == "Approvals 1 of 2").await;
    let why = wait_text(&a, "#verdict", |t| t.starts_with("You may not approve")).await;
    assert!(
        why.contains("approved this stay at the gate already"),
        "{why}"
    );
    // Her Approve button went with her approval: the focus is on what the page says about it,
    // not thrown to the top of the document.
    wait_script(&a, "return document.activeElement.id;", "verdict").await;
    // It stays there when the page follows a change that leaves the verdict as it was (a
    // consultation answered at once): the new verdict takes the focus the old one had.
    a.execute(
        "document.getElementById('main').dataset.before = 'yes';",
        vec![],
    )
    .await
    .unwrap();
    let checkout = orchestrator_core::FeatureId::parse("checkout-flow").unwrap();
    agent
        .create_consultation(
            &checkout,
            &ConsultRequest::new(
                "architecture",
                "Is the retry safe to repeat? [confidence=95]",
            ),
        )
        .await
        .unwrap();
    wait_text(&a, "table.consultations", |t| t.contains("resolved")).await;
    wait_script(
        &a,
        "return document.getElementById('main').dataset.before || 'swapped';",
        "swapped",
    )
    .await;
    wait_script(&a, "return document.activeElement.id;", "verdict").await;

    // Bob's page followed her approval (the same round of work: his decision is not pinned
    // to the version he opened), and he approves second; Alice's open page follows without a
    // reload.
    wait_text(&b, "#approvals", |t| t == "Approvals 1 of 2").await;
    wait_text(&b, "#decide[data-version='3']", |_| true).await;
    // The consultation changes no version: his page may show it being asked (no Approve
    // while it is) until it has followed the answer too.
    wait_text(&b, "table.consultations", |t| t.contains("resolved")).await;
    let decided = Instant::now();
    click(&b, "Approve").await;
    wait_text(&b, "#message", |t| t.contains("moved to PHASE_2")).await;
    wait_text(&a, "#state", |t| t == "PHASE_2").await;
    // Alice's "1 of 2" was about the page before Bob's approval: it is gone with it.
    wait_script(
        &a,
        "return document.getElementById('message').textContent;",
        "",
    )
    .await;
    // Bob's own decision is told by its message, not a second time as a change.
    wait_text(&b, "#state", |t| t == "PHASE_2").await;
    wait_script(
        &b,
        "return document.getElementById('changes').textContent;",
        "",
    )
    .await;
    // ...and says so to a screen reader, though Alice did nothing.
    wait_script(
        &a,
        "return document.getElementById('changes').textContent;",
        "Now PHASE_2.",
    )
    .await;
    eprintln!(
        "the other reviewer's page showed the approval {:?} after the click",
        decided.elapsed()
    );
    let history = wait_text(&a, "ol.timeline", |t| t.contains("bob")).await;
    assert!(history.contains("approved by alice (human)"), "{history}");
    // Each step in words, not the API's names for them.
    assert!(history.contains("work completed by"), "{history}");
    assert!(!history.contains("human_approved"), "{history}");

    // The server goes away under a decision: Bob's page cannot know whether it was recorded,
    // and says so rather than "nothing was decided".
    b.goto(&app.url("/board/feature/search-filters"))
        .await
        .unwrap();
    wait_text(&b, "#state", |t| t == "GATE_1").await;
    let mut app = app;
    app.stop().await;
    type_into(&b, "Reason", "Not yet").await;
    click(&b, "Reject").await;
    let unknown = wait_text(&b, "#message", |t| {
        t.starts_with("No answer from the server")
    })
    .await;
    assert!(
        unknown.contains("may or may not have been recorded"),
        "{unknown}"
    );

    // The server restarts under the open page: the page reconnects, resumes by id, and shows
    // what happened meanwhile (the session, kept in the database, still holds).
    let app = app.restart().await;
    agent
        .advance_workflow(&checkout, &AdvanceRequest::new("agent_complete"))
        .await
        .unwrap();
    wait_text(&a, "#state", |t| t == "DONE").await;
    wait_text(&a, "#live", |t| t == "Live").await;

    // A rejection needs a reason, and the page says so before sending anything (the server
    // refuses one too: the API tests show it).
    a.goto(&app.url("/board/feature/search-filters"))
        .await
        .unwrap();
    click(&a, "Reject").await;
    let refused = wait_text(&a, "#message", |t| t.starts_with("Not recorded")).await;
    assert!(refused.contains("reason"), "{refused}");
    wait_text(&a, "#state", |t| t == "GATE_1").await;
    type_into(&a, "Reason", "The filters forget the sort order").await;
    // A reload (the session ended and the page asks to sign in again, the stream gave up)
    // gives back what was typed: it is kept in the tab's session storage, and the page
    // opened anew (not restored by the browser) fills it in.
    let reason = async || {
        a.execute("return document.getElementById('reason').value;", vec![])
            .await
            .unwrap()
    };
    let drafts = async || {
        a.execute(
            "return Object.keys(sessionStorage).filter((k) => k.startsWith('orchestrator-board-drafts:')).length;",
            vec![],
        )
        .await
        .unwrap()
    };
    assert_eq!(drafts().await.as_u64(), Some(1));
    a.goto(&app.url("/board/feature/search-filters"))
        .await
        .unwrap();
    wait_text(&a, "#state", |t| t == "GATE_1").await;
    assert_eq!(
        reason().await.as_str(),
        Some("The filters forget the sort order")
    );
    click(&a, "Reject").await;
    wait_text(&a, "#message", |t| {
        t.contains("Rejected: the feature went back to PHASE_1")
    })
    .await;
    // Recorded, it is let go.
    assert_eq!(drafts().await.as_u64(), Some(0));
    wait_text(&a, "#state", |t| t == "PHASE_1").await;
    wait_text(&a, "#rework", |t| t == "1 time").await;
    wait_text(&a, "ul.rejections", |t| {
        t.contains("The filters forget the sort order")
    })
    .await;
    // What people typed keeps its lines.
    let wrap = a
        .execute(
            "return getComputedStyle(document.querySelector('ul.rejections q')).whiteSpace;",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(wrap.as_str(), Some("pre-wrap"));

    // Alice reads the work at the gate; meanwhile Bob sends it back (her page shows it gone
    // from the gate) and the agent brings a new round. The live page shows it, but a decision
    // made on what she read is not recorded against the new round: the page says what changed,
    // then she decides again.
    a.goto(&app.url("/board/feature/stale-page")).await.unwrap();
    wait_text(&a, "#verdict", |t| t == "You may approve.").await;
    let stale = orchestrator_core::FeatureId::parse("stale-page").unwrap();
    let bob_api = app.client_with(&bob);
    let mut send_back = AdvanceRequest::new("human_rejected");
    send_back.reason = Some("The copy is out of date".to_owned());
    let new_round = async |from: u64| {
        bob_api.advance_workflow(&stale, &send_back).await.unwrap();
        wait_text(&a, "#state", |t| t == "PHASE_1").await;
        agent
            .advance_workflow(&stale, &AdvanceRequest::new("agent_complete"))
            .await
            .unwrap();
        let changed = wait_text(&a, "#message", |t| t.starts_with("A new round")).await;
        assert!(
            changed.contains(&format!(
                "you read version {from}, it is now at version {}",
                from + 2
            )),
            "{changed}"
        );
    };
    new_round(2).await;
    wait_text(&a, "#rework", |t| t == "1 time").await;
    click(&a, "Approve").await;
    let conflict = wait_text(&a, "#message", |t| t.starts_with("Not recorded")).await;
    assert!(
        conflict.contains("changed while you were looking"),
        "{conflict}"
    );
    // It says what changed, in the order it happened.
    assert!(
        conflict.contains(
            "you saw version 2; since then bob rejected it, then build-bot completed the work; \
             it is now GATE_1 at version 4, with 0 of 1 approvals"
        ),
        "{conflict}"
    );
    // Once the page shows the feature as it is, the message says so.
    wait_text(&a, "#message", |t| {
        t.ends_with("The page now shows it as it is; decide again if you still want to.")
    })
    .await;
    // The page shown after the refusal is the one she decides on now. She writes a note, and
    // another round comes while she writes: the note waits for the form's return, and the
    // decision is refused again.
    wait_text(&a, "#decide[data-version='4']", |_| true).await;
    type_into(&a, "Reason", "Reads well").await;
    new_round(4).await;
    let note = a
        .execute("return document.getElementById('reason').value;", vec![])
        .await
        .unwrap();
    assert_eq!(note.as_str(), Some("Reads well"));
    // This time the page cannot be fetched again after the refusal: the message does not claim
    // it shows the feature as it is, and says to reload.
    a.execute(
        "window.realFetch = window.fetch;
         window.fetch = (url, options) => String(url) === location.href
           ? Promise.reject(new TypeError('blocked by the test'))
           : window.realFetch(url, options);",
        vec![],
    )
    .await
    .unwrap();
    click(&a, "Approve").await;
    let conflict = wait_text(&a, "#message", |t| {
        t.ends_with("The page has not been refreshed to show it: reload it before deciding again.")
    })
    .await;
    assert!(conflict.contains("you saw version 4"), "{conflict}");
    a.execute("window.fetch = window.realFetch;", vec![])
        .await
        .unwrap();
    wait_text(&a, "#decide[data-version='6']", |_| true).await;
    click(&a, "Approve").await;
    wait_text(&a, "#message", |t| t.contains("moved to PHASE_2")).await;

    // Narrow screens: nothing wider than the window, on the page with most to show (a gate
    // and its escalations' table, each cell named by its column).
    // Tall enough for the table in the screenshot.
    a.set_window_size(400, 2000).await.unwrap();
    a.goto(&app.url("/board/feature/payments-retry"))
        .await
        .unwrap();
    wait_text(&a, "table.consultations", |t| t.contains("Blocking")).await;
    no_wider_than_the_window(&a).await;
    screenshot(&a, "board-narrow.png").await;
    // A refusal is said at the top of the page: a reader who acted further down has it brought
    // into view, and keeps the focus where they acted.
    a.set_window_size(400, 600).await.unwrap();
    a.execute(
        "const approve = document.querySelector('#decide button[value=human_approved]');
         approve.scrollIntoView({ block: 'start' });
         approve.focus();
         approve.click();",
        vec![],
    )
    .await
    .unwrap();
    let blocked = wait_text(&a, "#message", |t| t.starts_with("Not recorded")).await;
    assert!(
        blocked.ends_with("; the consultations marked Blocking below hold it"),
        "{blocked}"
    );
    wait_script(
        &a,
        "const r = document.getElementById('message').getBoundingClientRect();
         return r.top > -1 && r.bottom < window.innerHeight + 1 ? 'seen' : 'hidden';",
        "seen",
    )
    .await;
    wait_script(&a, "return document.activeElement.value;", "human_approved").await;
    // Nor on a page of long names without a space to break at (a directory's, a bot's): the
    // gate's authors and the history name them whole, on as many lines as they need.
    let long = "ReleaseEngineeringAutomationServiceAccountEuWest1";
    let mut start = StartWorkflowRequest::new("long-names", "Names to wrap");
    start.metadata = Some(json!({
        "acceptance_criteria_checklist": "Every retry backs off exponentially, with jitter",
        "test_report_artifact_url": "a report kept with the build that made it",
    }));
    agent.start_workflow(&start).await.unwrap();
    let mut done = AdvanceRequest::new("agent_complete");
    done.actor = Some(long.to_owned());
    agent
        .advance_workflow(
            &orchestrator_core::FeatureId::parse("long-names").unwrap(),
            &done,
        )
        .await
        .unwrap();
    // The narrowest phone: long metadata keys leave their values most of the line.
    a.set_window_size(320, 800).await.unwrap();
    a.goto(&app.url("/board/feature/long-names")).await.unwrap();
    wait_text(&a, "ol.timeline", |t| t.contains(long)).await;
    no_wider_than_the_window(&a).await;
    wait_script(
        &a,
        "const dl = document.querySelector('dl.metadata').getBoundingClientRect().width;
         const dd = document.querySelector('dl.metadata dd').getBoundingClientRect().width;
         return dd >= dl / 2 ? 'room' : `a value ${dd} px wide of ${dl}`;",
        "room",
    )
    .await;
    screenshot(&a, "board-phone.png").await;
    // Tall enough for the whole page in the screenshot.
    a.set_window_size(1400, 1500).await.unwrap();
    // An escalation waiting for a human blocks the gate, and the page says so.
    a.goto(&app.url("/board/feature/payments-retry"))
        .await
        .unwrap();
    let why = wait_text(&a, "#verdict", |t| t.starts_with("Not yet")).await;
    assert!(why.contains("blocked by 2 escalations"), "{why}");
    let consultations = wait_text(&a, "table.consultations", |t| t.contains("Blocking")).await;
    assert!(consultations.contains("resolved"), "{consultations}");
    only_own_origin(&a, &origin).await;
    screenshot(&a, "board-feature.png").await;
    // Approve is still offered (an escalation answered at the hub itself would not hold the
    // gate once the hub is asked); these still wait there, so the approval is not recorded.
    wait_text(&a, "section.gate", |t| {
        t.contains("Approve asks the Agent Hub again")
    })
    .await;
    // A hub that fails at it: the server stored nothing, and the page says so plainly.
    app.hub.fail_next_lookup();
    click(&a, "Approve").await;
    let failed = wait_text(&a, "#message", |t| t.starts_with("Not recorded")).await;
    assert!(
        failed.contains("the agent hub answered with an error (nothing was stored"),
        "{failed}"
    );
    wait_script(
        &a,
        "const b = document.querySelector('#decide button[value=human_approved]');
         return b.disabled || b.getAttribute('aria-disabled') === 'true' ? 'off' : 'on';",
        "on",
    )
    .await;
    click(&a, "Approve").await;
    let blocked = wait_text(&a, "#message", |t| {
        t.starts_with("Not recorded") && t != failed
    })
    .await;
    assert!(blocked.contains("blocked"), "{blocked}");
    wait_text(&a, "#approvals", |t| t == "Approvals 0 of 2").await;

    // Alice answers the first escalation from the page: her correction goes to the hub and
    // resolves it; the other still holds the gate.
    // Without the correction, it is asked for in the page, the focus on the field, and
    // nothing is sent (the server refuses one too: see the API tests). The refused approval's
    // page is shown first (its buttons on again), so no swap of it lands meanwhile.
    wait_script(
        &a,
        "const b = document.querySelector('#decide button[value=human_approved]');
         return b.disabled || b.getAttribute('aria-disabled') === 'true' ? 'off' : 'on';",
        "on",
    )
    .await;
    click(&a, "Correct").await;
    wait_text(&a, "#message", |t| {
        t == "Not sent: a correction needs the right answer; write it in Response."
    })
    .await;
    wait_script(
        &a,
        "return document.activeElement.getAttribute('aria-invalid') + ' ' + document.activeElement.name;",
        "true response",
    )
    .await;
    let answers = a
        .execute(
            "return performance.getEntriesByType('resource')
               .filter((e) => e.initiatorType === 'fetch' && new URL(e.name).pathname.endsWith('/respond'))
               .length;",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(answers, json!(0), "nothing sent");
    type_into(
        &a,
        "Response",
        "Only the processor's token, never the card number",
    )
    .await;
    click(&a, "Correct").await;
    wait_text(&a, "#message", |t| {
        t == "Answered: the consultation is resolved."
    })
    .await;
    // Shown as hers, with what the expert had said beside it.
    wait_text(&a, "table.consultations", |t| {
        t.contains("Only the processor's token, never the card number")
            && t.contains("Corrected by alice; the expert had said:")
    })
    .await;
    let why = wait_text(&a, "#verdict", |t| t.contains("blocked by 1 escalation")).await;
    assert!(why.starts_with("Not yet, as last known here"), "{why}");
    let answered = agent
        .list_consultations(&payments)
        .await
        .unwrap()
        .items
        .into_iter()
        .find(|c| {
            c.final_answer.as_deref() == Some("Only the processor's token, never the card number")
        })
        .expect("the correction is the consultation's answer");
    assert_eq!(
        answered.human_responder.as_deref(),
        Some("alice"),
        "{answered:?}"
    );

    // The form left is named by its question. A keyboard user on its Confirm button stays
    // there when the page follows a change (here a new consultation).
    let named = a
        .execute(
            "const form = document.querySelector('form.respond');
             return document.getElementById(form.getAttribute('aria-labelledby')).textContent;",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(
        named.as_str(),
        Some("Must the retry log leave out the card number? [confidence=40]")
    );
    // And the expert's reasoning she opened stays open.
    let opened = a
        .execute(
            "const reasoning = document.querySelector('table.consultations details');
             reasoning.open = true;
             return reasoning.id;",
            vec![],
        )
        .await
        .unwrap();
    a.execute(
        "document.querySelector('form.respond button[value=confirm]').focus();",
        vec![],
    )
    .await
    .unwrap();
    // A change the page follows: a new consultation, shown.
    asked_and_shown(&agent, &payments, &a, "Which queue holds the retries?").await;
    let focused = a
        .execute(
            "const e = document.activeElement;
             return e.tagName + ' ' + e.value + ' ' + (e.form && e.form.dataset.consultation);",
            vec![],
        )
        .await
        .unwrap();
    let form = a
        .execute(
            "return 'BUTTON confirm ' + document.querySelector('form.respond').dataset.consultation;",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(focused, form);
    let still_open = a
        .execute(
            "return document.getElementById(arguments[0]).open;",
            vec![opened.clone()],
        )
        .await
        .unwrap();
    assert_eq!(still_open, json!(true), "{opened}");
    // Its summary, focused, keeps the focus through the next change too.
    a.execute(
        "document.getElementById(arguments[0]).querySelector('summary').focus();",
        vec![opened.clone()],
    )
    .await
    .unwrap();
    asked_and_shown(&agent, &payments, &a, "Which log keeps the retries?").await;
    let focused = a
        .execute(
            "const e = document.activeElement;
             return e.tagName + ' ' + e.parentElement.id + ' ' + e.parentElement.open;",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(
        focused.as_str().map(str::to_owned),
        opened.as_str().map(|id| format!("SUMMARY {id} true"))
    );

    // A refusal the reader needs stays when the refresh after it shows somebody else's change:
    // Bob approves a two-approval gate while Alice's page, not refreshed since, shows none;
    // her Approve is refused and says why, and the page then shows the feature as it is.
    let mut race = StartWorkflowRequest::new("same-round", "Two approvals, one raced");
    race.gate = Some(GateRequest {
        required_approvals: Some(2),
        ..GateRequest::default()
    });
    agent.start_workflow(&race).await.unwrap();
    let raced = orchestrator_core::FeatureId::parse("same-round").unwrap();
    agent
        .advance_workflow(&raced, &AdvanceRequest::new("agent_complete"))
        .await
        .unwrap();
    a.goto(&app.url("/board/feature/same-round")).await.unwrap();
    wait_text(&a, "#verdict", |t| t == "You may approve.").await;
    // Her page fetches nothing again until she decides.
    a.execute(
        "window.realFetch = window.fetch;
         window.fetch = (url, options) => {
           if (options && options.method === 'POST') {
             window.fetch = window.realFetch;
             return window.realFetch(url, options);
           }
           return String(url) === location.href
             ? Promise.reject(new TypeError('held back by the test'))
             : window.realFetch(url, options);
         };",
        vec![],
    )
    .await
    .unwrap();
    bob_api
        .advance_workflow(&raced, &AdvanceRequest::new("human_approved"))
        .await
        .unwrap();
    wait_text(&a, "#live", |t| t.starts_with("Live, but")).await;
    wait_text(&a, "#approvals", |t| t == "Approvals 0 of 2").await;
    click(&a, "Approve").await;
    wait_text(&a, "#approvals", |t| t == "Approvals 1 of 2").await;
    let refused = wait_text(&a, "#message", |t| t.starts_with("Not recorded")).await;
    assert!(
        refused.contains(
            "changed while you were looking (you saw version 2; since then bob approved; it is \
             now GATE_1 at version 3, with 1 of 2 approvals)"
        ),
        "{refused}"
    );

    // Sign-out ends the session on the server: the old cookie no longer works.
    let cookie = a.get_named_cookie("orchestrator_session").await.unwrap();
    let old = format!("orchestrator_session={}", cookie.value());
    let with_cookie = || {
        reqwest::Client::new()
            .get(app.url("/workflows"))
            .header("cookie", old.clone())
            .send()
    };
    assert_eq!(with_cookie().await.unwrap().status(), 200);
    click(&a, "Sign out").await;
    wait_text(&a, "h1", |t| t == "Sign in").await;
    assert_eq!(with_cookie().await.unwrap().status(), 401);

    // An agent signs in, sees the gate, and is told why it may not approve.
    sign_in(&a, &app, &bot).await;
    a.goto(&app.url("/board/feature/password-reset"))
        .await
        .unwrap();
    let why = wait_text(&a, "#verdict", |t| t.starts_with("You may not approve")).await;
    assert!(why.contains("you are an agent"), "{why}");
    assert!(a.find(Locator::XPath(&button("Approve"))).await.is_err());
    assert!(a.find(Locator::XPath(&button("Reject"))).await.is_err());
    // Nor may it answer an escalation: the page offers it no answer.
    a.goto(&app.url("/board/feature/payments-retry"))
        .await
        .unwrap();
    wait_text(&a, "table.consultations", |t| t.contains("Blocking")).await;
    assert!(a.find(Locator::XPath(&button("Confirm"))).await.is_err());

    // Bob's session ends elsewhere (signed out from another tab) with his page open: his
    // decision is not recorded, and the page says why instead of reloading it away.
    b.goto(&app.url("/board/feature/late-session"))
        .await
        .unwrap();
    wait_text(&b, "#verdict", |t| t == "You may approve.").await;
    let csrf = b
        .execute("return document.body.dataset.csrf;", vec![])
        .await
        .unwrap();
    let cookie = b.get_named_cookie("orchestrator_session").await.unwrap();
    let signed_out = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .post(app.url("/board/sign-out"))
        .header("cookie", format!("orchestrator_session={}", cookie.value()))
        .header("origin", app.url("").trim_end_matches('/'))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("csrf={}", csrf.as_str().unwrap()))
        .send()
        .await
        .unwrap();
    assert_eq!(signed_out.status(), 303);
    click(&b, "Approve").await;
    wait_text(&b, "#message", |t| t.contains("your session has ended")).await;
    // The stream, ended with the session, gives up and the page is refreshed: the message
    // stays, not reloaded away with the page.
    tokio::time::sleep(Duration::from_secs(5)).await;
    wait_text(&b, "#message", |t| t.contains("your session has ended")).await;
    wait_text(&b, "#verdict", |t| t == "You may approve.").await;
    // Nothing claims to be live, and the buttons that could only be refused again are off.
    wait_text(&b, "#live", |t| t == "Signed out: reload the page").await;
    wait_script(
        &b,
        "return document.querySelector('#decide button[value=human_approved]')
           .getAttribute('aria-disabled');",
        "true",
    )
    .await;
    let at_gate_still = agent
        .get_workflow(&orchestrator_core::FeatureId::parse("late-session").unwrap())
        .await
        .unwrap();
    assert_eq!(at_gate_still.state.to_string(), "GATE_1");

    // Ending the browser sessions is the test's clean-up, not the board's behaviour: a browser
    // that does not quit cleanly (seen once on a loaded CI machine, after every step passed) is
    // reported, and chromedriver is stopped with the driver either way.
    for (name, browser) in [("alice", a), ("bob", b)] {
        if let Err(e) = browser.close().await {
            eprintln!("{name}'s browser session did not end cleanly: {e}");
        }
    }
}

/// How many times the page fetched `path` (its refreshes, or a decision's request).
async fn fetched(page: &Browser, path: &str) -> u64 {
    page.execute(
        "return performance.getEntriesByType('resource')
           .filter((e) => e.initiatorType === 'fetch' && new URL(e.name).pathname === arguments[0])
           .length;",
        vec![json!(path)],
    )
    .await
    .unwrap()
    .as_u64()
    .unwrap()
}

/// Makes the page believe its tab is hidden (`true`) or shown again (`false`), as switching
/// tabs would.
async fn pretend_hidden(page: &Browser, hidden: bool) {
    page.execute(
        "if (!('pretendHidden' in window)) {
           Object.defineProperty(document, 'hidden', { configurable: true, get: () => window.pretendHidden });
         }
         window.pretendHidden = arguments[0];
         document.dispatchEvent(new Event('visibilitychange'));",
        vec![json!(hidden)],
    )
    .await
    .unwrap();
}

/// What a reviewer's open pages ask of the server, and what a page tells the reviewer: a busy
/// log refreshes a page at most once a second, not at every event; a hidden tab lets its
/// stream go (a browser keeps six connections to a server, and every open page holds one)
/// and, shown again, resumes and shows what came meanwhile; a decision says at once that it is
/// on its way; a rejection without a reason is asked for in the page, the focus on Reason; and
/// a sign-in as somebody else in another window is followed by the open page.
#[tokio::test(flavor = "multi_thread")]
async fn the_board_spares_the_server_and_keeps_the_reviewer_told() {
    let Some(driver) = Driver::start().await else {
        return;
    };
    let keys = TempDir::new().unwrap();
    let file = keys.path().join("principals.toml");
    let alice = mint(&file, "alice", ActorKind::Human, &[Role::Reviewer]);
    let bob = mint(&file, "bob", ActorKind::Human, &[Role::Reviewer]);
    let carol = mint(&file, "carol", ActorKind::Human, &[Role::Reviewer]);
    let bot = mint(&file, "build-bot", ActorKind::Agent, &[Role::Agent]);
    let app = spawn_app_with(|c| c.principals_file = Some(file.clone())).await;
    let agent = app.client_with(&bot);
    let bob_api = app.client_with(&bob);
    let mut start = StartWorkflowRequest::new("careful", "The work to review");
    start.gate = Some(GateRequest {
        required_approvals: Some(3),
        ..GateRequest::default()
    });
    agent.start_workflow(&start).await.unwrap();
    let careful = orchestrator_core::FeatureId::parse("careful").unwrap();
    agent
        .advance_workflow(&careful, &AdvanceRequest::new("agent_complete"))
        .await
        .unwrap();

    let a = driver.browser("alice").await;
    sign_in(&a, &app, &alice).await;
    wait_text(&a, "#live", |t| t == "Live").await;

    // Forty features started over two seconds or more: the overview follows, fetched again at
    // most once a second (not once per event, as a page refreshed 150 ms after each would be).
    let before = fetched(&a, "/board").await;
    let started = Instant::now();
    for i in 0..40 {
        agent
            .start_workflow(&StartWorkflowRequest::new(format!("busy-{i}"), "Busy work"))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    wait_text(&a, "#main", |t| t.contains("busy-39")).await;
    let took = started.elapsed().as_secs_f64();
    let refreshes = fetched(&a, "/board").await - before;
    assert!(
        (refreshes as f64) <= took.ceil() + 2.0,
        "{refreshes} refreshes in {took:.1} s"
    );
    // A state chosen and not yet filtered by, and the focus on Filter, survive a live update.
    a.execute(
        "document.getElementById('state').value = 'DONE';
         document.querySelector('#filter button').focus();",
        vec![],
    )
    .await
    .unwrap();
    agent
        .start_workflow(&StartWorkflowRequest::new("busy-40", "Busy work"))
        .await
        .unwrap();
    wait_text(&a, "#main", |t| t.contains("busy-40")).await;
    wait_script(
        &a,
        "return document.getElementById('state').value + ' ' + document.activeElement.textContent;",
        "DONE Filter",
    )
    .await;

    // A decision says at once that it is on its way.
    a.goto(&app.url("/board/feature/careful")).await.unwrap();
    wait_text(&a, "#verdict", |t| t == "You may approve.").await;
    a.execute(
        "window.said = [];
         window.focused = [];
         new MutationObserver(() => {
           window.said.push(document.getElementById('message').textContent);
           const b = document.querySelector('#decide button[value=human_approved]');
           window.focused.push(document.activeElement === b && !b.disabled && b.getAttribute('aria-disabled'));
         }).observe(document.getElementById('message'), { childList: true, characterData: true, subtree: true });",
        vec![],
    )
    .await
    .unwrap();
    click(&a, "Approve").await;
    wait_text(&a, "#message", |t| t.contains("Approved: 1 of 3")).await;
    let said = a.execute("return window.said;", vec![]).await.unwrap();
    assert_eq!(said[0], "Sending…", "{said}");
    // While it is out, the button pressed is off but keeps the focus: marked so, not disabled
    // (the browser takes the focus from a disabled button a moment later, and a screen reader
    // is left on the document for as long as the answer takes).
    let focused = a.execute("return window.focused;", vec![]).await.unwrap();
    assert_eq!(focused[0], "true", "{focused}");

    // A rejection without a reason is asked for in the page, the focus on the field, and
    // nothing is sent (the server refuses one too: see the API tests).
    click(&a, "Reject").await;
    wait_text(&a, "#message", |t| {
        t == "Not recorded: a rejection needs a reason; say why in Reason."
    })
    .await;
    wait_script(&a, "return document.activeElement.id;", "reason").await;
    wait_script(
        &a,
        "return document.getElementById('reason').getAttribute('aria-invalid');",
        "true",
    )
    .await;
    assert_eq!(
        fetched(&a, "/workflow/careful/advance").await,
        1,
        "only the approval"
    );
    // A live update meanwhile (a new consultation) keeps the field marked and focused.
    asked_and_shown(&agent, &careful, &a, "Which queue holds the mails?").await;
    wait_script(&a, "return document.activeElement.id;", "reason").await;
    wait_script(
        &a,
        "return document.getElementById('reason').getAttribute('aria-invalid');",
        "true",
    )
    .await;

    // Hidden, the page fetches nothing (an event the stream still brings is left for later),
    // and after a few seconds it lets its stream go; shown again, it resumes and shows both
    // what came before and what came while the stream was gone.
    let streams = async || {
        let metrics = reqwest::Client::new()
            .get(app.url("/metrics"))
            .bearer_auth(&bob)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        metrics
            .lines()
            .find_map(|line| line.strip_prefix("orchestrator_event_streams "))
            .map(|n| n.trim().to_owned())
    };
    // The server lets a stream's slot go a moment after the browser closed it.
    let streams_become = async |open: &str| {
        let started = Instant::now();
        while streams().await.as_deref() != Some(open) {
            assert!(started.elapsed() < PATIENCE, "{open} streams never open");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    streams_become("1").await;
    // Quiet first: a refresh the earlier steps set off, still under way, would be counted as
    // done while hidden (a fetch is listed once its answer is in).
    let mut hidden_at = fetched(&a, "/board/feature/careful").await;
    loop {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let now = fetched(&a, "/board/feature/careful").await;
        if now == hidden_at {
            break;
        }
        hidden_at = now;
    }
    pretend_hidden(&a, true).await;
    bob_api
        .advance_workflow(&careful, &AdvanceRequest::new("human_approved"))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        fetched(&a, "/board/feature/careful").await,
        hidden_at,
        "nothing fetched while hidden"
    );
    wait_text(&a, "#live", |t| t == "Paused while the tab is hidden").await;
    streams_become("0").await;
    agent
        .create_consultation(
            &careful,
            &ConsultRequest::new(
                "architecture",
                "Which cache keeps the sessions? [confidence=95]",
            ),
        )
        .await
        .unwrap();
    pretend_hidden(&a, false).await;
    wait_text(&a, "#approvals", |t| t == "Approvals 2 of 3").await;
    wait_text(&a, "table.consultations", |t| {
        t.contains("Which cache keeps the sessions?")
    })
    .await;
    wait_text(&a, "#live", |t| t == "Live").await;

    // She is in Reason when Carol's approval takes the feature past the gate: the field goes
    // with the gate, and the focus to the page's heading, not to the top of the document.
    a.execute("document.getElementById('reason').focus();", vec![])
        .await
        .unwrap();
    app.client_with(&carol)
        .advance_workflow(&careful, &AdvanceRequest::new("human_approved"))
        .await
        .unwrap();
    wait_text(&a, "#state", |t| t == "PHASE_2").await;
    wait_script(&a, "return document.activeElement.tagName;", "H1").await;
    // And keeps it there through the next change the page shows (as after her own decision,
    // whose event comes after the page its answer brought).
    asked_and_shown(&agent, &careful, &a, "Which queue takes the jobs?").await;
    assert_eq!(
        a.execute("return document.activeElement.tagName;", vec![])
            .await
            .unwrap(),
        "H1"
    );

    // Pages left behind in one tab let their streams go as they are left: a browser may keep a
    // page it left whole, its timers stopped, to go back to, and with its stream open it would
    // hold one of the six connections a browser keeps to a server — a reviewer who looked at a
    // few features would wait behind them for the next page, or for their Approve.
    for _ in 0..4 {
        for page in ["/board", "/board/feature/careful"] {
            a.goto(&app.url(page)).await.unwrap();
            wait_text(&a, "#live", |t| t == "Live").await;
        }
    }
    streams_become("1").await;
    // Back to a page kept whole: its stream opens again.
    a.back().await.unwrap();
    wait_text(&a, "h1", |t| t == "Features").await;
    wait_text(&a, "#live", |t| t == "Live").await;
    streams_become("1").await;

    // Alice signs out in another window and Bob signs in there, one right after the other: her
    // open page follows (it loads anew as his) once its stream, ended with her session, opens
    // again under his, rather than offering her decisions with his session.
    let first = a.window().await.unwrap();
    let other = a.new_window(false).await.unwrap();
    a.switch_to_window(other.handle).await.unwrap();
    a.goto(&app.url("/board")).await.unwrap();
    wait_text(&a, "header .who", |t| t.contains("alice")).await;
    a.execute_async(
        "const [token, done] = arguments;
         const form = (fields) => ({
           method: 'POST',
           headers: { 'Content-Type': 'application/x-www-form-urlencoded' },
           body: new URLSearchParams(fields).toString(),
         });
         fetch('/board/sign-out', form({ csrf: document.body.dataset.csrf }))
           .then(() => fetch('/board/session', form({ token, next: '/board' })))
           .then((r) => done(r.status), (e) => done(String(e)));",
        vec![json!(bob)],
    )
    .await
    .unwrap();
    a.goto(&app.url("/board")).await.unwrap();
    wait_text(&a, "header .who", |t| t.contains("bob")).await;
    a.switch_to_window(first).await.unwrap();
    wait_text(&a, "header .who", |t| t.contains("bob")).await;

    if let Err(e) = a.close().await {
        eprintln!("the browser session did not end cleanly: {e}");
    }
}

/// Marks the page, so that [`live_without_a_reload`] can tell whether it was loaded again.
async fn mark_unreloaded(page: &Browser) {
    page.execute("window.notReloaded = true;", vec![])
        .await
        .unwrap();
}

/// Waits until the page is live again, and checks it got there without reloading itself.
async fn live_without_a_reload(page: &Browser) {
    wait_text(page, "#live", |t| t == "Live").await;
    let reloaded = page
        .execute("return window.notReloaded !== true;", vec![])
        .await
        .unwrap();
    assert_eq!(reloaded, json!(false), "the page followed without a reload");
}

/// A PostgreSQL database restored from an older copy under the running server: the board's
/// stream is past the log's new end, so it ends and its resume is refused (409
/// `EVENTS_CURSOR_AHEAD`); the page follows from the newest id by itself and is live again,
/// without the reloads a stream refused at every reconnection ends in, and shows the work
/// that happens next.
#[tokio::test(flavor = "multi_thread")]
async fn the_board_follows_a_log_that_went_back() {
    use orchestrator_server::storage::DatabaseUrl;
    let Some(db) = crate::postgres::TestDatabase::create().await else {
        return;
    };
    let Some(driver) = Driver::start().await else {
        return;
    };
    let app = spawn_app_with(|c| c.database_url = DatabaseUrl::Postgres(db.url.clone())).await;
    let to_gate = |id: &'static str| {
        let client = app.client.clone();
        async move {
            client
                .start_workflow(&StartWorkflowRequest::new(id, format!("{id}: to review")))
                .await
                .unwrap();
            let f = orchestrator_core::FeatureId::parse(id).unwrap();
            client
                .advance_workflow(&f, &AdvanceRequest::new("agent_complete"))
                .await
                .unwrap();
        }
    };
    for id in ["kept", "lost-1", "lost-2"] {
        to_gate(id).await;
    }
    // An open server: the board needs no sign-in. It follows the log from its newest id, 6.
    let page = driver.browser("reviewer").await;
    page.goto(&app.url("/board")).await.unwrap();
    wait_text(&page, "#live", |t| t == "Live").await;
    wait_text(&page, "main", |t| t.contains("lost-2")).await;
    mark_unreloaded(&page).await;

    // The copy: the log as it was after "kept" reached the gate (events 1 and 2).
    crate::postgres::restore_older_copy(&db.url, 2, "kept").await;
    // New work takes ids 3 and 4 again: the page's stream, past them, ends; its resume is 409.
    to_gate("after-restore").await;
    wait_text(&page, "main", |t| {
        t.contains("after-restore") && !t.contains("lost-2")
    })
    .await;
    live_without_a_reload(&page).await;
    // Live from the newest id: the next change shows.
    to_gate("next-round").await;
    wait_text(&page, "main", |t| t.contains("next-round")).await;
    if let Err(e) = page.close().await {
        eprintln!("the browser session did not end cleanly: {e}");
    }
}

/// A feature's page open while retention deletes the events after its last one (a quiet
/// feature on a busy server): its stream, resumed after a restart, is refused (410
/// `EVENTS_EXPIRED`); the page follows from the newest id by itself, without the reloads a
/// stream refused at every reconnection ends in, and shows what happens next.
#[tokio::test(flavor = "multi_thread")]
async fn the_board_follows_on_past_events_retention_deleted() {
    use orchestrator_core::WorkflowRepository;
    use orchestrator_server::storage::{DatabaseUrl, SqliteRepository};
    let Some(driver) = Driver::start().await else {
        return;
    };
    // No heartbeat while the test runs: it would tell the browser a later position. A fixed
    // port, so that the server can restart under the open page.
    let port = free_port();
    let app = spawn_app_with(|c| {
        c.events_heartbeat_seconds = 600;
        c.port = port;
    })
    .await;
    let quiet = orchestrator_core::FeatureId::parse("quiet").unwrap();
    app.client
        .start_workflow(&StartWorkflowRequest::new("quiet", "quiet: one event"))
        .await
        .unwrap();
    // An open server: the board needs no sign-in. The page follows the log after event 1.
    let page = driver.browser("reviewer").await;
    page.goto(&app.url("/board/feature/quiet")).await.unwrap();
    wait_text(&page, "#state", |t| t == "PHASE_1").await;
    wait_text(&page, "#live", |t| t == "Live").await;
    mark_unreloaded(&page).await;
    // Other features' events, which the page's stream leaves out.
    for id in ["busy-1", "busy-2"] {
        app.client
            .start_workflow(&StartWorkflowRequest::new(id, format!("{id}: elsewhere")))
            .await
            .unwrap();
    }

    // Stopped, every event is deleted as retention would; started again, the page's resume
    // point (event 1) is before what was deleted.
    let mut app = app;
    app.stop().await;
    let DatabaseUrl::SqliteFile(file) = app.config.database_url.clone() else {
        unreachable!("spawn_app_with stores in a file");
    };
    let store = SqliteRepository::open(file, 1).await.unwrap();
    let later = chrono::Utc::now() + chrono::Duration::minutes(1);
    assert!(store.purge_events(later).await.unwrap() >= 3);
    store.close().await;
    let app = app.restart().await;

    live_without_a_reload(&page).await;
    // Live from the newest id: the feature's next change shows.
    app.client
        .advance_workflow(&quiet, &AdvanceRequest::new("agent_complete"))
        .await
        .unwrap();
    wait_text(&page, "#state", |t| t == "GATE_1").await;
    if let Err(e) = page.close().await {
        eprintln!("the browser session did not end cleanly: {e}");
    }
}

/// The content security policy violations `page` has met since it loaded, as "directive:
/// blocked" lines (Chromium keeps them for a `ReportingObserver` that asks for the buffer).
async fn policy_violations(page: &Browser) -> Vec<String> {
    let script = "const done = arguments[0]; const seen = [];
        const observer = new ReportingObserver(
            (reports) => reports.forEach((r) => seen.push(
                r.body.effectiveDirective + ': ' + r.body.blockedURL)),
            { types: ['csp-violation'], buffered: true });
        observer.observe();
        setTimeout(() => done(seen), 500);";
    let seen = page.execute_async(script, vec![]).await.unwrap();
    serde_json::from_value(seen).unwrap_or_default()
}

/// The API's two documentation pages, Swagger UI and ReDoc, render in a real browser under
/// the policies they are sent with: they share the board's origin, and so its session, so
/// they may run their own code and reach nothing but this server.
#[tokio::test(flavor = "multi_thread")]
async fn the_documentation_pages_render_within_their_policies() {
    let Some(driver) = Driver::start().await else {
        return;
    };
    let app = spawn_app_with(|_| {}).await;
    let page = driver.browser("docs").await;
    // By a name other than `localhost` (the documents answer any name): Swagger UI shows a
    // validator's badge, loaded from swagger.io, to any other page, unless told not to.
    let by_name = app.url("/docs").replace("127.0.0.1", "docs.example");
    assert!(by_name.starts_with("http://docs.example:"), "{by_name}");
    page.goto(&by_name).await.unwrap();
    // Swagger UI read the document and lists the operations.
    wait_text(&page, ".opblock-summary-path", |t| t.starts_with('/')).await;
    screenshot(&page, "docs-swagger.png").await;
    assert_eq!(policy_violations(&page).await, Vec::<String>::new());

    page.goto(&app.url("/redoc")).await.unwrap();
    // ReDoc rendered the document: its title, and an operation's section.
    wait_text(&page, "h1", |t| t.contains("Orchestrator")).await;
    wait_text(&page, "[data-section-id^='tag/']", |t| !t.is_empty()).await;
    screenshot(&page, "docs-redoc.png").await;
    // ReDoc's code would fetch its maker's logo from a CDN; the policy stops it (the page then
    // leaves the logo out), and nothing else.
    assert_eq!(
        policy_violations(&page).await,
        ["img-src: https://cdn.redoc.ly/redoc/logo-mini.svg"]
    );
    if let Err(e) = page.close().await {
        eprintln!("the browser session did not end cleanly: {e}");
    }
}
