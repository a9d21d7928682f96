// Helpers of the client's tests: the server under test, tokens, and checks of event streams.
//
// The tests that need a server read it from the environment; `python -m pytest tests/clients`
// starts a real corral server and a cutting proxy in front of it and sets these:
//   CORRAL_URL            the server (a loopback one: it gives out development tokens)
//   CORRAL_PROXY_URL      the cutting proxy in front of it
//   CORRAL_TOKEN_EXPIRED  a token of user "expired-user" that expired a while ago
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';

export const SERVER = process.env.CORRAL_URL ?? null;
export const PROXY = process.env.CORRAL_PROXY_URL ?? null;
export const EXPIRED_TOKEN = process.env.CORRAL_TOKEN_EXPIRED ?? null;

const HOW = '(python -m pytest tests/clients starts a server and sets it)';
/** A node:test `skip` value: false when the server tests can run, else why not. */
export const needsServer = SERVER ? false : `set CORRAL_URL to a loopback corral server ${HOW}`;
export const needsProxy = SERVER && PROXY ? false : `set CORRAL_URL and CORRAL_PROXY_URL ${HOW}`;

export const TERMINAL = new Set(['agent_completed', 'agent_error', 'agent_cancelled']);

/** A user name no other test uses: a client receives every event of its user. */
export function newUser(prefix) {
  return `${prefix}-${randomUUID().slice(0, 8)}`;
}

/** A development token for `user` from the loopback server (POST /v1/dev/token). */
export async function devToken(user) {
  const body = await call(null, 'POST', '/v1/dev/token', { user });
  return body.token;
}

/** A JSON request straight to the server (never through the proxy); throws on an error status. */
export async function call(token, method, path, body) {
  const headers = { 'Content-Type': 'application/json' };
  if (token) headers.Authorization = `Bearer ${token}`;
  const response = await fetch(SERVER + path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  assert.ok(response.ok, `${method} ${path} answered ${response.status}: ${text}`);
  return text ? JSON.parse(text) : null;
}

/** The events the server stored for a run, in seq order. */
export async function storedEvents(token, runId) {
  const body = await call(token, 'GET', `/v1/runs/${runId}/events?after=0&limit=10000`);
  return body.events;
}

/** Poll `check` (async allowed) every 25 ms until it returns a truthy value, within a deadline. */
export async function eventually(check, what, timeoutMs = 20000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
}

/**
 * Everything a client delivers, per run in delivery order, and its status changes. `until`
 * waits for a condition to hold after some delivery (event-driven, with a deadline).
 */
export class Recorder {
  constructor(client) {
    this.byRun = new Map();
    this.all = [];
    this.statuses = [];
    this.waiters = new Set();
    client.on('*', (event) => {
      this.all.push(event);
      if (!this.byRun.has(event.run_id)) this.byRun.set(event.run_id, []);
      this.byRun.get(event.run_id).push(event);
      this.#wake();
    });
    client.onStatus((status, info) => {
      this.statuses.push({ status, info, unfinished: this.unfinished() });
      this.#wake();
    });
  }

  events(runId) {
    return this.byRun.get(runId) ?? [];
  }

  finished(runId) {
    const events = this.events(runId);
    return events.length > 0 && TERMINAL.has(events[events.length - 1].type);
  }

  /** Runs that have delivered events but not their terminal one. */
  unfinished() {
    return [...this.byRun.keys()].filter((id) => !this.finished(id)).length;
  }

  until(condition, what, timeoutMs = 30000) {
    if (condition()) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const waiter = {
        condition,
        resolve: () => {
          clearTimeout(timer);
          resolve();
        },
      };
      const timer = setTimeout(() => {
        this.waiters.delete(waiter);
        reject(new Error(`timed out after ${timeoutMs} ms waiting for ${what}`));
      }, timeoutMs);
      this.waiters.add(waiter);
    });
  }

  #wake() {
    for (const waiter of [...this.waiters]) {
      if (waiter.condition()) {
        this.waiters.delete(waiter);
        waiter.resolve();
      }
    }
  }
}

/** Contract §4 for one run's events as delivered: seq 1..N, started first, one terminal last. */
export function checkRun(events, runId) {
  assert.ok(events.length > 0, `run ${runId}: no events`);
  const seqs = events.map((e) => e.seq);
  assert.deepEqual(
    seqs,
    Array.from(seqs, (_, i) => i + 1),
    `run ${runId}: seq not 1..N: ${seqs}`,
  );
  const types = events.map((e) => e.type);
  assert.ok(TERMINAL.has(types.at(-1)), `run ${runId}: last event is ${types.at(-1)}`);
  assert.equal(types.filter((t) => TERMINAL.has(t)).length, 1, `run ${runId}: terminal events: ${types}`);
  if (events.length > 1) assert.equal(types[0], 'agent_started', `run ${runId}: first event is ${types[0]}`);
  for (const e of events) assert.equal(e.run_id, runId);
}
