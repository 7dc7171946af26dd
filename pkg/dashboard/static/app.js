// cortexd dashboard: keeps the page's live part fresh and sends its
// actions to the API. Plain script, no build step; the pages work (without
// live updates or actions) where it does not run.
(function () {
  'use strict';
  const body = document.body;
  const live = document.getElementById('live');
  const flash = document.getElementById('flash');
  const conn = document.getElementById('conn');
  const terminal = ['succeeded', 'failed', 'canceled', 'timed_out'];

  function showError(msg) {
    flash.textContent = msg;
    flash.hidden = !msg;
  }

  // errorOf reads the API's error body ({"error": {"code", "message"}}).
  async function errorOf(r) {
    try {
      const b = await r.json();
      if (b && b.error) return b.error.message + ' (' + b.error.code + ')';
    } catch (e) { /* not JSON */ }
    return 'the API answered ' + r.status + ' ' + r.statusText;
  }

  let es = null; // the page's EventSource, if it follows events

  // Refresh the live part at most once a second, however many events come.
  let timer = null, last = 0, busy = false, again = false;
  async function refresh() {
    if (busy) { again = true; return; }
    busy = true;
    try {
      const r = await fetch(location.href, { headers: { 'X-Dashboard-Fragment': '1' }, credentials: 'same-origin' });
      if (r.redirected && r.url.indexOf('/ui/login') >= 0) { location.href = r.url; return; }
      const html = await r.text();
      live.innerHTML = html;
      body.dataset.refreshed = String(Date.now());
      // A workflow's page stops following events once the workflow ended.
      const ws = document.getElementById('workflow-state');
      if (ws && ws.dataset.state !== 'running' && es) {
        es.close();
        es = null;
        if (conn) conn.textContent = 'final';
        const c = document.getElementById('cancel');
        if (c) c.remove();
      }
    } catch (e) {
      if (conn) conn.textContent = 'refresh failed: ' + e.message;
    } finally {
      busy = false;
      if (again) { again = false; schedule(); }
    }
  }
  function schedule() {
    if (timer) return;
    const wait = Math.max(0, 1000 - (Date.now() - last));
    timer = setTimeout(function () { timer = null; last = Date.now(); refresh(); }, wait);
  }

  if (body.dataset.events && window.EventSource) {
    const src = new EventSource(body.dataset.events);
    es = src;
    src.onopen = function () { if (conn) conn.textContent = 'live'; schedule(); };
    src.onerror = function () { if (conn) conn.textContent = src.readyState === 2 ? 'not live' : 'reconnecting…'; };
    src.addEventListener('peer', schedule);
    src.addEventListener('progress', schedule);
    src.addEventListener('workflow', schedule);
    src.addEventListener('task', function (ev) {
      schedule();
      if (body.dataset.events.indexOf('task=') >= 0) {
        // One task's stream ends at its final state: do not reconnect.
        try {
          const d = JSON.parse(ev.data);
          if (d.task && terminal.indexOf(d.task.state) >= 0) {
            src.close();
            if (conn) conn.textContent = 'final';
            const c = document.getElementById('cancel');
            if (c) c.remove();
          }
        } catch (e) { /* ignore a malformed event */ }
      }
    });
  }
  if (body.dataset.refresh) setInterval(schedule, Number(body.dataset.refresh));

  // Buttons with data-post send a POST without a body (cancel, deny, allow,
  // log out); with data-then, the page goes there once it succeeded.
  document.addEventListener('click', async function (e) {
    const b = e.target.closest('[data-post]');
    if (!b) return;
    e.preventDefault();
    b.disabled = true;
    try {
      const r = await fetch(b.dataset.post, { method: 'POST', credentials: 'same-origin' });
      if (r.ok && b.dataset.then) { location.href = b.dataset.then; return; }
      showError(r.ok ? '' : await errorOf(r));
    } catch (err) {
      showError('the request failed: ' + err.message);
    } finally {
      b.disabled = false;
      schedule();
    }
  });

  // base64 of a string's UTF-8 bytes.
  function base64Of(s) {
    const bytes = new TextEncoder().encode(s);
    let bin = '';
    for (let i = 0; i < bytes.length; i++) bin += String.fromCharCode(bytes[i]);
    return btoa(bin);
  }

  const form = document.getElementById('submit-form');
  if (form) {
    const sel = form.elements.skill, input = form.elements.input;
    function example() {
      const o = sel.options[sel.selectedIndex];
      if (o && o.dataset.example && (!input.value || input.dataset.example === input.value)) {
        input.value = o.dataset.example;
        input.dataset.example = o.dataset.example;
      }
    }
    sel.addEventListener('change', example);
    example();
    form.addEventListener('submit', async function (e) {
      e.preventDefault();
      const status = document.getElementById('submit-status');
      const req = { skill: sel.value, priority: form.elements.priority.value };
      if (form.elements.version.value.trim()) req.version = form.elements.version.value.trim();
      if (form.elements.timeout.value.trim()) req.timeout = form.elements.timeout.value.trim();
      const text = input.value;
      if (form.elements.raw.checked) {
        req.input_base64 = base64Of(text);
      } else if (text.trim()) {
        try { req.input = JSON.parse(text); } catch (err) {
          showError('the input is not JSON: ' + err.message + ' (tick "raw bytes" to send it as text)');
          return;
        }
      }
      status.textContent = 'submitting…';
      try {
        const r = await fetch('/v1/tasks', {
          method: 'POST', credentials: 'same-origin',
          headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(req),
        });
        if (!r.ok) { status.textContent = ''; showError(await errorOf(r)); return; }
        const t = await r.json();
        location.href = '/ui/tasks/' + encodeURIComponent(t.id);
      } catch (err) {
        status.textContent = '';
        showError('the request failed: ' + err.message);
      }
    });
  }

  const login = document.getElementById('login-form');
  if (login) {
    login.addEventListener('submit', async function (e) {
      e.preventDefault();
      const st = document.getElementById('login-status');
      const r = await fetch('/ui/login', {
        method: 'POST', credentials: 'same-origin',
        headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify({ token: login.elements.token.value }),
      });
      if (r.ok) { location.href = login.dataset.next || '/ui/'; return; }
      st.textContent = await errorOf(r);
    });
  }
})();
