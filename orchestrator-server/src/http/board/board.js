// The reviewer board's script: live updates from the event stream, and Approve / Reject.
// No dependencies; served by the orchestrator itself under a policy that allows nothing else.
(() => {
  'use strict';

  const body = document.body;
  const feature = body.dataset.feature || '';
  const types = (body.dataset.eventTypes || '').split(' ').filter(Boolean);
  const live = document.getElementById('live');
  const message = document.getElementById('message');

  function say(text, tone) {
    message.textContent = text;
    message.className = 'message' + (tone ? ' ' + tone : '');
  }

  // --- Live: on any event, fetch this page again and swap its <main>. ---
  let queued = null;
  let refreshing = false;

  async function refresh() {
    if (refreshing) { schedule(); return; }
    refreshing = true;
    try {
      const response = await fetch(location.href, { credentials: 'same-origin', headers: { Accept: 'text/html' } });
      if (!response.ok) return;
      const next = new DOMParser().parseFromString(await response.text(), 'text/html').getElementById('main');
      const current = document.getElementById('main');
      if (!next || !current) return;
      // What the reader is typing and where the focus is survive the swap.
      const reason = document.getElementById('reason');
      const typed = reason ? reason.value : '';
      const focused = document.activeElement && document.activeElement.id;
      current.replaceWith(document.adoptNode(next));
      const again = document.getElementById('reason');
      if (again) again.value = typed;
      if (focused) {
        const element = document.getElementById(focused);
        if (element) element.focus();
      }
      bind();
    } catch (_) {
      // The next event tries again.
    } finally {
      refreshing = false;
    }
  }

  function schedule() {
    if (queued) return;
    queued = setTimeout(() => { queued = null; refresh(); }, 150);
  }

  function connect() {
    if (!live || typeof EventSource === 'undefined') return;
    const params = new URLSearchParams({ after: body.dataset.lastEventId || '0' });
    if (feature) params.set('feature_id', feature);
    // The browser resumes by itself after a drop, sending Last-Event-ID.
    const source = new EventSource('/events/stream?' + params.toString());
    types.forEach((type) => source.addEventListener(type, schedule));
    source.addEventListener('open', () => { live.textContent = 'Live'; live.className = 'live on'; });
    source.addEventListener('error', () => {
      const closed = source.readyState === EventSource.CLOSED;
      live.textContent = closed ? 'Offline: reload the page' : 'Reconnecting…';
      live.className = 'live';
    });
  }

  // --- Approve / Reject through the API, with the version shown as If-Match. ---
  async function decide(form, trigger) {
    const reason = document.getElementById('reason');
    const request = { trigger };
    if (reason && reason.value.trim()) request.reason = reason.value.trim();
    if (body.dataset.actor) {
      request.actor = body.dataset.actor;
      request.actor_kind = body.dataset.actorKind || 'human';
    }
    const shown = form.dataset.version;
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
      });
    } catch (_) {
      say('The server could not be reached; nothing was decided. Try again.', 'bad');
      return;
    }
    const answer = await response.json().catch(() => null);
    if (response.ok && answer) {
      if (reason) reason.value = '';
      if (trigger === 'human_rejected') {
        say('Rejected: the feature went back to ' + answer.state + '.', 'ok');
      } else if (answer.state === 'GATE_1') {
        say('Approved: ' + answer.gate.approvals.length + ' of ' + answer.gate.required_approvals + ' approvals.', 'ok');
      } else {
        say('Approved: the feature moved to ' + answer.state + '.', 'ok');
      }
    } else {
      const error = answer && answer.error ? answer.error : { code: 'HTTP_' + response.status, message: response.statusText };
      if (error.code === 'VERSION_CONFLICT') {
        const now = await fetch('/workflow/' + encodeURIComponent(form.dataset.feature), { credentials: 'same-origin' })
          .then((r) => (r.ok ? r.json() : null)).catch(() => null);
        const what = now
          ? 'it is now ' + now.state + ' at version ' + now.version + ', with ' + now.gate.approvals.length + ' of ' + now.gate.required_approvals + ' approvals'
          : 'it is no longer at version ' + shown;
        say('Not recorded: this feature changed while you were looking (you saw version ' + shown + '; ' + what + '). The page now shows it as it is; decide again if you still want to.', 'bad');
      } else {
        const details = Array.isArray(error.details) && error.details.length ? ' (' + error.details.join('; ') + ')' : '';
        say('Not recorded: ' + error.message + details, 'bad');
      }
    }
    await refresh();
  }

  function bind() {
    const form = document.getElementById('decide');
    if (!form || form.dataset.bound) return;
    form.dataset.bound = 'yes';
    form.addEventListener('submit', (event) => {
      event.preventDefault();
      const trigger = event.submitter ? event.submitter.value : 'human_approved';
      decide(form, trigger);
    });
  }

  bind();
  connect();
})();
