// corral web page — plain JavaScript, no framework, no build step.
//
// Everything that comes from the server is written into the page with
// textContent / attributes only; innerHTML is never used with data.
'use strict';

/* ------------------------------------------------------------------ */
/* Constants                                                            */
/* ------------------------------------------------------------------ */

// Where corral is mounted (contract §13): this module is <root>/static/app.js, so the root is
// one folder up from its own URL. Every API call and the socket are made relative to it, so the
// page works unchanged at / or under a prefix such as /agents/.
const ROOT = new URL('../', import.meta.url);
const TOKEN_KEY = 'corral.token';
// Signed in by the server's sign-in hook from the browser's own cookie: no token is sent.
const COOKIE_SESSION = 'cookie-session';
const AGENT_KEY = 'corral.agent';
const TERMINAL = new Set(['succeeded', 'failed', 'cancelled', 'timed_out']);
const STATUSES = new Set(['queued', 'running', 'succeeded', 'failed', 'cancelled', 'timed_out']);
const STATUS_LABEL = {
  queued: 'queued', running: 'running', succeeded: 'succeeded',
  failed: 'failed', cancelled: 'cancelled', timed_out: 'timed out',
};
const BACKOFF_MIN_MS = 500;
const BACKOFF_MAX_MS = 8000;
const PING_EVERY_MS = 25000;
const PONG_TIMEOUT_MS = 20000;
const AUTH_TIMEOUT_MS = 15000;
const START_TIMEOUT_MS = 15000;
const RESUME_RETRY_MS = 10000;
const POLL_EVERY_MS = 2500;
const WS_MAX_BYTES = 60 * 1024; // the server closes on > 64 KiB; larger inputs go over HTTP
const HISTORY_PAGE = 20;
const EVENTS_PAGE = 1000;
const JSON_PREVIEW_CHARS = 600;
const JSON_PREVIEW_LINES = 12;
const DELTA_KINDS = new Set(['text_delta', 'answer_delta']);
const TEXTAREA_NAMES = new Set(['message', 'question', 'prompt']);

/* ------------------------------------------------------------------ */
/* State                                                                */
/* ------------------------------------------------------------------ */

const state = {
  token: null,
  session: 0,            // bumped on sign-in/out; stale async results are dropped
  userId: null,
  agents: [],
  agentsByName: new Map(),
  fields: [],            // generated form fields of the selected agent
  thread: null,          // {id} when continuing a thread
  runs: new Map(),       // run_id -> RunState
  nextCursor: null,
  historyLoaded: false,
  pendingStarts: new Map(), // client_ref -> {timer}
  // WebSocket
  ws: null,
  wsGen: 0,
  wsReady: false,
  everReady: false,
  attempts: 0,
  reconnectTimer: null,
  reconnectAt: 0,
  pingTimer: null,
  pongTimer: null,
  authTimer: null,
  lastWsError: null,
  lastSent: null,
  pollTimer: null,
  countdownTimer: null,
};

/* ------------------------------------------------------------------ */
/* Small DOM helpers                                                    */
/* ------------------------------------------------------------------ */

const $ = (id) => document.getElementById(id);

/**
 * Create an element. attrs: className, text, dataset {}, hidden, on {event: fn},
 * any other key is set with setAttribute (values are strings, never markup).
 */
function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  if (attrs) {
    for (const [key, value] of Object.entries(attrs)) {
      if (value === undefined || value === null || value === false) continue;
      if (key === 'className') node.className = value;
      else if (key === 'text') node.textContent = String(value);
      else if (key === 'dataset') {
        for (const [k, v] of Object.entries(value)) {
          if (v !== undefined && v !== null) node.dataset[k] = String(v);
        }
      } else if (key === 'on') {
        for (const [evt, fn] of Object.entries(value)) node.addEventListener(evt, fn);
      } else if (key === 'hidden') node.hidden = true;
      else if (value === true) node.setAttribute(key, '');
      else node.setAttribute(key, String(value));
    }
  }
  for (const child of children) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function clear(node) {
  while (node.firstChild) node.removeChild(node.firstChild);
}

function shortId(id) {
  // "run_8f3k2m…" → "8f3k2m…": drop a type prefix, keep 8 characters.
  const s = String(id || '');
  const m = /^[a-z]{1,8}[_-](.+)$/i.exec(s);
  const core = m ? m[1] : s;
  return core.length > 10 ? core.slice(0, 8) : core;
}

function randomId() {
  if (window.crypto && typeof window.crypto.randomUUID === 'function') return window.crypto.randomUUID();
  const bytes = new Uint8Array(16);
  window.crypto.getRandomValues(bytes);
  return Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
}

function parseTime(value) {
  if (typeof value === 'number') return value;
  if (typeof value !== 'string') return NaN;
  return Date.parse(value);
}

function pad(n, width = 2) {
  return String(n).padStart(width, '0');
}

function formatClock(value) {
  const t = parseTime(value);
  if (!Number.isFinite(t)) return '';
  const d = new Date(t);
  return `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}.${pad(d.getMilliseconds(), 3)}`;
}

function formatDateTime(value) {
  const t = parseTime(value);
  if (!Number.isFinite(t)) return '';
  const d = new Date(t);
  const today = new Date();
  const sameDay = d.toDateString() === today.toDateString();
  const hm = `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
  if (sameDay) return hm;
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${hm}`;
}

function formatDuration(ms) {
  if (typeof ms !== 'number' || !Number.isFinite(ms)) return '';
  if (ms < 1000) return `${Math.round(ms)} ms`;
  if (ms < 60000) return `${(ms / 1000).toFixed(2)} s`;
  const m = Math.floor(ms / 60000);
  const s = Math.round((ms % 60000) / 1000);
  return `${m} min ${s} s`;
}

function toJson(value, indent = 2) {
  try {
    const s = JSON.stringify(value, null, indent);
    return s === undefined ? String(value) : s;
  } catch (_err) {
    return String(value);
  }
}

function truncate(text, max) {
  const s = String(text);
  return s.length > max ? `${s.slice(0, max - 1)}…` : s;
}

function isPlainObject(v) {
  return v !== null && typeof v === 'object' && !Array.isArray(v);
}

/**
 * A block of pretty JSON (monospace), truncated with a "Show all" toggle when long.
 * Strings are shown as they are, without JSON quotes.
 */
function jsonBlock(value, className = '') {
  let full = typeof value === 'string' ? value : toJson(value);
  if (className.includes('compact') && typeof value !== 'string') {
    // JSON never has a raw newline inside a string, so this only joins structure.
    const oneLine = toJson(value, 1).replace(/\n\s*/g, ' ');
    if (oneLine.length <= 100) full = oneLine;
  }
  const wrap = el('div', { className: `json-wrap ${className}`.trim() });
  const pre = el('pre', { className: 'json' });
  wrap.append(pre);
  const lines = full.split('\n');
  let preview = full;
  if (full.length > JSON_PREVIEW_CHARS || lines.length > JSON_PREVIEW_LINES) {
    preview = lines.slice(0, JSON_PREVIEW_LINES).join('\n');
    if (preview.length > JSON_PREVIEW_CHARS) preview = preview.slice(0, JSON_PREVIEW_CHARS);
    preview += '\n…';
  }
  pre.textContent = preview;
  if (preview !== full) {
    let expanded = false;
    const btn = el('button', {
      type: 'button', className: 'btn btn-link btn-small json-toggle', 'aria-expanded': 'false',
      text: `Show all (${full.length.toLocaleString()} characters)`,
    });
    btn.addEventListener('click', () => {
      expanded = !expanded;
      pre.textContent = expanded ? full : preview;
      btn.textContent = expanded ? 'Show less' : `Show all (${full.length.toLocaleString()} characters)`;
      btn.setAttribute('aria-expanded', String(expanded));
    });
    wrap.append(btn);
  }
  return wrap;
}

/* ------------------------------------------------------------------ */
/* Notices                                                              */
/* ------------------------------------------------------------------ */

function notify(text, kind = 'info', ttlMs = 8000) {
  const box = $('notices');
  const close = el('button', { type: 'button', className: 'notice-close', 'aria-label': 'Dismiss', text: '×' });
  const item = el('div', { className: `notice notice-${kind}`, role: kind === 'error' ? 'alert' : 'status' },
    el('span', { className: 'notice-text', text }), close);
  close.addEventListener('click', () => item.remove());
  box.append(item);
  while (box.children.length > 4) box.firstElementChild.remove();
  if (ttlMs > 0) setTimeout(() => item.remove(), ttlMs);
}

function showMessage(node, text, kind = 'error') {
  if (!node) return;
  if (!text) {
    node.hidden = true;
    node.textContent = '';
    return;
  }
  node.textContent = text;
  node.dataset.kind = kind;
  node.hidden = false;
}

/* ------------------------------------------------------------------ */
/* HTTP                                                                 */
/* ------------------------------------------------------------------ */

class ApiError extends Error {
  constructor(status, code, message, details, retryAfter) {
    super(message);
    this.status = status;
    this.code = code;
    this.details = details || [];
    this.retryAfter = retryAfter;
  }
}

async function api(method, path, body, options = {}) {
  const headers = { Accept: 'application/json' };
  if (options.auth !== false && state.token && state.token !== COOKIE_SESSION) {
    headers.Authorization = `Bearer ${state.token}`;
  }
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  Object.assign(headers, options.headers || {});
  const session = state.session;
  let response;
  try {
    response = await fetch(new URL(path.replace(/^\//, ''), ROOT), {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: 'no-store',
      credentials: 'same-origin',
    });
  } catch (_err) {
    throw new ApiError(0, 'network', 'The server could not be reached. Check that it is running.');
  }
  let payload = null;
  const text = await response.text().catch(() => '');
  if (text) {
    try { payload = JSON.parse(text); } catch (_err) { payload = null; }
  }
  if (!response.ok) {
    const err = payload && isPlainObject(payload.error) ? payload.error : {};
    const code = err.code || `http_${response.status}`;
    const message = err.message || (payload && typeof payload.detail === 'string' ? payload.detail : '')
      || `The server answered ${response.status} ${response.statusText || ''}`.trim();
    const retry = response.headers.get('Retry-After');
    const apiErr = new ApiError(response.status, code, message, err.details, retry);
    if (response.status === 401 && options.auth !== false && session === state.session && state.token) {
      signOut(`Signed out: ${message || 'your token was refused or has expired.'}`);
    }
    throw apiErr;
  }
  return payload;
}

function errorText(err) {
  if (!err) return 'Something went wrong.';
  let text = err.message || String(err);
  if (err.status === 429 && err.retryAfter) text += ` (try again in ${err.retryAfter} s)`;
  return text;
}

/* ------------------------------------------------------------------ */
/* Tokens and sign-in                                                   */
/* ------------------------------------------------------------------ */

function decodeJwtPayload(token) {
  const parts = token.split('.');
  if (parts.length !== 3) return null;
  try {
    let b64 = parts[1].replace(/-/g, '+').replace(/_/g, '/');
    while (b64.length % 4) b64 += '=';
    const bin = atob(b64);
    const bytes = Uint8Array.from(bin, (c) => c.charCodeAt(0));
    return JSON.parse(new TextDecoder().decode(bytes));
  } catch (_err) {
    return null;
  }
}

function normaliseToken(raw) {
  let token = String(raw || '').trim();
  if (/^bearer\s+/i.test(token)) token = token.replace(/^bearer\s+/i, '').trim();
  return token;
}

/** Returns an error sentence, or '' when the token looks usable. */
function checkToken(token) {
  if (!token) return 'Paste a token first.';
  if (token.split('.').length !== 3) return 'That does not look like a token: a JWT has three parts separated by dots.';
  const payload = decodeJwtPayload(token);
  if (payload && typeof payload.exp === 'number' && payload.exp * 1000 < Date.now() - 30000) {
    return 'This token has expired. Create a new one with `corral token NAME`.';
  }
  return '';
}

function signIn(token) {
  state.token = token;
  state.session += 1;
  if (token !== COOKIE_SESSION) {
    try { sessionStorage.setItem(TOKEN_KEY, token); } catch (_err) { /* storage may be disabled */ }
  }
  state.userId = null;
  $('user-id').textContent = '…';
  $('user-box').hidden = false;
  $('sign-out').hidden = false;
  $('signin-panel').hidden = true;
  $('app').hidden = false;
  showMessage($('signin-message'), '');
  $('token-input').value = '';
  resetRuns();
  loadAgents();
  loadHistory(false);
  state.attempts = 0;
  state.everReady = false;
  connect();
  startPolling();
}

function signOut(message) {
  state.session += 1;
  state.token = null;
  state.userId = null;
  try { sessionStorage.removeItem(TOKEN_KEY); } catch (_err) { /* ignore */ }
  closeSocket(1000, 'signed out');
  clearTimeout(state.reconnectTimer);
  clearInterval(state.countdownTimer);
  state.reconnectTimer = null;
  stopPolling();
  for (const pending of state.pendingStarts.values()) clearTimeout(pending.timer);
  state.pendingStarts.clear();
  setSubmitting(false);
  resetRuns();
  state.agents = [];
  state.agentsByName.clear();
  state.fields = [];
  setThread(null);
  clear($('agent-fields'));
  const select = $('agent-select');
  clear(select);
  select.append(el('option', { value: '', text: 'Loading agents…' }));
  select.disabled = true;
  $('start-run').disabled = true;
  clearFormErrors();
  $('user-box').hidden = true;
  $('sign-out').hidden = true;
  $('app').hidden = true;
  $('signin-panel').hidden = false;
  setConn('offline');
  showMessage($('signin-message'), message || '', message ? 'error' : 'info');
  const focusTarget = $('token-input');
  if (focusTarget) focusTarget.focus();
}

async function devSignIn(user) {
  const msg = $('signin-message');
  const button = $('dev-signin');
  button.disabled = true;
  try {
    const body = await api('POST', '/v1/dev/token', { user }, { auth: false });
    const token = body && typeof body.token === 'string' ? body.token : '';
    if (!token) throw new ApiError(0, 'bad_response', 'The server did not return a token.');
    signIn(token);
  } catch (err) {
    if (err.status === 404 || err.status === 403 || err.status === 405) {
      hideDevSignIn();
      showMessage(msg, 'Development sign-in is not available on this server. Run `corral token NAME` and paste the token.');
    } else {
      showMessage(msg, errorText(err));
    }
  } finally {
    button.disabled = false;
  }
}

function hideDevSignIn() {
  $('dev-section').hidden = true;
  $('dev-hint').hidden = false;
}

/* ------------------------------------------------------------------ */
/* Connection indicator                                                 */
/* ------------------------------------------------------------------ */

function setConn(stateName, detail) {
  const node = $('conn-status');
  const labels = {
    connecting: 'Connecting…', live: 'Live', reconnecting: 'Reconnecting…', offline: 'Signed out',
  };
  node.dataset.state = stateName;
  const label = detail || labels[stateName] || stateName;
  node.querySelector('.conn-label').textContent = label;
  node.title = stateName === 'live' ? 'Receiving events live over the WebSocket' : label;
  const hint = $('start-hint');
  if (hint) {
    hint.textContent = stateName === 'live' || stateName === 'offline'
      ? '' : 'Not connected: runs are started over HTTP and events are polled.';
  }
}

/* ------------------------------------------------------------------ */
/* WebSocket                                                            */
/* ------------------------------------------------------------------ */

function wsUrl() {
  const url = new URL('v1/ws', ROOT);
  url.protocol = url.protocol === 'https:' ? 'wss:' : 'ws:';
  return url.href;
}

function isLive() {
  return Boolean(state.ws && state.wsReady && state.ws.readyState === WebSocket.OPEN);
}

function connect() {
  if (!state.token) return;
  clearTimeout(state.reconnectTimer);
  clearInterval(state.countdownTimer);
  state.reconnectTimer = null;
  if (state.ws) closeSocket(1000, 'reconnecting');
  const gen = ++state.wsGen;
  state.wsReady = false;
  state.lastWsError = null;
  setConn(state.everReady ? 'reconnecting' : 'connecting');
  let ws;
  try {
    ws = new WebSocket(wsUrl());
  } catch (_err) {
    scheduleReconnect();
    return;
  }
  state.ws = ws;
  ws.onopen = () => {
    if (gen !== state.wsGen) return;
    // A cookie session signs in at the upgrade (the browser sends the cookie); else a token.
    if (state.token !== COOKIE_SESSION) rawSend({ type: 'auth', token: state.token });
    clearTimeout(state.authTimer);
    state.authTimer = setTimeout(() => {
      if (gen === state.wsGen && !state.wsReady) dropSocket();
    }, AUTH_TIMEOUT_MS);
  };
  ws.onmessage = (event) => {
    if (gen !== state.wsGen) return;
    onSocketMessage(event.data);
  };
  ws.onerror = () => { /* a close event follows */ };
  ws.onclose = (event) => {
    if (gen !== state.wsGen) return;
    onSocketClosed(event.code, event.reason);
  };
}

function rawSend(message) {
  const ws = state.ws;
  if (!ws || ws.readyState !== WebSocket.OPEN) return false;
  try {
    ws.send(JSON.stringify(message));
    if (message.type !== 'ping' && message.type !== 'auth') state.lastSent = message;
    return true;
  } catch (_err) {
    return false;
  }
}

function send(message) {
  if (!isLive()) return false;
  return rawSend(message);
}

function stopSocketTimers() {
  clearInterval(state.pingTimer);
  clearTimeout(state.pongTimer);
  clearTimeout(state.authTimer);
  state.pingTimer = null;
  state.pongTimer = null;
  state.authTimer = null;
}

/** Close the current socket and forget it (its events are ignored from now on). */
function closeSocket(code, reason) {
  const ws = state.ws;
  state.wsGen += 1;
  state.ws = null;
  state.wsReady = false;
  stopSocketTimers();
  if (ws) {
    try { ws.close(code, reason); } catch (_err) { /* ignore */ }
  }
}

/** The socket stopped answering: give up on it and reconnect. */
function dropSocket() {
  closeSocket(4000, 'no answer');
  onSocketLost();
  scheduleReconnect();
}

function onSocketLost() {
  failPendingStarts();
}

function onSocketClosed(code, reason) {
  const wasReady = state.wsReady;
  const lastError = state.lastWsError;
  state.ws = null;
  state.wsReady = false;
  state.wsGen += 1;
  stopSocketTimers();
  onSocketLost();
  if (!state.token) {
    setConn('offline');
    return;
  }
  if (code === 1008) {
    handlePolicyClose(lastError, reason, wasReady);
    return;
  }
  if (code === 1013) {
    // Slow consumer: the server dropped us; reconnect and resume from the last seq.
    scheduleReconnect();
    return;
  }
  scheduleReconnect();
}

async function handlePolicyClose(lastError, reason, _wasReady) {
  const serverText = (lastError && lastError.message) || reason || '';
  if (lastError && lastError.code === 'unauthorized') {
    signOut(`Signed out: ${serverText || 'the server refused the token.'}`);
    return;
  }
  // 1008 is also used when a user holds too many connections. Ask over HTTP whether
  // the token itself is still good (a 401 there signs out).
  const session = state.session;
  try {
    await api('GET', '/v1/agents');
  } catch (err) {
    if (session !== state.session) return;
    if (err.status === 401) return; // api() signed out already
    scheduleReconnect();
    return;
  }
  if (session !== state.session) return;
  if (!lastError && !reason) {
    // No explanation and the token still works over HTTP: retry slowly.
    state.attempts = Math.max(state.attempts, 5);
    scheduleReconnect();
    return;
  }
  notify(`The live connection was refused: ${serverText}`, 'error', 10000);
  state.attempts = Math.max(state.attempts, 5);
  scheduleReconnect();
}

function scheduleReconnect() {
  if (!state.token) return;
  clearTimeout(state.reconnectTimer);
  clearInterval(state.countdownTimer);
  const base = Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * 2 ** state.attempts);
  const delay = Math.min(BACKOFF_MAX_MS, Math.round(base * (0.85 + Math.random() * 0.3)));
  state.attempts = Math.min(state.attempts + 1, 10);
  state.reconnectAt = Date.now() + delay;
  const show = () => {
    const left = Math.max(0, Math.ceil((state.reconnectAt - Date.now()) / 1000));
    setConn(state.everReady ? 'reconnecting' : 'connecting',
      left > 0 ? `${state.everReady ? 'Reconnecting' : 'Retrying'} in ${left} s…` : (state.everReady ? 'Reconnecting…' : 'Connecting…'));
  };
  show();
  state.countdownTimer = setInterval(show, 500);
  state.reconnectTimer = setTimeout(() => {
    clearInterval(state.countdownTimer);
    state.reconnectTimer = null;
    connect();
  }, delay);
}

function onSocketMessage(raw) {
  let msg;
  try { msg = JSON.parse(raw); } catch (_err) { return; }
  if (!isPlainObject(msg)) return;
  const session = state.session;

  if (typeof msg.run_id === 'string' && typeof msg.seq === 'number' && typeof msg.type === 'string') {
    ingestEvent(msg);
    return;
  }

  switch (msg.type) {
    case 'ready':
      onReady(msg);
      break;
    case 'pong':
      clearTimeout(state.pongTimer);
      state.pongTimer = null;
      break;
    case 'run_accepted':
      onRunAccepted(msg);
      break;
    case 'error':
      onSocketError(msg);
      break;
    default:
      if (session === state.session && msg.type === 'event' && isPlainObject(msg.event)) ingestEvent(msg.event);
      break;
  }
}

function onReady(msg) {
  const reconnected = state.everReady;
  state.wsReady = true;
  state.everReady = true;
  state.attempts = 0;
  clearTimeout(state.authTimer);
  state.userId = typeof msg.user_id === 'string' ? msg.user_id : String(msg.user_id ?? '');
  $('user-id').textContent = state.userId || '(unknown)';
  $('user-id').title = state.userId;
  setConn('live');

  clearInterval(state.pingTimer);
  const gen = state.wsGen;
  state.pingTimer = setInterval(() => {
    if (gen !== state.wsGen || !isLive()) return;
    rawSend({ type: 'ping' });
    if (!state.pongTimer) {
      state.pongTimer = setTimeout(() => {
        state.pongTimer = null;
        if (gen === state.wsGen) dropSocket();
      }, PONG_TIMEOUT_MS);
    }
  }, PING_EVERY_MS);

  // Resume every run that is not finished, or that still has a gap.
  for (const rs of state.runs.values()) {
    rs.resume = null;
    if (!isTerminal(rs.status) || rs.contig < rs.maxSeq) sendResume(rs, true);
  }
  if (reconnected) {
    // Runs may have been started (or finished) while we were away: refresh the newest page.
    syncRecent();
  }
}

function onSocketError(msg) {
  state.lastWsError = { code: msg.code, message: msg.message };
  if (!state.wsReady) return; // an authentication error; the 1008 close tells the rest
  const ref = typeof msg.client_ref === 'string' ? msg.client_ref : null;
  const last = state.lastSent;
  if (ref && state.pendingStarts.has(ref)) {
    settleStart(ref);
    showFormError(msg);
    return;
  }
  if (last && last.type === 'start_run' && state.pendingStarts.has(last.client_ref)) {
    settleStart(last.client_ref);
    showFormError(msg);
    return;
  }
  if (last && last.type === 'cancel_run') {
    const rs = state.runs.get(last.run_id);
    if (rs) {
      rs.els.cancel.disabled = false;
      if (msg.code === 'conflict') {
        refreshRun(rs);
        return;
      }
    }
    notify(`Could not cancel the run: ${msg.message || msg.code}`, 'error');
    return;
  }
  if (last && last.type === 'resume') {
    // A run we asked to resume is gone or not ours any more; nothing to show.
    return;
  }
  notify(msg.message || `The server reported an error (${msg.code}).`, 'error');
}

function onRunAccepted(msg) {
  const ref = typeof msg.client_ref === 'string' ? msg.client_ref : null;
  if (ref) settleStart(ref);
  if (!isPlainObject(msg.run)) return;
  const rs = upsertRun(msg.run, { expand: true, fresh: true });
  if (rs) {
    clearFormErrors();
    flash(rs.card);
  }
}

function sendResume(rs, force = false) {
  if (!isLive()) return false;
  const now = Date.now();
  if (!force && rs.resume && rs.resume.gen === state.wsGen && now - rs.resume.at < RESUME_RETRY_MS) return false;
  const ok = send({ type: 'resume', run_id: rs.id, after: rs.contig });
  if (ok) rs.resume = { gen: state.wsGen, at: now };
  return ok;
}

/* ------------------------------------------------------------------ */
/* HTTP polling while the socket is down                                */
/* ------------------------------------------------------------------ */

function startPolling() {
  stopPolling();
  state.pollTimer = setInterval(() => {
    if (!state.token || isLive()) return;
    for (const rs of state.runs.values()) {
      if (!isTerminal(rs.status) && rs.expanded) httpFill(rs);
    }
  }, POLL_EVERY_MS);
}

function stopPolling() {
  clearInterval(state.pollTimer);
  state.pollTimer = null;
}

/* ------------------------------------------------------------------ */
/* Agents and the generated form                                        */
/* ------------------------------------------------------------------ */

async function loadAgents() {
  const session = state.session;
  const select = $('agent-select');
  select.disabled = true;
  $('start-run').disabled = true;
  let agents;
  try {
    agents = await api('GET', '/v1/agents');
  } catch (err) {
    if (session !== state.session || err.status === 401) return;
    clear(select);
    select.append(el('option', { value: '', text: 'Agents could not be loaded' }));
    const retry = el('button', { type: 'button', className: 'btn btn-small', text: 'Try again' });
    retry.addEventListener('click', () => { clearFormErrors(); loadAgents(); });
    showFormErrorNodes([el('p', { text: `Could not load the agents: ${errorText(err)}` }), retry]);
    return;
  }
  if (session !== state.session) return;
  const list = Array.isArray(agents) ? agents : (agents && Array.isArray(agents.agents) ? agents.agents : []);
  state.agents = list.filter((a) => isPlainObject(a) && typeof a.name === 'string');
  state.agentsByName = new Map(state.agents.map((a) => [a.name, a]));
  clear(select);
  if (!state.agents.length) {
    select.append(el('option', { value: '', text: 'No agents registered' }));
    clear($('agent-fields'));
    return;
  }
  for (const agent of state.agents) select.append(el('option', { value: agent.name, text: agent.name }));
  let remembered = null;
  try { remembered = sessionStorage.getItem(AGENT_KEY); } catch (_err) { /* ignore */ }
  select.value = remembered && state.agentsByName.has(remembered) ? remembered : state.agents[0].name;
  select.disabled = false;
  $('start-run').disabled = false;
  renderAgentForm();
}

function onAgentChange() {
  try { sessionStorage.setItem(AGENT_KEY, $('agent-select').value); } catch (_err) { /* ignore */ }
  clearFormErrors();
  renderAgentForm();
}

/** Follow a local "$ref" ("#/$defs/X") and merge single-entry allOf wrappers. */
function resolveSchema(schema, root, depth = 0) {
  if (!isPlainObject(schema) || depth > 8) return isPlainObject(schema) ? schema : {};
  let s = schema;
  if (typeof s.$ref === 'string' && s.$ref.startsWith('#/')) {
    let target = root;
    for (const part of s.$ref.slice(2).split('/')) {
      const key = part.replace(/~1/g, '/').replace(/~0/g, '~');
      target = isPlainObject(target) ? target[key] : undefined;
    }
    const { $ref, ...rest } = s;
    s = { ...resolveSchema(target, root, depth + 1), ...rest };
  }
  if (Array.isArray(s.allOf) && s.allOf.length === 1) {
    const { allOf, ...rest } = s;
    s = { ...resolveSchema(allOf[0], root, depth + 1), ...rest };
  }
  return s;
}

/** Work out how to edit one property: {kind, schema, nullable}. */
function fieldSpec(rawSchema, root) {
  let s = resolveSchema(rawSchema, root);
  let nullable = false;
  const union = Array.isArray(s.anyOf) ? s.anyOf : (Array.isArray(s.oneOf) ? s.oneOf : null);
  if (!s.type && union) {
    const options = union.map((o) => resolveSchema(o, root));
    const nonNull = options.filter((o) => o.type !== 'null');
    nullable = nonNull.length < options.length;
    if (nonNull.length === 1 && !Array.isArray(nonNull[0].anyOf) && !Array.isArray(nonNull[0].oneOf)) {
      const { anyOf, oneOf, ...outer } = s;
      s = { ...nonNull[0], ...outer };
    } else {
      return { kind: 'json', schema: s, nullable };
    }
  }
  let type = s.type;
  if (Array.isArray(type)) {
    nullable = nullable || type.includes('null');
    const rest = type.filter((t) => t !== 'null');
    type = rest.length === 1 ? rest[0] : 'json';
  }
  const values = Array.isArray(s.enum) ? s.enum : (s.const !== undefined ? [s.const] : null);
  if (values && values.length && values.every((v) => ['string', 'number', 'boolean'].includes(typeof v))) {
    return { kind: 'enum', schema: s, nullable, values };
  }
  if (type === 'string' || type === 'integer' || type === 'number' || type === 'boolean') {
    return { kind: type, schema: s, nullable };
  }
  return { kind: 'json', schema: s, nullable };
}

function humanize(name) {
  const s = String(name).replace(/[_-]+/g, ' ').trim();
  return s ? s.charAt(0).toUpperCase() + s.slice(1) : String(name);
}

function renderAgentForm() {
  const container = $('agent-fields');
  clear(container);
  container.append(el('legend', { className: 'visually-hidden', text: 'Agent input' }));
  state.fields = [];
  const agent = state.agentsByName.get($('agent-select').value);
  const description = $('agent-description');
  description.textContent = agent && agent.description ? String(agent.description) : '';
  if (!agent) return;

  const root = isPlainObject(agent.input_schema) ? agent.input_schema : {};
  const schema = resolveSchema(root, root);
  const props = isPlainObject(schema.properties) ? schema.properties : null;
  if (!props) {
    // No described properties: edit the whole input as JSON.
    const field = buildField('__input__', { kind: 'json', schema: { title: 'Input (JSON)', default: {} }, nullable: false }, true);
    state.fields.push(field);
    container.append(field.wrapper);
    return;
  }
  const required = new Set(Array.isArray(schema.required) ? schema.required : []);
  for (const [name, propSchema] of Object.entries(props)) {
    const spec = fieldSpec(propSchema, root);
    const field = buildField(name, spec, required.has(name));
    state.fields.push(field);
    container.append(field.wrapper);
  }
  if (!state.fields.length) {
    container.append(el('p', { className: 'help', text: 'This agent takes no input.' }));
  }
}

function buildField(name, spec, required) {
  const s = spec.schema;
  const id = `field-${name.replace(/[^A-Za-z0-9_-]/g, '_')}`;
  const helpId = `${id}-help`;
  const errorId = `${id}-error`;
  const labelText = s.title ? String(s.title) : (name === '__input__' ? 'Input (JSON)' : humanize(name));
  const hasDefault = Object.prototype.hasOwnProperty.call(s, 'default');
  const wrapper = el('div', { className: `field field-${spec.kind}`, dataset: { field: name } });
  const label = el('label', { for: id }, labelText);
  if (required) label.append(el('span', { className: 'req', 'aria-hidden': 'true', text: ' *' }));
  const helpParts = [];
  if (s.description) helpParts.push(String(s.description));
  const limits = [];
  if (typeof s.minimum === 'number') limits.push(`min ${s.minimum}`);
  if (typeof s.exclusiveMinimum === 'number') limits.push(`> ${s.exclusiveMinimum}`);
  if (typeof s.maximum === 'number') limits.push(`max ${s.maximum}`);
  if (typeof s.exclusiveMaximum === 'number') limits.push(`< ${s.exclusiveMaximum}`);
  if (typeof s.maxLength === 'number') limits.push(`up to ${s.maxLength.toLocaleString()} characters`);
  if (typeof s.minLength === 'number' && s.minLength > 0) limits.push(`at least ${s.minLength} characters`);
  if (limits.length) helpParts.push(limits.join(', '));
  if (hasDefault && spec.kind !== 'boolean') helpParts.push(`default ${toJson(s.default, 0)}`);
  if (spec.kind === 'json' && name !== '__input__') helpParts.push('JSON value');
  const help = helpParts.length ? el('p', { id: helpId, className: 'help', text: helpParts.join(' · ') }) : null;
  const errorNode = el('p', { id: errorId, className: 'field-error', hidden: true });
  const describedBy = [help ? helpId : null, errorId].filter(Boolean).join(' ');

  let control;
  const common = { id, name: name === '__input__' ? 'input' : name, 'aria-describedby': describedBy };
  if (required) common['aria-required'] = 'true';

  switch (spec.kind) {
    case 'string': {
      const long = (typeof s.maxLength === 'number' && s.maxLength > 200) || TEXTAREA_NAMES.has(name.toLowerCase());
      control = long
        ? el('textarea', { ...common, rows: 3 })
        : el('input', { ...common, type: s.format === 'password' ? 'password' : 'text' });
      if (typeof s.maxLength === 'number') control.maxLength = s.maxLength;
      if (typeof s.minLength === 'number' && s.minLength > 0) control.minLength = s.minLength;
      if (hasDefault && s.default !== null) control.value = String(s.default);
      if (!long) control.autocomplete = 'off';
      break;
    }
    case 'integer':
    case 'number': {
      control = el('input', { ...common, type: 'number', inputmode: spec.kind === 'integer' ? 'numeric' : 'decimal' });
      control.step = spec.kind === 'integer' ? '1' : 'any';
      if (typeof s.minimum === 'number') control.min = String(s.minimum);
      else if (typeof s.exclusiveMinimum === 'number' && spec.kind === 'integer') control.min = String(Math.floor(s.exclusiveMinimum) + 1);
      if (typeof s.maximum === 'number') control.max = String(s.maximum);
      else if (typeof s.exclusiveMaximum === 'number' && spec.kind === 'integer') control.max = String(Math.ceil(s.exclusiveMaximum) - 1);
      if (hasDefault && typeof s.default === 'number') control.value = String(s.default);
      break;
    }
    case 'boolean': {
      control = el('input', { ...common, type: 'checkbox' });
      control.checked = hasDefault ? Boolean(s.default) : false;
      const row = el('div', { className: 'check-row' }, control, label);
      wrapper.append(row);
      if (help) wrapper.append(help);
      wrapper.append(errorNode);
      return { name, spec, required, control, wrapper, errorNode, hasDefault };
    }
    case 'enum': {
      control = el('select', common);
      if (!required || !hasDefault) control.append(el('option', { value: '', text: required ? 'Choose…' : '(default)' }));
      spec.values.forEach((v, i) => control.append(el('option', { value: String(i), text: String(v) })));
      if (hasDefault) {
        const index = spec.values.findIndex((v) => v === s.default);
        if (index >= 0) control.value = String(index);
      }
      break;
    }
    default: {
      control = el('textarea', { ...common, rows: 4, className: 'mono', spellcheck: 'false' });
      if (hasDefault) control.value = toJson(s.default);
      break;
    }
  }
  wrapper.append(label, control);
  if (help) wrapper.append(help);
  wrapper.append(errorNode);
  return { name, spec, required, control, wrapper, errorNode, hasDefault };
}

/** Read the form into an input object. Returns {input, errors: [{field, message}]}. */
function collectInput() {
  const input = {};
  const errors = [];
  for (const f of state.fields) {
    const { kind } = f.spec;
    const c = f.control;
    if (kind === 'boolean') {
      input[f.name] = c.checked;
      continue;
    }
    const raw = c.value;
    if (kind === 'string') {
      if (raw === '' && !f.required) continue; // let the server apply its default
      input[f.name] = raw;
      continue;
    }
    if (kind === 'integer' || kind === 'number') {
      const text = raw.trim();
      if (text === '') {
        if (c.validity && c.validity.badInput) errors.push({ field: f.name, message: 'Enter a number.' });
        else if (f.required) errors.push({ field: f.name, message: 'This field is required.' });
        continue;
      }
      const n = Number(text);
      if (!Number.isFinite(n)) { errors.push({ field: f.name, message: 'Enter a number.' }); continue; }
      if (kind === 'integer' && !Number.isInteger(n)) { errors.push({ field: f.name, message: 'Enter a whole number.' }); continue; }
      input[f.name] = n;
      continue;
    }
    if (kind === 'enum') {
      if (raw === '') {
        if (f.required) errors.push({ field: f.name, message: 'Choose a value.' });
        continue;
      }
      input[f.name] = f.spec.values[Number(raw)];
      continue;
    }
    // JSON
    const text = raw.trim();
    if (text === '') {
      if (f.required) errors.push({ field: f.name, message: 'This field is required.' });
      continue;
    }
    try {
      const value = JSON.parse(text);
      if (f.name === '__input__') {
        if (!isPlainObject(value)) { errors.push({ field: f.name, message: 'The input must be a JSON object.' }); continue; }
        Object.assign(input, value);
      } else {
        input[f.name] = value;
      }
    } catch (err) {
      errors.push({ field: f.name, message: `Not valid JSON: ${err.message}` });
    }
  }
  return { input, errors };
}

/* ---- form errors ---- */

function clearFormErrors() {
  const box = $('form-errors');
  clear(box);
  box.hidden = true;
  for (const f of state.fields) {
    f.errorNode.hidden = true;
    f.errorNode.textContent = '';
    f.control.removeAttribute('aria-invalid');
    f.wrapper.classList.remove('has-error');
  }
}

function showFormErrorNodes(nodes) {
  const box = $('form-errors');
  clear(box);
  for (const n of nodes) box.append(n);
  box.hidden = false;
}

function markField(name, message) {
  const f = state.fields.find((x) => x.name === name);
  if (!f) return false;
  f.errorNode.textContent = f.errorNode.textContent ? `${f.errorNode.textContent} ${message}` : message;
  f.errorNode.hidden = false;
  f.control.setAttribute('aria-invalid', 'true');
  f.wrapper.classList.add('has-error');
  return true;
}

/** Pull a field name and a sentence out of one entry of an error's `details`. */
function describeDetail(detail) {
  if (typeof detail === 'string') return { field: null, message: detail };
  if (!isPlainObject(detail)) return { field: null, message: toJson(detail, 0) };
  let path = detail.loc ?? detail.field ?? detail.path ?? detail.name ?? detail.param ?? null;
  if (typeof path === 'string') path = path.split(/[.\/]/).filter(Boolean);
  if (!Array.isArray(path)) path = [];
  path = path.map(String);
  const message = String(detail.message ?? detail.msg ?? detail.detail ?? detail.error ?? toJson(detail, 0));
  const names = new Set(state.fields.map((f) => f.name));
  let field = null;
  for (const part of path) {
    if (names.has(part)) { field = part; break; }
  }
  const shown = path.filter((p) => !['body', 'input', 'query'].includes(p)).join('.');
  return { field, message, where: shown };
}

/** Show an error object ({code, message, details}) or an ApiError next to the form. */
function showFormError(err) {
  clearFormErrors();
  const message = err instanceof ApiError ? errorText(err) : String(err.message || err.code || 'The run was refused.');
  const details = Array.isArray(err.details) ? err.details : [];
  const nodes = [el('p', { className: 'form-error-title', text: message })];
  if (details.length) {
    const list = el('ul', { className: 'form-error-list' });
    for (const d of details) {
      const info = describeDetail(d);
      if (info.field) markField(info.field, info.message);
      list.append(el('li', {}, info.where ? el('code', { text: info.where }) : null, info.where ? ': ' : '', info.message));
    }
    nodes.push(list);
  }
  showFormErrorNodes(nodes);
}

/* ---- thread continuation ---- */

function setThread(threadId) {
  state.thread = threadId ? { id: threadId } : null;
  $('thread-chip').hidden = !threadId;
  $('thread-chip-id').textContent = threadId ? shortId(threadId) : '';
  $('thread-chip-id').title = threadId || '';
}

/* ---- submit ---- */

function setSubmitting(on) {
  const button = $('start-run');
  if (!button) return;
  button.disabled = on || !state.agents.length;
  button.textContent = on ? 'Starting…' : 'Start run';
  button.setAttribute('aria-busy', on ? 'true' : 'false');
}

function settleStart(ref) {
  const pending = state.pendingStarts.get(ref);
  if (!pending) return;
  clearTimeout(pending.timer);
  state.pendingStarts.delete(ref);
  if (!state.pendingStarts.size) setSubmitting(false);
}

function failPendingStarts() {
  if (!state.pendingStarts.size) return;
  for (const ref of Array.from(state.pendingStarts.keys())) settleStart(ref);
  showFormErrorNodes([el('p', {
    className: 'form-error-title',
    text: 'The connection dropped before the server confirmed the run. If it was started, it appears in the list once the page reconnects.',
  })]);
}

async function onSubmit(event) {
  event.preventDefault();
  if (!state.token) return;
  const agent = $('agent-select').value;
  if (!agent) return;
  clearFormErrors();
  const { input, errors } = collectInput();
  if (errors.length) {
    const list = el('ul', { className: 'form-error-list' });
    for (const e of errors) {
      markField(e.field, e.message);
      const f = state.fields.find((x) => x.name === e.field);
      const label = f && f.spec.schema.title ? f.spec.schema.title : humanize(e.field === '__input__' ? 'input' : e.field);
      list.append(el('li', {}, el('strong', { text: label }), `: ${e.message}`));
    }
    showFormErrorNodes([el('p', { className: 'form-error-title', text: 'Fix the highlighted fields.' }), list]);
    const first = state.fields.find((x) => x.name === errors[0].field);
    if (first) first.control.focus();
    return;
  }
  const clientRef = `c-${randomId()}`;
  const body = { agent, input };
  if (state.thread) body.thread_id = state.thread.id;

  const message = { type: 'start_run', ...body, client_ref: clientRef };
  const size = new Blob([JSON.stringify(message)]).size;
  if (isLive() && size <= WS_MAX_BYTES) {
    setSubmitting(true);
    const timer = setTimeout(() => {
      if (!state.pendingStarts.has(clientRef)) return;
      settleStart(clientRef);
      showFormErrorNodes([el('p', {
        className: 'form-error-title',
        text: 'The server has not confirmed the run yet. It will appear in the list if it was started.',
      })]);
      syncRecent();
    }, START_TIMEOUT_MS);
    state.pendingStarts.set(clientRef, { timer });
    if (send(message)) return;
    settleStart(clientRef);
  }
  // Over HTTP: the socket is not open (or the input is large).
  setSubmitting(true);
  const session = state.session;
  try {
    const run = await api('POST', '/v1/runs', body, { headers: { 'Idempotency-Key': clientRef } });
    if (session !== state.session) return;
    const rs = upsertRun(run, { expand: true, fresh: true });
    if (rs) {
      flash(rs.card);
      if (!isLive()) httpFill(rs);
    }
  } catch (err) {
    if (session !== state.session || err.status === 401) return;
    showFormError(err);
  } finally {
    if (session === state.session) setSubmitting(state.pendingStarts.size > 0);
  }
}

/* ------------------------------------------------------------------ */
/* Runs: state and cards                                                */
/* ------------------------------------------------------------------ */

function isTerminal(status) {
  return TERMINAL.has(status);
}

function statusRank(status) {
  if (status === 'queued') return 0;
  if (status === 'running') return 1;
  if (TERMINAL.has(status)) return 2;
  return -1;
}

function resetRuns() {
  state.runs.clear();
  state.nextCursor = null;
  state.historyLoaded = false;
  clear($('runs'));
  $('load-more').hidden = true;
  $('runs-empty').hidden = true;
  showMessage($('runs-error'), '');
  updateRunCount();
}

function updateRunCount() {
  const n = state.runs.size;
  $('runs-count').textContent = n ? `${n} shown` : '';
  $('runs-empty').hidden = n > 0 || !state.historyLoaded;
}

function createRunState(runId) {
  const rs = {
    id: runId,
    run: { run_id: runId },
    agent: '',
    status: 'queued',
    createdAt: NaN,
    events: new Map(),
    contig: 0,
    maxSeq: 0,
    tools: new Map(),
    expanded: false,
    eventsLoaded: false,
    loadingEvents: false,
    httpFilling: false,
    resume: null,
    finalFromEvent: false,
    els: null,
    card: null,
  };
  buildCard(rs);
  state.runs.set(runId, rs);
  return rs;
}

function buildCard(rs) {
  const bodyId = `run-body-${rs.id.replace(/[^A-Za-z0-9_-]/g, '_')}`;
  const toggle = el('button', {
    type: 'button', className: 'run-toggle', 'aria-expanded': 'false', 'aria-controls': bodyId,
    title: 'Show or hide the events of this run',
  }, el('span', { className: 'chevron', 'aria-hidden': 'true' }), el('span', { className: 'visually-hidden', text: 'Events of run ' + rs.id }));
  const agentName = el('span', { className: 'run-agent' });
  const runIdNode = el('code', { className: 'run-id', title: rs.id, text: shortId(rs.id) });
  const badge = el('span', { className: 'badge', dataset: { status: 'queued' }, text: 'queued' });
  const time = el('span', { className: 'run-time' });
  const duration = el('span', { className: 'run-duration' });
  const thread = el('button', { type: 'button', className: 'btn btn-quiet btn-small run-thread', text: 'Continue thread', hidden: true });
  const cancel = el('button', { type: 'button', className: 'btn btn-danger btn-small run-cancel', text: 'Cancel' });
  const head = el('header', { className: 'run-head' },
    toggle, agentName, runIdNode, badge,
    el('span', { className: 'run-meta' }, time, duration),
    el('span', { className: 'run-actions' }, thread, cancel));
  const inputLine = el('p', { className: 'run-input' });
  const timeline = el('ol', { className: 'timeline', 'aria-label': 'Events', dataset: { empty: 'Waiting for the run to start…' } });
  const loading = el('p', { className: 'run-loading', hidden: true });
  // The streamed answer is one timeline item, placed at its first delta; it is put
  // into the timeline when the first text delta arrives.
  const answer = el('div', { className: 'answer', 'aria-label': 'Answer' });
  const answerTime = el('span', { className: 'ev-time' });
  const answerWrap = el('li', { className: 'ev ev-answer' },
    answerTime, el('span', { className: 'ev-kind', text: 'answer' }), el('div', { className: 'ev-main' }, answer));
  const body = el('div', { className: 'run-body', id: bodyId, hidden: true }, loading, timeline);
  const output = el('div', { className: 'output' });
  const outputWrap = el('section', { className: 'output-wrap', hidden: true, 'aria-label': 'Output' },
    el('h4', { className: 'block-title', text: 'Output' }), output);
  const errorBlock = el('div', { className: 'run-error', role: 'status', hidden: true });
  const card = el('article', {
    className: 'run', dataset: { runId: rs.id, status: 'queued' }, 'aria-label': `Run ${shortId(rs.id)}`,
  }, head, inputLine, body, outputWrap, errorBlock);

  toggle.addEventListener('click', () => setExpanded(rs, !rs.expanded));
  head.addEventListener('click', (event) => {
    if (event.target.closest('button, a, code')) return;
    setExpanded(rs, !rs.expanded);
  });
  cancel.addEventListener('click', () => cancelRun(rs));
  thread.addEventListener('click', () => {
    if (rs.run.thread_id) {
      setThread(rs.run.thread_id);
      const agentSelect = $('agent-select');
      if (rs.agent && state.agentsByName.has(rs.agent) && agentSelect.value !== rs.agent) {
        agentSelect.value = rs.agent;
        onAgentChange();
      }
      const first = state.fields.find((f) => f.control.tagName === 'TEXTAREA' || f.control.type === 'text');
      if (first) first.control.focus();
    }
  });
  timeline.addEventListener('scroll', () => {
    rs.stick = timeline.scrollHeight - timeline.scrollTop - timeline.clientHeight < 24;
  });

  rs.stick = true;
  rs.card = card;
  rs.els = {
    toggle, agentName, runIdNode, badge, time, duration, thread, cancel,
    inputLine, timeline, loading, answer, answerWrap, answerTime, body, output, outputWrap, errorBlock,
  };
}

function insertCard(rs) {
  const list = $('runs');
  const t = Number.isFinite(rs.createdAt) ? rs.createdAt : Date.now();
  rs.card.dataset.created = String(t);
  for (const child of list.children) {
    if (child === rs.card) continue;
    const ct = Number(child.dataset.created);
    if (!(ct > t)) { // newest first; equal or unknown → new one goes above
      list.insertBefore(rs.card, child);
      return;
    }
  }
  list.append(rs.card);
}

/**
 * Add or update a run from a run object. opts.expand: open the card's timeline.
 */
function upsertRun(run, opts = {}) {
  if (!isPlainObject(run) || typeof run.run_id !== 'string') return null;
  let rs = state.runs.get(run.run_id);
  const isNew = !rs;
  if (!rs) rs = createRunState(run.run_id);
  rs.run = { ...rs.run, ...run };
  if (typeof run.agent === 'string' && run.agent) rs.agent = run.agent;
  const created = parseTime(run.created_at);
  const reposition = isNew || (Number.isFinite(created) && created !== rs.createdAt);
  if (Number.isFinite(created)) rs.createdAt = created;
  if (reposition) insertCard(rs);
  setStatus(rs, run.status, true);
  renderHeader(rs);
  if (!rs.finalFromEvent) {
    if (run.status === 'succeeded' && run.output !== undefined && run.output !== null) renderOutput(rs, run.output);
    if (isPlainObject(run.error)) renderError(rs, run.error);
  }
  if (isNew && opts.fresh) {
    // Started by this page: its events arrive live (or by polling), nothing to fetch yet.
    rs.eventsLoaded = true;
    setExpanded(rs, true, false);
  } else if (isNew) {
    if (opts.expand !== undefined ? opts.expand : !isTerminal(rs.status)) setExpanded(rs, true);
  } else if (opts.expand && !rs.expanded) {
    setExpanded(rs, true);
  }
  // Events exist that we have not seen: fetch them if the card is open.
  if (rs.expanded && typeof run.last_seq === 'number' && run.last_seq > rs.contig && !isNew) fill(rs);
  updateRunCount();
  return rs;
}

function renderHeader(rs) {
  const els = rs.els;
  els.agentName.textContent = rs.agent || 'run';
  els.time.textContent = formatDateTime(rs.run.created_at);
  els.time.title = rs.run.created_at ? `created ${rs.run.created_at}` : '';
  const started = parseTime(rs.run.started_at);
  const finished = parseTime(rs.run.finished_at);
  els.duration.textContent = Number.isFinite(started) && Number.isFinite(finished)
    ? `· ${formatDuration(finished - started)}` : '';
  els.thread.hidden = !rs.run.thread_id;
  els.thread.title = rs.run.thread_id ? `Start the next run in thread ${rs.run.thread_id}` : '';
  const input = rs.run.input;
  if (input !== undefined) {
    let text;
    if (isPlainObject(input)) {
      const main = ['question', 'message', 'prompt', 'text', 'query'].find((k) => typeof input[k] === 'string');
      if (main) {
        const others = Object.keys(input).filter((k) => k !== main);
        text = input[main] + (others.length ? `  (${others.map((k) => `${k}=${toJson(input[k], 0)}`).join(', ')})` : '');
      } else {
        text = toJson(input, 0);
      }
    } else {
      text = toJson(input, 0);
    }
    els.inputLine.textContent = truncate(text, 240);
    els.inputLine.title = text.length > 240 ? truncate(text, 4000) : '';
  }
}

function setStatus(rs, status, authoritative) {
  if (!STATUSES.has(status)) return;
  const current = rs.status;
  if (isTerminal(current)) {
    if (!(authoritative && isTerminal(status)) || status === current) return;
  } else if (statusRank(status) < statusRank(current)) {
    return;
  }
  if (status === current && rs.card.dataset.status === status) return;
  rs.status = status;
  rs.card.dataset.status = status;
  rs.els.badge.dataset.status = status;
  rs.els.badge.textContent = STATUS_LABEL[status] || status;
  const done = isTerminal(status);
  rs.els.cancel.hidden = done;
  rs.els.cancel.disabled = false;
  rs.els.answerWrap.classList.toggle('streaming', !done);
  rs.els.timeline.dataset.empty = status === 'queued' ? 'Queued — waiting for a free slot…'
    : (done ? 'No events.' : 'Waiting for events…');
  if (done) rs.resume = null;
}

function setExpanded(rs, expanded, fetchMissing = true) {
  rs.expanded = expanded;
  rs.els.body.hidden = !expanded;
  rs.els.toggle.setAttribute('aria-expanded', String(expanded));
  rs.card.classList.toggle('expanded', expanded);
  if (!expanded || !fetchMissing) return;
  if (!rs.eventsLoaded) {
    loadEvents(rs);
  } else if (!isTerminal(rs.status) || rs.contig < rs.maxSeq) {
    fill(rs);
  }
  if (!isTerminal(rs.status) && isLive()) sendResume(rs);
}

/** Get missing events: over the socket when live, else over HTTP. */
function fill(rs) {
  if (isLive()) {
    sendResume(rs);
  } else {
    httpFill(rs);
  }
}

async function loadEvents(rs) {
  if (rs.loadingEvents) return;
  rs.loadingEvents = true;
  const loading = rs.els.loading;
  loading.hidden = false;
  clear(loading);
  loading.append('Loading events…');
  const ok = await httpFill(rs);
  rs.loadingEvents = false;
  if (!state.runs.has(rs.id)) return;
  if (ok) {
    rs.eventsLoaded = true;
    loading.hidden = true;
  } else {
    clear(loading);
    const retry = el('button', { type: 'button', className: 'btn btn-small', text: 'Try again' });
    retry.addEventListener('click', () => loadEvents(rs));
    loading.append(el('span', { text: `Could not load the events: ${rs.lastFillError || 'unknown error'} ` }), retry);
  }
}

/** Fetch stored events after the last contiguous seq. Returns true on success. */
async function httpFill(rs) {
  if (rs.httpFilling) return rs.httpFillPromise;
  rs.httpFilling = true;
  const session = state.session;
  rs.httpFillPromise = (async () => {
    try {
      for (let page = 0; page < 200; page += 1) {
        const after = rs.contig;
        const body = await api('GET', `/v1/runs/${encodeURIComponent(rs.id)}/events?after=${after}&limit=${EVENTS_PAGE}`);
        if (session !== state.session) return false;
        const events = body && Array.isArray(body.events) ? body.events : (Array.isArray(body) ? body : []);
        for (const ev of events) ingestEvent(ev);
        if (events.length < EVENTS_PAGE || rs.contig === after) break;
      }
      rs.lastFillError = '';
      return true;
    } catch (err) {
      rs.lastFillError = errorText(err);
      if (err.status === 404 && session === state.session) {
        rs.lastFillError = 'this run no longer exists.';
      }
      return false;
    } finally {
      rs.httpFilling = false;
    }
  })();
  return rs.httpFillPromise;
}

async function refreshRun(rs) {
  const session = state.session;
  try {
    const run = await api('GET', `/v1/runs/${encodeURIComponent(rs.id)}`);
    if (session === state.session) upsertRun(run);
  } catch (_err) { /* ignore */ }
}

async function cancelRun(rs) {
  if (isTerminal(rs.status)) return;
  rs.els.cancel.disabled = true;
  setTimeout(() => { if (!isTerminal(rs.status)) rs.els.cancel.disabled = false; }, 5000);
  if (send({ type: 'cancel_run', run_id: rs.id })) return;
  const session = state.session;
  try {
    const run = await api('POST', `/v1/runs/${encodeURIComponent(rs.id)}/cancel`);
    if (session === state.session) upsertRun(run);
    httpFill(rs);
  } catch (err) {
    if (session !== state.session || err.status === 401) return;
    rs.els.cancel.disabled = false;
    if (err.status === 409) {
      refreshRun(rs);
      httpFill(rs);
      return;
    }
    notify(`Could not cancel the run: ${errorText(err)}`, 'error');
  }
}

function flash(node) {
  node.classList.remove('flash');
  void node.offsetWidth; // restart the animation
  node.classList.add('flash');
}

/* ------------------------------------------------------------------ */
/* History                                                              */
/* ------------------------------------------------------------------ */

async function loadHistory(more) {
  const session = state.session;
  const button = $('load-more');
  button.disabled = true;
  let path = `/v1/runs?limit=${HISTORY_PAGE}`;
  if (more && state.nextCursor) path += `&cursor=${encodeURIComponent(state.nextCursor)}`;
  try {
    const body = await api('GET', path);
    if (session !== state.session) return;
    const runs = body && Array.isArray(body.runs) ? body.runs : [];
    for (const run of runs) upsertRun(run);
    state.nextCursor = body && body.next_cursor ? body.next_cursor : null;
    state.historyLoaded = true;
    button.hidden = !state.nextCursor;
    showMessage($('runs-error'), '');
  } catch (err) {
    if (session !== state.session || err.status === 401) return;
    showMessage($('runs-error'), `Could not load earlier runs: ${errorText(err)}`);
  } finally {
    button.disabled = false;
    updateRunCount();
  }
}

/** After a reconnect: merge the newest page so runs started or finished meanwhile show up. */
async function syncRecent() {
  const session = state.session;
  try {
    const body = await api('GET', `/v1/runs?limit=${HISTORY_PAGE}`);
    if (session !== state.session) return;
    const runs = body && Array.isArray(body.runs) ? body.runs : [];
    for (const run of runs) {
      upsertRun(run);
    }
    if (!state.historyLoaded) {
      state.nextCursor = body && body.next_cursor ? body.next_cursor : null;
      state.historyLoaded = true;
      $('load-more').hidden = !state.nextCursor;
    }
    updateRunCount();
  } catch (_err) { /* the next reconnect tries again */ }
}

/* ------------------------------------------------------------------ */
/* Events                                                               */
/* ------------------------------------------------------------------ */

function ingestEvent(ev) {
  if (!isPlainObject(ev) || typeof ev.run_id !== 'string' || typeof ev.type !== 'string') return;
  const seq = ev.seq;
  if (typeof seq !== 'number' || !Number.isInteger(seq) || seq < 1) return;
  if (!state.token) return;
  let rs = state.runs.get(ev.run_id);
  if (!rs) {
    // A run we did not know about (started in another tab or by a program).
    rs = createRunState(ev.run_id);
    rs.run = { run_id: ev.run_id, thread_id: ev.thread_id };
    rs.createdAt = parseTime(ev.ts);
    if (ev.type === 'agent_started' && ev.data && typeof ev.data.agent === 'string') rs.agent = ev.data.agent;
    insertCard(rs);
    renderHeader(rs);
    rs.eventsLoaded = true;
    setExpanded(rs, true);
    updateRunCount();
    refreshRun(rs);
  }
  if (rs.events.has(seq)) return; // duplicate (resume overlap, HTTP and socket both)
  rs.events.set(seq, ev);
  if (ev.thread_id && !rs.run.thread_id) {
    rs.run.thread_id = ev.thread_id;
    rs.els.thread.hidden = false;
  }
  while (rs.events.has(rs.contig + 1)) rs.contig += 1;
  if (seq > rs.maxSeq) rs.maxSeq = seq;
  if (typeof rs.run.last_seq !== 'number' || rs.run.last_seq < rs.maxSeq) rs.run.last_seq = rs.maxSeq;

  const timeline = rs.els.timeline;
  const stick = rs.stick !== false;
  try {
    applyEvent(rs, ev);
  } catch (err) {
    // Never let one odd event break the page.
    insertRow(rs, genericRow(ev, `Could not show this event: ${err.message}`), seq);
  }
  if (stick && !rs.els.body.hidden) timeline.scrollTop = timeline.scrollHeight;

  if (rs.contig < rs.maxSeq) {
    fill(rs); // a gap: ask for what is missing
  } else {
    rs.resume = null; // caught up: the next gap may ask again at once
  }
}

/** Insert `node` into `container` so children stay ordered by data-order (seq). */
function insertOrdered(container, node, order) {
  if (node.parentNode === container) node.remove();
  node.dataset.order = String(order);
  let ref = container.lastElementChild;
  while (ref && Number(ref.dataset.order) > order) ref = ref.previousElementSibling;
  if (ref) ref.after(node); else container.prepend(node);
}

function insertRow(rs, node, seq) {
  insertOrdered(rs.els.timeline, node, seq);
}

function rowShell(ev, kindClass, kindLabel) {
  const li = el('li', { className: `ev ev-${kindClass}`, dataset: { seq: ev.seq, type: ev.type } });
  li.append(
    el('span', { className: 'ev-time', title: ev.ts ? `${ev.ts} · seq ${ev.seq}` : `seq ${ev.seq}`, text: formatClock(ev.ts) }),
    el('span', { className: 'ev-kind', text: kindLabel }),
  );
  const main = el('div', { className: 'ev-main' });
  li.append(main);
  return { li, main };
}

function genericRow(ev, note) {
  const { li, main } = rowShell(ev, 'other', ev.type.replace(/_/g, ' '));
  if (note) main.append(el('p', { className: 'ev-text', text: note }));
  if (ev.data !== undefined) main.append(jsonBlock(ev.data));
  return li;
}

function applyEvent(rs, ev) {
  const data = isPlainObject(ev.data) ? ev.data : {};
  switch (ev.type) {
    case 'agent_started': {
      setStatus(rs, 'running', false);
      if (typeof data.agent === 'string' && data.agent && !rs.agent) {
        rs.agent = data.agent;
        renderHeader(rs);
      }
      const { li, main } = rowShell(ev, 'started', 'started');
      main.append(el('span', { className: 'ev-text', text: `Run started${data.agent ? ` · ${data.agent}` : ''}` }));
      insertRow(rs, li, ev.seq);
      break;
    }
    case 'agent_thinking': {
      setStatus(rs, 'running', false);
      const { li, main } = rowShell(ev, 'thinking', 'thinking');
      if (typeof data.step === 'number') {
        const label = typeof data.total_steps === 'number' ? `${data.step}/${data.total_steps}` : `${data.step}`;
        main.append(el('span', { className: 'step', title: 'step', text: label }));
      }
      main.append(el('span', { className: 'ev-text', text: data.text !== undefined ? String(data.text) : '' }));
      insertRow(rs, li, ev.seq);
      break;
    }
    case 'tool_executing':
      setStatus(rs, 'running', false);
      toolExecuting(rs, ev, data);
      break;
    case 'tool_completed':
      setStatus(rs, 'running', false);
      toolCompleted(rs, ev, data);
      break;
    case 'agent_update': {
      setStatus(rs, 'running', false);
      if (DELTA_KINDS.has(data.kind) && typeof data.text === 'string') {
        const span = el('span', { className: 'delta', dataset: { seq: ev.seq, type: ev.type }, text: data.text });
        insertOrdered(rs.els.answer, span, ev.seq);
        const row = rs.els.answerWrap;
        if (row.parentNode !== rs.els.timeline || Number(row.dataset.order) > ev.seq) {
          insertRow(rs, row, ev.seq);
          rs.els.answerTime.textContent = formatClock(ev.ts);
          rs.els.answerTime.title = ev.ts || '';
        }
        break;
      }
      const { li, main } = rowShell(ev, 'update', data.kind ? String(data.kind).replace(/_/g, ' ') : 'update');
      const { kind, text, message, ...rest } = data;
      const line = typeof text === 'string' ? text : (typeof message === 'string' ? message : '');
      if (line) main.append(el('span', { className: 'ev-text', text: line }));
      if (Object.keys(rest).length) main.append(jsonBlock(rest, 'compact'));
      insertRow(rs, li, ev.seq);
      break;
    }
    case 'agent_completed': {
      setStatus(rs, 'succeeded', false);
      const { li, main } = rowShell(ev, 'completed', 'completed');
      main.append(el('span', { className: 'ev-text', text: `Completed${typeof data.duration_ms === 'number' ? ` in ${formatDuration(data.duration_ms)}` : ''}` }));
      insertRow(rs, li, ev.seq);
      rs.finalFromEvent = true;
      renderOutput(rs, data.output);
      rs.els.errorBlock.hidden = true;
      break;
    }
    case 'agent_error': {
      const error = isPlainObject(data.error) ? data.error : { type: 'error', message: String(data.error ?? 'unknown error') };
      setStatus(rs, error.type === 'timeout' ? 'timed_out' : 'failed', false);
      const { li, main } = rowShell(ev, 'error', error.type === 'timeout' ? 'timed out' : 'error');
      main.append(el('code', { className: 'err-type', text: String(error.type || 'error') }),
        el('span', { className: 'ev-text', text: ` ${error.message ?? ''}` }));
      if (typeof data.duration_ms === 'number') main.append(el('span', { className: 'ev-dim', text: ` · after ${formatDuration(data.duration_ms)}` }));
      insertRow(rs, li, ev.seq);
      rs.finalFromEvent = true;
      renderError(rs, error);
      break;
    }
    case 'agent_cancelled': {
      setStatus(rs, 'cancelled', false);
      const { li, main } = rowShell(ev, 'cancelled', 'cancelled');
      main.append(el('span', { className: 'ev-text', text: `Cancelled${data.reason ? `: ${data.reason}` : ''}` }));
      insertRow(rs, li, ev.seq);
      rs.finalFromEvent = true;
      break;
    }
    default:
      insertRow(rs, genericRow(ev), ev.seq);
      break;
  }
}

/* ---- tool rows: one row per call_id, updated in place ---- */

function toolRow(rs, callId, order) {
  let row = rs.tools.get(callId);
  if (row) return row;
  const li = el('li', { className: 'ev ev-tool', dataset: { callId, toolStatus: 'running' } });
  const time = el('span', { className: 'ev-time' });
  const kind = el('span', { className: 'ev-kind', text: 'tool' });
  const name = el('code', { className: 'tool-name' });
  const status = el('span', { className: 'tool-status', dataset: { status: 'running' }, text: 'running…' });
  const duration = el('span', { className: 'tool-duration' });
  const args = el('div', { className: 'tool-args' });
  const result = el('div', { className: 'tool-result', hidden: true });
  const main = el('div', { className: 'ev-main' },
    el('div', { className: 'tool-head' }, name, status, duration), args, result);
  li.append(time, kind, main);
  row = { li, time, name, status, duration, args, result, executing: false, completed: false };
  rs.tools.set(callId, row);
  insertRow(rs, li, order);
  return row;
}

function toolExecuting(rs, ev, data) {
  const callId = String(data.call_id ?? `seq-${ev.seq}`);
  const row = toolRow(rs, callId, ev.seq);
  if (row.executing) {
    insertRow(rs, genericRow(ev, 'Repeated tool call id'), ev.seq);
    return;
  }
  row.executing = true;
  row.li.dataset.seq = String(ev.seq);
  row.li.dataset.type = ev.type;
  // The row belongs where the call started (it may have been placed by its completion).
  if (Number(row.li.dataset.order) !== ev.seq) insertRow(rs, row.li, ev.seq);
  row.time.textContent = formatClock(ev.ts);
  row.time.title = ev.ts ? `${ev.ts} · seq ${ev.seq}` : `seq ${ev.seq}`;
  row.name.textContent = String(data.tool ?? 'tool');
  clear(row.args);
  if (data.args !== undefined) {
    row.args.append(el('span', { className: 'sub-label', text: 'args' }), jsonBlock(data.args, 'compact'));
  }
}

function toolCompleted(rs, ev, data) {
  const callId = String(data.call_id ?? `seq-${ev.seq}`);
  const row = toolRow(rs, callId, ev.seq);
  if (row.completed) {
    insertRow(rs, genericRow(ev, 'Repeated tool completion'), ev.seq);
    return;
  }
  row.completed = true;
  if (!row.executing) {
    row.name.textContent = String(data.tool ?? 'tool');
    row.time.textContent = formatClock(ev.ts);
  }
  const status = ['success', 'error', 'timeout'].includes(data.status) ? data.status : String(data.status ?? 'success');
  row.li.dataset.toolStatus = status;
  row.status.dataset.status = status;
  row.status.textContent = status === 'success' ? 'done' : status;
  row.duration.textContent = typeof data.duration_ms === 'number' ? formatDuration(data.duration_ms) : '';
  const result = row.result;
  clear(result);
  result.dataset.seq = String(ev.seq);
  result.dataset.type = ev.type;
  result.title = ev.ts ? `finished ${formatClock(ev.ts)} · seq ${ev.seq}` : `seq ${ev.seq}`;
  if (status === 'success') {
    if (data.result !== undefined) result.append(el('span', { className: 'sub-label', text: 'result' }), jsonBlock(data.result, 'compact'));
  } else {
    const err = data.error;
    const text = isPlainObject(err)
      ? `${err.type ? `${err.type}: ` : ''}${err.message ?? toJson(err, 0)}`
      : (err !== undefined && err !== null ? String(err) : (status === 'timeout' ? 'The tool timed out.' : 'The tool failed.'));
    result.append(el('span', { className: 'sub-label', text: 'error' }), el('p', { className: 'tool-error', text }));
    if (data.result !== undefined && data.result !== null) result.append(jsonBlock(data.result, 'compact'));
  }
  result.hidden = false;
}

/* ---- final output / error ---- */

function renderSource(source) {
  if (typeof source === 'string') {
    if (/^https?:\/\//i.test(source)) {
      return el('li', {}, el('a', { href: source, target: '_blank', rel: 'noopener noreferrer', text: source }));
    }
    return el('li', { text: source });
  }
  if (!isPlainObject(source)) return el('li', { text: toJson(source, 0) });
  const title = source.title ?? source.name ?? source.id ?? source.doc_id ?? source.path ?? source.url ?? null;
  const li = el('li', {});
  const url = typeof source.url === 'string' && /^https?:\/\//i.test(source.url) ? source.url : null;
  if (title !== null) {
    li.append(url
      ? el('a', { href: url, target: '_blank', rel: 'noopener noreferrer', className: 'source-title', text: String(title) })
      : el('strong', { className: 'source-title', text: String(title) }));
  }
  const id = source.id ?? source.doc_id;
  if (id !== undefined && id !== null && String(id) !== String(title)) li.append(' ', el('code', { className: 'source-id', text: String(id) }));
  const snippet = source.snippet ?? source.excerpt ?? source.text ?? source.content ?? source.summary;
  if (typeof snippet === 'string' && snippet) li.append(el('p', { className: 'source-snippet', text: truncate(snippet, 400) }));
  if (title === null && !snippet) li.append(jsonBlock(source, 'compact'));
  return li;
}

function renderOutput(rs, output) {
  const box = rs.els.output;
  clear(box);
  if (isPlainObject(output) && (typeof output.answer === 'string' || Array.isArray(output.sources))) {
    const { answer, sources, ...rest } = output;
    if (typeof answer === 'string') {
      box.append(el('p', { className: 'output-answer', text: answer }));
      // The streamed copy above says the same: fold it to a short preview.
      const streamed = rs.els.answer.textContent;
      rs.els.answerWrap.classList.toggle('superseded', Boolean(streamed) && streamed.trim() === answer.trim());
    }
    if (Array.isArray(sources) && sources.length) {
      box.append(el('h5', { className: 'sources-title', text: 'Sources' }));
      const list = el('ol', { className: 'sources' });
      for (const s of sources) list.append(renderSource(s));
      box.append(list);
    }
    if (Object.keys(rest).length) box.append(jsonBlock(rest));
  } else if (typeof output === 'string') {
    box.append(el('p', { className: 'output-answer', text: output }));
  } else if (output === undefined || output === null) {
    box.append(el('p', { className: 'muted', text: 'No output.' }));
  } else {
    box.append(jsonBlock(output));
  }
  rs.els.outputWrap.hidden = false;
}

function renderError(rs, error) {
  const box = rs.els.errorBlock;
  clear(box);
  const type = isPlainObject(error) && error.type ? String(error.type) : 'error';
  const message = isPlainObject(error) ? String(error.message ?? '') : String(error);
  const heading = type === 'timeout' ? 'Timed out' : (type === 'interrupted' ? 'Interrupted' : 'Failed');
  box.append(el('strong', { text: heading }), ' ', el('code', { className: 'err-type', text: type }),
    el('p', { className: 'run-error-message', text: message }));
  box.hidden = false;
}

/* ------------------------------------------------------------------ */
/* Start-up                                                             */
/* ------------------------------------------------------------------ */

function init() {
  $('token-form').addEventListener('submit', (event) => {
    event.preventDefault();
    const token = normaliseToken($('token-input').value);
    const problem = checkToken(token);
    if (problem) {
      showMessage($('signin-message'), problem);
      $('token-input').focus();
      return;
    }
    signIn(token);
  });
  $('dev-form').addEventListener('submit', (event) => {
    event.preventDefault();
    const user = $('dev-user').value.trim();
    if (!user) {
      showMessage($('signin-message'), 'Enter a user name for the development token.');
      $('dev-user').focus();
      return;
    }
    devSignIn(user);
  });
  $('sign-out').addEventListener('click', () => signOut(''));
  $('agent-select').addEventListener('change', onAgentChange);
  $('run-form').addEventListener('submit', onSubmit);
  $('thread-clear').addEventListener('click', () => setThread(null));
  $('load-more').addEventListener('click', () => loadHistory(true));

  window.addEventListener('online', () => {
    if (state.token && !state.ws && state.reconnectTimer) {
      state.attempts = 0;
      connect();
    }
  });
  document.addEventListener('visibilitychange', () => {
    // Coming back to a tab whose socket is waiting to reconnect: do it now.
    if (document.visibilityState === 'visible' && state.token && !state.ws && state.reconnectTimer) connect();
  });

  let saved = null;
  try { saved = sessionStorage.getItem(TOKEN_KEY); } catch (_err) { /* ignore */ }
  if (saved && !checkToken(saved)) {
    signIn(saved);
  } else {
    if (saved) {
      try { sessionStorage.removeItem(TOKEN_KEY); } catch (_err) { /* ignore */ }
      showMessage($('signin-message'), 'Your saved token has expired. Sign in again.');
    }
    setConn('offline');
    trySignInWithCookie();
  }
  checkDevSignIn();
}

/** A server whose sign-in hook accepts the browser's cookie signs the page in without a token. */
async function trySignInWithCookie() {
  const session = state.session;
  try {
    await api('GET', '/v1/me', undefined, { auth: false });
  } catch (_err) {
    return; // 401: no cookie session here; the sign-in form stays
  }
  if (session === state.session && !state.token) signIn(COOKIE_SESSION);
}

/** Dev sign-in only where the server gives out development tokens. */
async function checkDevSignIn() {
  try {
    const body = await api('GET', '/v1/dev/token', undefined, { auth: false });
    if (!(body && body.available)) hideDevSignIn();
  } catch (_err) {
    hideDevSignIn();
  }
}

if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', init);
else init();
