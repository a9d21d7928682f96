// corral's web page (contract §7): plain ES modules, no framework, no build step.
//
// The page is a view over the JavaScript client (`corral-client.js`, contract §11): the client
// holds the socket, signs in, reconnects with backoff, resumes unfinished runs and delivers each
// event of each of the user's runs once, in order. The page keeps what it was delivered, per
// run, and draws it.
//
// Every URL is relative to where corral is served (`<root>/static/app.js`), so the page works
// unchanged under a mount prefix (§13); the client module sits at the root and finds the API
// from its own URL.

import { CorralClient } from '../corral-client.js';
import { $, el, clear, truncate, inputText, notify, showMessage, errorText } from './dom.js';
import { schemaForm } from './schema-form.js';
import { RunCard, isTerminal } from './runs.js';
import { Threads, threadTitle } from './threads.js';

const ROOT = new URL('../', import.meta.url);
const TOKEN_KEY = 'corral.token';
const AGENT_KEY = 'corral.agent';
const RUNS_PAGE = 20;
const CONN_LABEL = { connecting: 'Connecting…', open: 'Live', reconnecting: 'Reconnecting…', closed: 'Signed out' };

/** The signed-in page: one client, its runs and threads. Dropped at sign-out. */
class Session {
  constructor(client) {
    this.client = client;
    this.closed = false;
    this.runs = new Map(); // run_id -> {run, events, card}
    this.deleted = new Set(); // thread ids deleted here: their late events are not shown
    this.view = null; // the open thread's id, or null for all runs
    this.viewGen = 0;
    this.cursor = null;
    this.agents = new Map();
    this.form = null;
    this.threads = new Threads(client, {
      stale: () => this.closed,
      open: (threadId) => this.openView(threadId),
      renamed: (thread) => {
        if (thread.thread_id === this.view) this.showViewTitle(thread);
      },
      deleted: (threadId) => this.threadDeleted(threadId),
    });
    this.actions = {
      cancel: (runId) => client.cancelRun(runId),
      answer: (runId, requestId, value) => client.sendInput(runId, requestId, value),
      openThread: (threadId) => this.openView(threadId),
      needEvents: (runId) => client.resume(runId),
      notify: (text) => notify(text, 'error'),
    };
  }

  async start() {
    let me;
    try {
      me = await this.client.request('GET', '/v1/me');
    } catch (err) {
      if (this.closed) return;
      if (err.code === 'unauthorized') signOut(`Signed out: ${err.message}`);
      else notify(`The server could not be reached: ${errorText(err)}`, 'error');
      return;
    }
    if (this.closed) return;
    $('user-id').textContent = me.user_id;
    $('user-id').title = me.user_id;
    this.loadAgents();
    this.threads.load();
    this.openView(null);
  }

  entry(runId) {
    let entry = this.runs.get(runId);
    if (!entry) this.runs.set(runId, (entry = { run: { run_id: runId }, events: [], card: null, fetching: false }));
    return entry;
  }

  inView(threadId) {
    return this.view === null || this.view === threadId;
  }

  // -- events ----------------------------------------------------------------------------------

  onEvent(ev) {
    if (this.deleted.has(ev.thread_id)) return;
    const entry = this.entry(ev.run_id);
    entry.run.thread_id ??= ev.thread_id;
    entry.events.push(ev);
    if (ev.type === 'agent_started') this.threads.touch(ev.thread_id, ev.ts);
    if (entry.card) entry.card.apply(ev);
    else if (!this.inView(ev.thread_id)) return;
    else if (entry.run.created_at) this.show(entry);
    else this.fetchRun(entry);
  }

  /** A run learnt of from its events (another tab, a program): get its run object, show it. */
  async fetchRun(entry) {
    if (entry.fetching) return;
    entry.fetching = true;
    try {
      const run = await this.client.request('GET', `/v1/runs/${encodeURIComponent(entry.run.run_id)}`);
      Object.assign(entry.run, run);
      if (!this.closed && this.inView(run.thread_id) && this.runs.get(run.run_id) === entry) this.show(entry);
    } catch {
      // gone (its thread was deleted): nothing to show
    } finally {
      entry.fetching = false;
    }
  }

  // -- the runs panel --------------------------------------------------------------------------

  /** Show a card for the run (newest first), with the events it has had so far. */
  show(entry, expand = false) {
    if (entry.card) {
      entry.card.update(entry.run);
    } else {
      const card = (entry.card = new RunCard(entry.run, this.actions));
      for (const ev of entry.events) card.apply(ev);
      const list = $('runs');
      const before = [...list.children].find((n) => n.dataset.created < entry.run.created_at);
      card.node.dataset.created = entry.run.created_at;
      list.insertBefore(card.node, before ?? null);
    }
    if (expand || !isTerminal(entry.card.status)) entry.card.expand(true);
    this.countRuns();
    return entry.card;
  }

  countRuns() {
    const n = $('runs').children.length;
    $('runs-count').textContent = n ? `${n} shown` : '';
    $('runs-empty').hidden = n > 0 || this.cursor === undefined;
  }

  /** Show all runs (null) or one thread's; new runs start in it. */
  async openView(threadId) {
    const thread = threadId === null ? null : await this.threads.get(threadId);
    if (this.closed || (threadId !== null && !thread)) return;
    this.view = threadId;
    this.viewGen += 1;
    this.threads.setCurrent(threadId);
    for (const entry of this.runs.values()) entry.card = null;
    clear($('runs'));
    this.showViewTitle(thread);
    this.cursor = undefined; // not loaded yet
    this.countRuns();
    await this.loadRuns(false);
  }

  showViewTitle(thread) {
    $('runs-title').textContent = thread ? threadTitle(thread) : 'All runs';
    $('thread-actions').hidden = !thread;
    $('runs-empty').textContent = thread
      ? 'No runs in this thread yet.'
      : 'No runs yet. Choose an agent and start one.';
    $('thread-chip').textContent = thread
      ? `New runs continue “${threadTitle(thread)}”.`
      : 'Each run starts a new thread.';
  }

  /** The newest runs of the view (or the next older page); at first also every run that waits
   * for an answer, however old, so that no open question is out of sight. */
  async loadRuns(more) {
    const gen = this.viewGen;
    const button = $('load-more');
    button.disabled = true;
    const query = (extra) => {
      const q = new URLSearchParams({ limit: RUNS_PAGE, ...extra });
      if (this.view !== null) q.set('thread_id', this.view);
      return `/v1/runs?${q}`;
    };
    try {
      const [page, waiting] = await Promise.all([
        this.client.request('GET', query(more && this.cursor ? { cursor: this.cursor } : {})),
        more ? { runs: [] } : this.client.request('GET', query({ status: 'waiting', limit: 200 })),
      ]);
      if (this.closed || gen !== this.viewGen) return;
      for (const run of [...page.runs, ...waiting.runs]) {
        const entry = this.entry(run.run_id);
        Object.assign(entry.run, run);
        this.show(entry);
      }
      this.cursor = page.next_cursor;
      button.hidden = !this.cursor;
      showMessage($('runs-error'), '');
    } catch (err) {
      if (!this.closed) showMessage($('runs-error'), `Could not load the runs: ${errorText(err)}`);
    } finally {
      button.disabled = false;
      this.countRuns();
    }
  }

  threadDeleted(threadId) {
    this.deleted.add(threadId);
    for (const [runId, entry] of this.runs) {
      if (entry.run.thread_id !== threadId) continue;
      entry.card?.node.remove();
      this.runs.delete(runId);
    }
    if (this.view === threadId) {
      this.openView(null);
      $('all-runs').focus(); // the thread's buttons are gone with it
    } else this.countRuns();
  }

  // -- agents and starting runs ----------------------------------------------------------------

  async loadAgents() {
    const select = $('agent-select');
    let agents;
    try {
      agents = await this.client.request('GET', '/v1/agents');
    } catch (err) {
      if (!this.closed) showMessage($('form-errors'), `Could not load the agents: ${errorText(err)}`);
      return;
    }
    if (this.closed) return;
    this.agents = new Map(agents.map((a) => [a.name, a]));
    clear(select);
    if (!agents.length) {
      select.append(el('option', { value: '', text: 'No agents for you' }));
      return;
    }
    for (const agent of agents) select.append(el('option', { value: agent.name, text: agent.name }));
    const remembered = sessionStorage.getItem(AGENT_KEY);
    select.value = this.agents.has(remembered) ? remembered : agents[0].name;
    select.disabled = false;
    $('start-run').disabled = false;
    this.showAgentForm();
  }

  showAgentForm() {
    const agent = this.agents.get($('agent-select').value);
    $('agent-description').textContent = agent?.description ?? '';
    this.form = schemaForm(agent?.input_schema ?? null, {
      idPrefix: 'field-', base: 'input', errorBox: $('form-errors'), legend: 'Agent input',
    });
    $('agent-fields').replaceChildren(this.form.node);
  }

  async submit() {
    const agent = $('agent-select').value;
    const got = this.form?.read();
    if (!agent || !got?.ok) return;
    const threadId = this.view;
    const button = $('start-run');
    button.disabled = true;
    button.textContent = 'Starting…';
    try {
      const run = await this.client.startRun(agent, got.value, threadId === null ? {} : { threadId });
      if (this.closed) return;
      const entry = this.entry(run.run_id);
      Object.assign(entry.run, run);
      if (this.inView(run.thread_id)) this.show(entry, true);
      if (threadId === null) {
        // A new thread: name it after its first question (rename it any time).
        this.threads.setTitle(run.thread_id, truncate(inputText(got.value), 80)).catch(() => {});
      } else {
        this.threads.touch(run.thread_id, run.created_at);
      }
    } catch (err) {
      if (this.closed) return;
      if (err.code === 'unauthorized') signOut(`Signed out: ${err.message}`);
      else this.form.showError(err.code === 'validation_error' ? err : { message: errorText(err) });
    } finally {
      button.disabled = this.closed;
      button.textContent = 'Start run';
    }
  }

  close() {
    this.closed = true;
    this.client.close();
  }
}

// -- signing in and out ----------------------------------------------------------------------

let session = null; // the signed-in page, one per tab

function setConn(state, label) {
  const node = $('conn-status');
  node.dataset.state = state;
  node.querySelector('.conn-label').textContent = label;
}

const CONN_STATE = { open: 'live', connecting: 'connecting', reconnecting: 'reconnecting', closed: 'offline' };

/** Sign in with `{token}` or `{cookies: true}` (a server whose sign-in hook reads the cookie). */
function signIn(auth) {
  const client = new CorralClient({ ...auth, onError: (err) => console.warn('corral-client:', err) });
  const mine = (session = new Session(client));
  if (auth.token) sessionStorage.setItem(TOKEN_KEY, auth.token);
  client.onStatus((status, info) => {
    if (mine !== session) return;
    if (status === 'closed') {
      signOut(`Signed out: ${info.error?.message ?? 'the connection was closed.'}`);
      return;
    }
    const retry = status === 'reconnecting' && info.delayMs ? ` (attempt ${info.attempt})` : '';
    setConn(CONN_STATE[status], CONN_LABEL[status] + retry);
  });
  client.on('*', (event) => mine.onEvent(event));
  setConn('connecting', CONN_LABEL.connecting);
  $('user-id').textContent = '…';
  $('user-box').hidden = false;
  $('sign-out').hidden = false;
  $('signin-panel').hidden = true;
  $('app').hidden = false;
  showMessage($('signin-message'), '');
  $('token-input').value = '';
  mine.start();
}

function signOut(message) {
  const ending = session;
  session = null; // first: closing the client reports `closed`, which must not sign out again
  ending?.close();
  sessionStorage.removeItem(TOKEN_KEY);
  setConn('offline', CONN_LABEL.closed);
  for (const id of ['user-box', 'sign-out', 'app']) $(id).hidden = true;
  $('signin-panel').hidden = false;
  clear($('runs'));
  clear($('thread-list'));
  clear($('agent-fields'));
  const select = $('agent-select');
  select.replaceChildren(el('option', { value: '', text: 'Loading agents…' }));
  select.disabled = true;
  $('start-run').disabled = true;
  showMessage($('form-errors'), '');
  showMessage($('signin-message'), message);
  $('token-input').focus();
}

/** The token as pasted ("Bearer …" too), or an error sentence. */
function checkToken(raw) {
  const token = raw.trim().replace(/^bearer\s+/i, '');
  const parts = token.split('.');
  if (!token) return { problem: 'Paste a token first.' };
  if (parts.length !== 3) {
    return { problem: 'That does not look like a token: a JWT has three parts separated by dots.' };
  }
  try {
    const claims = JSON.parse(atob(parts[1].replace(/-/g, '+').replace(/_/g, '/')));
    if (typeof claims.exp === 'number' && claims.exp * 1000 < Date.now() - 30000) {
      return { problem: 'This token has expired. Make a new one with `corral token NAME`.' };
    }
  } catch {
    // not ours to judge: the server says whether it signs in
  }
  return { token };
}

/** A request made before signing in (the client needs a user). */
async function ask(method, path, body) {
  const response = await fetch(new URL(path, ROOT), {
    method,
    headers: body ? { 'Content-Type': 'application/json' } : {},
    body: body ? JSON.stringify(body) : undefined,
    cache: 'no-store',
  });
  const data = await response.json().catch(() => null);
  if (!response.ok) throw new Error(data?.error?.message ?? `the server answered ${response.status}`);
  return data;
}

async function devSignIn() {
  const user = $('dev-user').value.trim();
  if (!user) {
    showMessage($('signin-message'), 'Enter a user name for the development token.');
    $('dev-user').focus();
    return;
  }
  $('dev-signin').disabled = true;
  try {
    signIn({ token: (await ask('POST', 'v1/dev/token', { user })).token });
  } catch (err) {
    showMessage($('signin-message'), errorText(err));
  } finally {
    $('dev-signin').disabled = false;
  }
}

function bind(id, type, handler) {
  $(id).addEventListener(type, (event) => {
    if (type === 'submit') event.preventDefault();
    handler(event);
  });
}

function init() {
  bind('token-form', 'submit', () => {
    const { token, problem } = checkToken($('token-input').value);
    if (problem) {
      showMessage($('signin-message'), problem);
      $('token-input').focus();
    } else signIn({ token });
  });
  bind('dev-form', 'submit', devSignIn);
  bind('sign-out', 'click', () => signOut(''));
  bind('agent-select', 'change', () => {
    sessionStorage.setItem(AGENT_KEY, $('agent-select').value);
    session?.showAgentForm();
  });
  bind('run-form', 'submit', () => session?.submit());
  bind('load-more', 'click', () => session?.loadRuns(true));
  bind('all-runs', 'click', () => session?.openView(null));
  bind('new-thread', 'click', () => session?.threads.create());
  bind('threads-more', 'click', () => session?.threads.load(true));
  bind('thread-rename', 'click', () => session?.threads.startRename());
  bind('rename-form', 'submit', () => session?.threads.submitRename());
  bind('rename-cancel', 'click', () => {
    session?.threads.cancelRename();
    $('thread-rename').focus();
  });
  bind('thread-delete', 'click', () => session?.threads.confirmDelete());

  const saved = sessionStorage.getItem(TOKEN_KEY);
  const { token, problem } = saved ? checkToken(saved) : {};
  if (token) {
    signIn({ token });
  } else {
    if (problem) showMessage($('signin-message'), 'Your saved token has expired. Sign in again.');
    sessionStorage.removeItem(TOKEN_KEY);
    // A server whose sign-in hook accepts this browser's cookie signs the page in as it is.
    ask('GET', 'v1/me').then(() => session || signIn({ cookies: true }), () => {});
  }
  // Development sign-in only where the server gives out development tokens.
  ask('GET', 'v1/dev/token').then((body) => body?.available, () => false).then((available) => {
    $('dev-section').hidden = !available;
    $('dev-hint').hidden = available;
  });
}

init();
