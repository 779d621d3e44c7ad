// The reviewer board's script: live updates from the event stream, Approve / Reject, and the
// answers to escalations.
// No dependencies; served by the orchestrator itself under a policy that allows nothing else.
(() => {
  'use strict';

  const body = document.body;
  const feature = body.dataset.feature || '';
  const types = (body.dataset.eventTypes || '').split(' ').filter(Boolean);
  const live = document.getElementById('live');
  const message = document.getElementById('message');
  const changes = document.getElementById('changes');
  // The version the reader's own decision made: `#message` has told it already.
  let toldVersion = null;

  function say(text, tone) {
    message.textContent = text;
    message.className = 'message' + (tone ? ' ' + tone : '');
  }

  // What a request's message goes on to say once the page shows what it did (`swapped`), or
  // does not (the page could not be fetched, or not yet): see `submitting`.
  function thenShown(swapped) {
    return { swapped, failed: ' The page has not been refreshed to show it: reload it before deciding again.' };
  }

  // A write was refused for want of a session: the page is left as it is, saying so.
  let signedOut = false;
  const SIGNED_OUT = 'Signed out: reload the page';

  function showLive(text, on) {
    if (!live) return;
    // Once a request found the session ended, nothing here is live until a reload.
    if (signedOut) [text, on] = [SIGNED_OUT, false];
    live.textContent = text;
    live.className = on ? 'live on' : 'live';
  }

  // --- Live: on any event, fetch this page again and swap its <main>. ---
  let queued = null;
  let refreshing = false;
  // The stay at the gate the reader has read, and its version: taken from the decision form
  // when the page is loaded or the form first appears, and followed while other reviewers
  // approve in that stay (which changes the version, not the work). A refresh that brings
  // another stay (the work sent back and completed again, even across refreshes without the
  // form) leaves the version they read in the form: a decision made on what they read is
  // refused (409) and the page says what changed, instead of being recorded against work they
  // never saw. Let go once a decision is recorded or refused for a change (409: the page then
  // shows the feature as it is, and that is what they decide on). No refresh runs while a
  // decision is out.
  let seen = null;
  // What the reader typed, by field: kept while the field is away (the feature left the gate
  // and came back), and given back when it returns; kept in the tab's session storage too, so
  // that a reload (the session ended and the page asks to sign in again, the stream gave up)
  // does not lose a half-written reason. Kept per signed-in name and page (a sign-in page,
  // with nobody signed in, keeps none); let go once what it was typed for is recorded, at
  // sign-out, and when somebody else signs in on this tab.
  const DRAFTS_PREFIX = 'orchestrator-board-drafts:';
  const signedIn = body.dataset.actor || '';
  const DRAFTS = signedIn ? DRAFTS_PREFIX + JSON.stringify([signedIn, location.pathname]) : null;
  forgetOthers();
  const typed = loadDrafts();

  // Drafts of anybody but the person signed in here are dropped.
  function forgetOthers() {
    if (!signedIn) return;
    dropDrafts(DRAFTS_PREFIX + JSON.stringify([signedIn]).slice(0, -1) + ',');
  }

  // Drops every page's drafts but those whose key starts with `keep` (if given).
  function dropDrafts(keep) {
    try {
      Object.keys(sessionStorage)
        .filter((k) => k.startsWith(DRAFTS_PREFIX) && !(keep && k.startsWith(keep)))
        .forEach((k) => sessionStorage.removeItem(k));
    } catch (_) { /* no session storage */ }
  }

  function loadDrafts() {
    if (!DRAFTS) return new Map();
    try {
      return new Map(Object.entries(JSON.parse(sessionStorage.getItem(DRAFTS) || '{}')));
    } catch (_) {
      return new Map();
    }
  }

  function saveDrafts() {
    if (!DRAFTS) return;
    try {
      if (typed.size) sessionStorage.setItem(DRAFTS, JSON.stringify(Object.fromEntries(typed)));
      else sessionStorage.removeItem(DRAFTS);
    } catch (_) {
      // No session storage (a privacy setting): kept in this page only.
    }
  }

  function forget(id) {
    typed.delete(id);
    saveDrafts();
  }

  // Fields given back what was typed in them, on load and after each swap.
  function giveBack() {
    typed.forEach((value, id) => {
      const again = document.getElementById(id);
      if (again && again.tagName === 'TEXTAREA' && !again.value) again.value = value;
    });
  }

  document.addEventListener('input', (event) => {
    const field = event.target;
    if (field.tagName !== 'TEXTAREA' || !field.id) return;
    if (field.value.trim()) field.removeAttribute('aria-invalid');
    if (field.value) typed.set(field.id, field.value);
    else typed.delete(field.id);
    saveDrafts();
  });
  // Signing out leaves nothing of what was typed for the next person at this browser.
  document.addEventListener('submit', (event) => {
    if (event.target.getAttribute('action') === '/board/sign-out') dropDrafts(null);
  });
  // Decisions and answers out: the page is not swapped under them (a new form would come with
  // its buttons on, and a second click would send the same decision again); it is refreshed
  // once they are back. `settled` counts those back: a page fetched before one came back
  // shows the feature from before it, and is not swapped in.
  let busy = 0;
  let settled = 0;
  // The `settled` count the page on screen was fetched at: it shows every request back by then.
  let shown = 0;
  // Whether the event stream is open, and the pause before retrying a refresh that failed
  // (growing to half a minute): a page that could not be refreshed is fetched again until it
  // is, not left stale until the next event.
  let streaming = false;
  let retryIn = 0;
  let retry = null;
  // Refreshes come at most one a second (the page shows a change within two), and none while
  // the tab is hidden: then `missed` says one is due when it is shown again.
  const REFRESH_GAP = 1000;
  let refreshedAt = -REFRESH_GAP;
  let missed = false;
  // The server answers within its request bound, or says it could not (503): an answer not
  // back a little after that is not coming. A page is fetched in far less.
  const ANSWER_WITHIN = (Number(body.dataset.requestTimeoutMs) || 60000) + 5000;
  const PAGE_WITHIN = 20000;
  const within = (ms) => (typeof AbortSignal.timeout === 'function' ? AbortSignal.timeout(ms) : undefined);

  // `why` the page could not be refreshed: said as live only while the stream is open.
  function refreshFailed(why) {
    showLive((streaming ? 'Live, but ' : 'Not live: ') + why + '; trying again', false);
    if (retry) return;
    retryIn = Math.min(30000, retryIn ? retryIn * 2 : 2000);
    retry = setTimeout(() => { retry = null; schedule(); }, retryIn);
  }

  // Says whether the page was swapped ('swapped'), could not be fetched ('failed'), is left for
  // a later refresh ('deferred': another is under way, or a request is out) or is being loaded
  // anew ('reloading': the reader signed out or in elsewhere).
  async function refresh() {
    if (refreshing || busy > 0) { schedule(); return 'deferred'; }
    refreshing = true;
    refreshedAt = performance.now();
    const asked = settled;
    try {
      const response = await fetch(location.href, {
        credentials: 'same-origin',
        headers: { Accept: 'text/html' },
        signal: within(PAGE_WITHIN),
      });
      if (!response.ok) {
        refreshFailed('the page could not be refreshed (HTTP ' + response.status + ')');
        return 'failed';
      }
      const fetched = new DOMParser().parseFromString(await response.text(), 'text/html');
      // A decision sent while this page was fetched: not swapped under it (once it is back,
      // the page is fetched again); nor one from before a decision that came back since.
      if (busy > 0 || asked !== settled) { schedule(); return 'deferred'; }
      // Signed out, or signed in as someone else in another tab: the whole page is stale.
      const was = body.dataset;
      const now = fetched.body ? fetched.body.dataset : {};
      if (was.csrf !== now.csrf || was.actor !== now.actor) {
        // A decision was refused because the session ended: the page stays as it is, saying
        // so, until the reader reloads it (or signs in again, in another tab).
        if (signedOut && !now.actor) return 'failed';
        location.reload();
        return 'reloading';
      }
      const next = fetched.getElementById('main');
      const current = document.getElementById('main');
      if (!next || !current) return 'failed';
      // What the reader is typing, what they opened and where the focus is survive the swap.
      const focused = focusFinder(document.activeElement, current);
      current.querySelectorAll('details[open][id]').forEach((opened) => {
        const again = next.querySelector('#' + CSS.escape(opened.id));
        if (again) again.open = true;
      });
      // So does a choice made and not yet sent (the overview's state filter).
      current.querySelectorAll('select[id]').forEach((select) => {
        const again = next.querySelector('#' + CSS.escape(select.id));
        const chosen = select.selectedOptions[0];
        if (again && chosen && !chosen.defaultSelected) again.value = select.value;
      });
      // So does a field marked as wanting an answer (a rejection's empty reason).
      current.querySelectorAll('[aria-invalid="true"][id]').forEach((field) => {
        const again = next.querySelector('#' + CSS.escape(field.id));
        if (again) again.setAttribute('aria-invalid', 'true');
      });
      // Somebody else changed the feature since: what `#message` said of the reader's last
      // request that was recorded ("Approved: 1 of 2 approvals") was about a page that is gone.
      // A refusal or a warning stays: it says what the reader needs to know, the new state
      // included.
      const version = next.dataset.version;
      if (version && version !== current.dataset.version && version !== toldVersion &&
          message.classList.contains('ok')) say('', '');
      pin(next.querySelector('#decide'));
      const former = current.dataset;
      const before = { state: former.state, version: former.version, waiting: former.waiting, overdue: former.overdue };
      current.replaceWith(document.adoptNode(next));
      announce(before, next);
      shown = asked;
      clocked();
      giveBack();
      // Bound first: a button comes disabled, and a disabled button takes no focus.
      bind();
      // What had the focus is gone (the feature left the gate under the reader): it goes to
      // what the page says now, not to the top of the document.
      if (focused && !focused()) focusWhatIsSaid(false);
      if (retryIn) {
        retryIn = 0;
        // The server answered: live again, or about to be once the stream reopens (only what
        // a failed refresh said is taken back: not a pause, nor a reload under way).
        if (streaming) showLive('Live', true);
        else if (live && live.textContent.startsWith('Not live')) showLive('Reconnecting…', false);
      }
      return 'swapped';
    } catch (_) {
      refreshFailed('the server could not be reached');
      return 'failed';
    } finally {
      refreshing = false;
    }
  }

  // Tells screen readers what a swap changed on a feature's page (its state, else its gate's
  // approvals): the page shows it, and a change made by somebody else is heard too.
  function announce(before, after) {
    if (!changes) return;
    const version = after.dataset.version;
    if (!version) {
      // The overview: how many wait at the gate, and how many of them are overdue, when that
      // changed.
      const { waiting, overdue } = after.dataset;
      if (waiting === undefined || (waiting === before.waiting && overdue === before.overdue)) return;
      changes.textContent = waiting + (waiting === '1' ? ' feature waits' : ' features wait') +
        ' for review' + (overdue && overdue !== '0' ? ', ' + overdue + ' overdue.' : '.');
      return;
    }
    if (version === before.version) return;
    // The reader's own change: its message told it; an older change is no longer news.
    if (version === toldVersion) {
      changes.textContent = '';
      return;
    }
    const approvals = after.querySelector('#approvals');
    changes.textContent = after.dataset.state !== before.state
      ? 'Now ' + after.dataset.state + '.'
      : (approvals ? approvals.textContent + '.' : 'Updated.');
  }

  // Leaves in the decision form a refresh brings the version the reader read (see `seen`), and
  // says so when a new round of work has arrived since.
  function pin(form) {
    if (!form) return;
    const version = form.dataset.version;
    if (seen === null) {
      seen = { stay: form.dataset.stay, version, told: false };
    } else if (form.dataset.stay === seen.stay) {
      seen.version = version;
    } else {
      // Said once, not at every refresh (which would hide what the page says next).
      if (!seen.told) {
        say('A new round of work reached the gate while this page was open: you read version ' + seen.version +
          ', it is now at version ' + version + '. Read it again; a decision sent now is not recorded.', 'bad');
        seen.told = true;
      }
      form.dataset.version = seen.version;
    }
  }

  // How to find `element` again in the page that replaces `main`, and give it back the focus
  // (with a text field's caret where it was): by id, a link by where it leads, a button by its
  // form and value. Null when the focus is outside `main` or nowhere.
  function focusFinder(element, main) {
    if (!element || element === document.body || !main.contains(element)) return null;
    const caret = typeof element.selectionStart === 'number' ? [element.selectionStart, element.selectionEnd] : null;
    let find;
    if (element.id) {
      find = () => document.getElementById(element.id);
    } else if (element.tagName === 'A' && element.getAttribute('href')) {
      const href = element.getAttribute('href');
      find = () => Array.from(document.querySelectorAll('#main a')).find((a) => a.getAttribute('href') === href);
    } else if (element.tagName === 'BUTTON' && element.form) {
      const form = element.form.id
        ? '#' + CSS.escape(element.form.id)
        : 'form.respond[data-consultation="' + CSS.escape(element.form.dataset.consultation || '') + '"]';
      const value = element.value;
      find = () => Array.from(document.querySelectorAll(form + ' button')).find((b) => b.value === value);
    } else if (element.tagName === 'SUMMARY' && element.parentElement && element.parentElement.id) {
      const opened = '#' + CSS.escape(element.parentElement.id) + ' > summary';
      find = () => document.querySelector(opened);
    } else {
      return null;
    }
    // Made focusable here (the verdict, given the focus by `focusWhatIsSaid`): so is its new
    // copy, which the server sends without a tabindex.
    const tabIndex = element.getAttribute('tabindex');
    return () => {
      const again = find();
      if (!again) return false;
      if (tabIndex !== null && !again.hasAttribute('tabindex')) again.setAttribute('tabindex', tabIndex);
      again.focus({ preventScroll: true });
      if (caret && typeof again.setSelectionRange === 'function') {
        try { again.setSelectionRange(caret[0], caret[1]); } catch (_) { /* not a text field */ }
      }
      return document.activeElement === again;
    };
  }

  // Gives the focus to what the page says about the feature (the verdict at the gate, else the
  // page's heading, else the message). After the reader's own decision it is scrolled into
  // view (on a narrow or zoomed screen it may be far from where they acted); after somebody
  // else's change the page stays where they are reading.
  function focusWhatIsSaid(scroll) {
    const said = document.getElementById('verdict') || document.querySelector('#main h1') || message;
    if (!said) return;
    said.tabIndex = -1;
    said.focus({ preventScroll: !scroll });
  }

  // A refusal is read where it is said, at the top of the page: brought into view when the
  // reader is further down (the focus stays where they acted).
  function showRefusal() {
    if (!message.classList.contains('bad')) return;
    const box = message.getBoundingClientRect();
    if (box.top < 0 || box.bottom > window.innerHeight) message.scrollIntoView({ block: 'nearest' });
  }

  function schedule() {
    if (document.hidden) { missed = true; return; }
    if (queued) return;
    const wait = Math.max(150, refreshedAt + REFRESH_GAP - performance.now());
    queued = setTimeout(() => {
      queued = null;
      if (document.hidden) missed = true;
      else refresh();
    }, wait);
  }

  // The browser resumes a dropped stream by itself (sending Last-Event-ID); when it gives up
  // (the server answered an error: a restart behind a proxy, a session that ended), this
  // reconnects after the last event seen, waiting longer each time (up to a minute), and after
  // a few failures reloads the page — at most once in five minutes, so that a server that keeps
  // refusing streams (all its connections taken) is not asked for whole pages every few seconds.
  let lastEventId = body.dataset.lastEventId || '0';
  let failures = 0;
  const RELOADED_AT = 'orchestrator-board-reloaded-at';
  // A tab hidden for a while lets its stream go: a browser keeps at most six connections to a
  // server over HTTP/1.1, and every open board page holds one, so a reviewer's seventh tab
  // (or their Approve) would wait for ever behind the hidden ones. Shown again, the page
  // resumes after the last event it saw, and is fetched again if anything came meanwhile.
  const HIDDEN_GRACE = 5000;
  let source = null;
  let pausing = null;
  let paused = false;
  // Whether a stream opened before: one that opens again after a break (a restart, a pause, a
  // sign-in in another tab that ended this session's stream) has the page fetched once, for
  // what no event tells (who is signed in).
  let opened = false;

  function pause() {
    pausing = null;
    if (!document.hidden || !source) return;
    source.close();
    source = null;
    pausedNow();
  }

  // The stream is not open and waits for the tab to be shown. The page, once shown, is fetched
  // again as after any break (`opened`): it may have been loaded hidden, its person signed out
  // and somebody else in meanwhile.
  function pausedNow() {
    streaming = false;
    paused = true;
    opened = true;
    showLive('Paused while the tab is hidden', false);
  }

  document.addEventListener('visibilitychange', () => {
    if (document.hidden) {
      if (!pausing && source) pausing = setTimeout(pause, HIDDEN_GRACE);
      return;
    }
    if (pausing) { clearTimeout(pausing); pausing = null; }
    tick();
    if (paused) { paused = false; connect(); }
    if (missed) { missed = false; schedule(); }
  });

  // Left for another page, this one may be kept whole to come back to (the back/forward
  // cache), its timers stopped: with its stream open it would hold one of the browser's six
  // connections to the server until the cache let it go, and a reviewer who looked at a few
  // features would wait that long for the next page, or for their Approve. The stream goes
  // as the page is left, and opens again (the page fetched anew) if it comes back.
  window.addEventListener('pagehide', () => {
    if (pausing) { clearTimeout(pausing); pausing = null; }
    if (!source) return;
    source.close();
    source = null;
    pausedNow();
  });
  window.addEventListener('pageshow', (event) => {
    if (!event.persisted || !paused || document.hidden) return;
    paused = false;
    tick();
    connect();
  });

  function mayReload() {
    try {
      const last = Number(sessionStorage.getItem(RELOADED_AT) || 0);
      if (Date.now() - last < 5 * 60 * 1000) return false;
      sessionStorage.setItem(RELOADED_AT, String(Date.now()));
    } catch (_) {
      // No session storage (a privacy setting): reconnecting is enough.
      return false;
    }
    return true;
  }

  // A resume point past the log's newest event (the server's store was restored from an older
  // copy) is refused with 409 EVENTS_CURSOR_AHEAD, whose details name the newest id: follow
  // from there instead of being refused at every reconnection. So is one retention has passed
  // (410 EVENTS_EXPIRED: a page left open for long, whose last event is a feature's own):
  // then the newest id is asked for with a resume point past any, and the page, fetched again
  // after this, shows what the stream missed.
  async function checkResumePoint() {
    try {
      const options = { credentials: 'same-origin', signal: within(PAGE_WITHIN) };
      let response = await fetch('/events?limit=1&after=' + encodeURIComponent(lastEventId), options);
      if (response.status === 410) {
        options.signal = within(PAGE_WITHIN);
        response = await fetch('/events?limit=1&after=' + Number.MAX_SAFE_INTEGER, options);
      }
      if (response.status !== 409) return;
      const answer = await response.json();
      const details = (answer && answer.error && answer.error.details) || [];
      const newest = details.find((detail) => String(detail).startsWith('last_id: '));
      if (newest) lastEventId = newest.slice('last_id: '.length);
    } catch (_) {
      // The server is away: reconnecting later is enough.
    }
  }

  function connect() {
    if (!live || typeof EventSource === 'undefined') return;
    if (document.hidden) { pausedNow(); return; }
    if (!live.textContent) showLive('Connecting…', false);
    const params = new URLSearchParams({ after: lastEventId });
    if (feature) params.set('feature_id', feature);
    const stream = new EventSource('/events/stream?' + params.toString());
    source = stream;
    const onEvent = (event) => {
      if (event.lastEventId) lastEventId = event.lastEventId;
      schedule();
    };
    types.forEach((type) => stream.addEventListener(type, onEvent));
    stream.addEventListener('open', () => {
      failures = 0;
      streaming = true;
      if (!retryIn) showLive('Live', true);
      // Spread at random over a second: the browser reopens every page a restart cut off at
      // the same moment.
      if (opened) setTimeout(schedule, Math.random() * 1000);
      opened = true;
    });
    stream.addEventListener('error', () => {
      streaming = false;
      if (stream.readyState !== EventSource.CLOSED) {
        showLive('Reconnecting…', false);
        return;
      }
      stream.close();
      if (source === stream) source = null;
      failures += 1;
      if (failures > 3 && !signedOut && mayReload()) {
        showLive('Offline: reloading…', false);
        setTimeout(() => location.reload(), 2000);
        return;
      }
      showLive('Reconnecting…', false);
      // Each page waits its own while (one to one and a half times the pause), so that the
      // pages a restart cut off together do not all come back in the same instant.
      setTimeout(async () => {
        // Hidden meanwhile: nothing is asked until the tab is shown (then the stream opens,
        // and the page is fetched, as after any break).
        if (document.hidden) { missed = true; pausedNow(); return; }
        await checkResumePoint();
        // Fetched now, whether or not the stream opens again; so not once more when it does.
        refresh();
        opened = false;
        connect();
      }, 1000 * Math.min(60, 2 ** (failures - 1)) * (1 + Math.random() / 2));
    });
  }

  // The error envelope of a refused write, or one made up from its status (`madeUp`: the
  // server did not say it, something in between may have).
  function errorOf(answer, response) {
    return answer && answer.error
      ? answer.error
      : { code: 'HTTP_' + response.status, message: 'HTTP ' + response.status, madeUp: true };
  }

  // The Agent Hub's failures: the server stored nothing.
  const HUB_FAILED = ['AGENT_HUB_UNAVAILABLE', 'AGENT_HUB_ERROR'];

  // A refusal (4xx) recorded nothing, nor did the Agent Hub's failure — but for an answer
  // `forwarded` to the hub, which may have reached it all the same. Another server error or a
  // lost connection may have come after the change was made: say so, and let the page show
  // the feature as it is.
  // Returns what the message goes on to say (`thenShown`), or null when it says already.
  function notRecorded(error, status, forwarded) {
    const listed = Array.isArray(error.details) ? error.details.join('; ') : '';
    // A blocked gate's details are the consultations' ids: the page marks them Blocking.
    const details = error.code === 'GATE_BLOCKED'
      ? '; the consultations marked Blocking below hold it'
      : listed && listed !== error.message ? ' (' + listed + ')' : '';
    if (status === 401) {
      // Not refreshed at once: the page would become the sign-in form and take this away.
      signedOut = true;
      showLive(SIGNED_OUT, false);
      say('Not recorded: your session has ended (signed out elsewhere, or after 12 hours). Reload the page to sign in again; what you typed is kept.', 'bad');
      return null;
    }
    if (status >= 500 && (forwarded || !HUB_FAILED.includes(error.code))) {
      mayHaveLanded(error.message + details, !error.madeUp);
      return null;
    }
    say('Not recorded: ' + error.message + details, 'bad');
    return thenShown('');
  }

  // `answered`: the server answered that it could not finish (a 5xx of its own); else no
  // answer came (the connection broke, none came in time, or a proxy said so).
  function mayHaveLanded(why, answered) {
    const what = answered ? 'The server could not finish this (' : 'No answer from the server (';
    say(what + why + '): it may or may not have been recorded. The page shows the feature as it is once the server answers; try again if it still waits for you: what was recorded already is refused a second time, never made twice.', 'bad');
    refresh();
  }

  // Why a write's request brought no answer, in words.
  function unanswered(error) {
    return error && error.name === 'TimeoutError'
      ? 'none came within ' + Math.round(ANSWER_WITHIN / 1000) + ' s'
      : 'it could not be reached, or the connection broke';
  }

  // --- Approve / Reject through the API, with the version shown as If-Match. ---
  async function send(form, trigger) {
    const reason = document.getElementById('reason');
    const request = { trigger };
    if (reason && reason.value.trim()) request.reason = reason.value.trim();
    if (body.dataset.actor) {
      request.actor = body.dataset.actor;
      request.actor_kind = body.dataset.actorKind || 'human';
    }
    return decide(form, trigger, request, reason, form.dataset.version);
  }

  async function decide(form, trigger, request, reason, shown) {
    let response;
    try {
      response = await fetch('/workflow/' + encodeURIComponent(form.dataset.feature) + '/advance', {
        method: 'POST',
        credentials: 'same-origin',
        headers: {
          'Content-Type': 'application/json',
          'If-Match': '"' + shown + '"',
          'X-CSRF-Token': body.dataset.csrf || '',
        },
        body: JSON.stringify(request),
        signal: within(ANSWER_WITHIN),
      });
    } catch (e) {
      mayHaveLanded(unanswered(e));
      return null;
    }
    const answer = await response.json().catch(() => null);
    if (response.ok) {
      seen = null;
      if (answer && answer.version != null) toldVersion = String(answer.version);
      forget('reason');
      if (reason) reason.value = '';
      if (!answer) {
        say(trigger === 'human_rejected' ? 'Rejected.' : 'Approved.', 'ok');
      } else if (trigger === 'human_rejected') {
        say('Rejected: the feature went back to ' + answer.state + '.', 'ok');
      } else if (answer.state === 'GATE_1') {
        say('Approved: ' + answer.gate.approvals.length + ' of ' + answer.gate.required_approvals + ' approvals.', 'ok');
      } else {
        say('Approved: the feature moved to ' + answer.state + '.', 'ok');
      }
      return thenShown('');
    }
    const error = errorOf(answer, response);
    if (error.code === 'VERSION_CONFLICT') {
      const path = '/workflow/' + encodeURIComponent(form.dataset.feature);
      const read = (url) => fetch(url, { credentials: 'same-origin', signal: within(PAGE_WITHIN) })
        .then((r) => (r.ok ? r.json() : null)).catch(() => null);
      const [now, history] = await Promise.all([read(path), read(path + '/history')]);
      // Told what changed: the next decision is made on the feature as the next refresh shows
      // it. Until a page is fetched, the form shown keeps the version sent, so a decision is
      // still one on the round read, and is refused again.
      seen = null;
      const since = history && Array.isArray(history.transitions)
        ? history.transitions.filter((t) => t.seq > Number(shown)).map(told)
        : [];
      let what = now
        ? 'it is now ' + now.state + ' at version ' + now.version +
          (now.state === 'GATE_1' ? ', with ' + now.gate.approvals.length + ' of ' + now.gate.required_approvals + ' approvals' : '')
        : 'it is no longer at version ' + shown;
      if (since.length) what = 'since then ' + since.join(', then ') + '; ' + what;
      say('Not recorded: this feature changed while you were looking (you saw version ' + shown + '; ' + what + ').', 'bad');
      return thenShown(' The page now shows it as it is; decide again if you still want to.');
    }
    return notRecorded(error, response.status);
  }

  // One history entry in words: "bob approved", "carol rejected it".
  function told(t) {
    const who = t.actor ? t.actor + (t.on_behalf_of ? ' for ' + t.on_behalf_of : '') : 'someone unnamed';
    const did = {
      human_approved: t.override ? 'overrode the gate' : 'approved',
      human_rejected: 'rejected it',
      agent_complete: 'completed the work',
      cancel: 'cancelled it',
      start: 'started it again',
    }[t.trigger] || t.trigger;
    return who + ' ' + did;
  }

  // --- Confirm / Correct / Add context: an escalation answered through the API. ---
  async function respond(form, action) {
    const field = form.querySelector('textarea');
    const request = { action };
    if (field && field.value.trim()) request.response = field.value.trim();
    if (body.dataset.actor) request.actor = body.dataset.actor;
    const path = '/workflow/' + encodeURIComponent(form.dataset.feature) +
      '/consultations/' + encodeURIComponent(form.dataset.consultation) + '/respond';
    let response;
    try {
      response = await fetch(path, {
        method: 'POST',
        credentials: 'same-origin',
        headers: { 'Content-Type': 'application/json', 'X-CSRF-Token': body.dataset.csrf || '' },
        body: JSON.stringify(request),
        signal: within(ANSWER_WITHIN),
      });
    } catch (e) {
      mayHaveLanded(unanswered(e));
      return null;
    }
    const answer = await response.json().catch(() => null);
    if (response.ok) {
      if (field) {
        field.value = '';
        if (field.id) forget(field.id);
      }
      const status = answer && answer.status ? answer.status : 'answered';
      say(status === 'needs_reroute'
        ? 'Context sent: the consultation is needs_reroute and no longer holds the gate; the question is to be asked again with your context, by the feature\'s agent.'
        : 'Answered: the consultation is ' + status + '.', 'ok');
      return thenShown('');
    }
    const error = errorOf(answer, response);
    if (error.code === 'ALREADY_RESOLVED') {
      say('Not recorded: somebody answered this escalation already.', 'bad');
      return thenShown(' The page now shows the answer that stands.');
    }
    return notRecorded(error, response.status, true);
  }

  // Each button says what it does; a form submitted otherwise (Enter) does nothing. The
  // buttons come disabled, so that none submits anything before it is bound here.
  function bindButtons(form, act) {
    if (form.dataset.bound) return;
    form.dataset.bound = 'yes';
    form.addEventListener('submit', (event) => event.preventDefault());
    form.querySelectorAll('button[value]').forEach((button) => {
      button.addEventListener('click', (event) => {
        event.preventDefault();
        // Off while the form's request is out (see `submitting`).
        if (button.getAttribute('aria-disabled') === 'true') return;
        act(form, button.value);
      });
      button.disabled = false;
    });
  }

  // The form's buttons are off while its request is out (`aria-disabled`: a disabled button
  // would lose the focus, and a screen reader be left on the document for as long as the
  // Agent Hub takes); the page is refreshed after it, and the focus comes back to the button
  // pressed.
  async function submitting(form, send, value) {
    const back = focusFinder(document.activeElement, document.getElementById('main'));
    const buttons = Array.from(form.querySelectorAll('button'));
    buttons.forEach((button) => button.setAttribute('aria-disabled', 'true'));
    // Said at once: asking the Agent Hub about an escalation can take half a minute.
    say('Sending…');
    busy += 1;
    // What the message goes on to say once the page shows what the request did, or not.
    let after = null;
    try {
      after = await send(form, value);
    } finally {
      busy -= 1;
      settled += 1;
    }
    const mine = settled;
    // Until the page shows what the request did (a refresh under way, or another request
    // out, puts it off), the buttons stay off: pressed again, they would send the same again.
    // A refresh already under way or queued is waited for, not asked for again beside it.
    let refreshed = signedOut ? 'failed' : await refresh();
    for (let waited = 0; refreshed === 'deferred' && waited < 50; waited += 1) {
      await new Promise((resolve) => setTimeout(resolve, 200));
      if (shown >= mine) refreshed = 'swapped';
      else if (!refreshing && !queued) refreshed = await refresh();
    }
    if (refreshed === 'reloading') return;
    // The form is a new one unless the refresh failed: then these come back on, and the
    // message says the page is not showing what the request did. Not for a session that
    // ended: pressed again, they could only be refused again.
    if (!signedOut) buttons.forEach((button) => button.removeAttribute('aria-disabled'));
    if (after) message.textContent += refreshed === 'swapped' ? after.swapped : after.failed;
    const lost = () => !document.activeElement || document.activeElement === document.body;
    if (back && lost()) back();
    // The button is gone (the decision was made, or the feature left the gate): the focus goes
    // to what the page says about it, not to the top of the document.
    if (lost()) focusWhatIsSaid(true);
    showRefusal();
  }

  // A rejection says why: asked for here at once, the focus on the field (the server refuses
  // one without a reason too). True if it was missing.
  function reasonMissing(trigger) {
    const reason = document.getElementById('reason');
    if (trigger !== 'human_rejected' || !reason || reason.value.trim()) return false;
    return askFor(reason, 'Not recorded: a rejection needs a reason; say why in Reason.');
  }

  // Marks `field` as wanting an answer, puts the focus in it and says `message`; true.
  function askFor(field, message) {
    field.setAttribute('aria-invalid', 'true');
    field.focus();
    say(message, 'bad');
    return true;
  }

  // A correction or added context is the response itself: asked for here at once, the same
  // way (the server refuses an empty one too). True if it was missing.
  function responseMissing(form, action) {
    const response = form.querySelector('textarea');
    if (action === 'confirm' || !response || response.value.trim()) return false;
    const what = action === 'correct' ? 'a correction needs the right answer' : 'added context needs the context';
    return askFor(response, 'Not sent: ' + what + '; write it in Response.');
  }

  function bind() {
    const form = document.getElementById('decide');
    if (form) bindButtons(form, (f, trigger) => reasonMissing(trigger) || submitting(f, send, trigger));
    document.querySelectorAll('form.respond')
      .forEach((f) => bindButtons(f, (g, action) => responseMissing(g, action) || submitting(g, respond, action)));
  }

  // --- "3 min" (and a deadline's "in 3 min") kept current on a page no event brings again:
  // every 20 s, and when the tab is shown again. Reckoned on the server's clock: the page says
  // what time it was made there. ---
  let skew = 0;

  function clocked() {
    const main = document.getElementById('main');
    const made = main ? Date.parse(main.dataset.now || '') : NaN;
    skew = Number.isNaN(made) ? 0 : made - Date.now();
  }

  // As the server says it: "45 s", "3 min", "2 h 5 min", "4 d 3 h".
  function agoText(s) {
    if (s < 60) return s + ' s';
    if (s < 3600) return Math.floor(s / 60) + ' min';
    if (s < 86400) return Math.floor(s / 3600) + ' h ' + Math.floor((s % 3600) / 60) + ' min';
    return Math.floor(s / 86400) + ' d ' + Math.floor((s % 86400) / 3600) + ' h';
  }

  function tick() {
    const now = Date.now() + skew;
    document.querySelectorAll('#main time[data-ago]').forEach((time) => {
      const at = Date.parse(time.dateTime);
      if (Number.isNaN(at)) return;
      time.textContent = agoText(Math.max(0, Math.floor((now - at) / 1000)));
    });
    // A deadline: "in 3 min", then "5 min ago", as the server says it.
    document.querySelectorAll('#main time[data-until]').forEach((time) => {
      const at = Date.parse(time.dateTime);
      if (Number.isNaN(at)) return;
      time.textContent = at > now
        ? 'in ' + agoText(Math.floor((at - now) / 1000))
        : agoText(Math.floor((now - at) / 1000)) + ' ago';
    });
  }

  pin(document.getElementById('decide'));
  clocked();
  giveBack();
  setInterval(tick, 20000);
  bind();
  connect();
})();
