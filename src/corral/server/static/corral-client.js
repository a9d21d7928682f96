// corral-client.js — the JavaScript client of corral (contract §11).
//
// One ES module with no dependencies and no build step. The same bytes are the npm package
// `corral-client` (clients/js/ in the corral repository) and the script corral serves at
// `<app root>/corral-client.js`. It runs in browsers and in Node 20+ (Node 20 needs
// `--experimental-websocket`, or a WebSocket constructor passed in; Node 22+ has one built in).
//
// Delivery. The server promises every stored event of the user's runs at least once and in
// order per run, provided the client resumes after a disconnect (contract §5). This client keeps,
// per run, the last seq it delivered: anything at or below it is a duplicate and dropped;
// anything beyond the next seq is a gap — it is held back, and the server is asked to resume the
// run from the last delivered seq. After every reconnect it resumes each run it knows that has
// not reached its terminal event. So listeners see each run's events exactly once, seq 1, 2, 3, …
// up to its one terminal event.
//
// Starting runs. Every start carries an idempotency key, its `clientRef`: the server answers a
// repeated key with the first run (contract §5; `client_ref` and `Idempotency-Key` are one key
// space per user), so a start is applied exactly once however often the network fails. By
// default (`startOver: "socket"`) `startRun` sends `start_run` over the WebSocket when the
// socket is open and resolves on the matching `run_accepted`; a start whose socket drops before
// that is sent again, with the same `client_ref`, on the next socket. While the socket is down,
// for a message near the server's 64 KiB limit, and with `startOver: "http"`, it uses
// `POST /v1/runs` with `Idempotency-Key: <clientRef>`, retried across dropped connections.
// `startAndStream` starts and streams a run in one request (`POST /v1/runs/stream`).
//
// Cancelling and answering input requests go over HTTP (`POST /v1/runs/{id}/cancel`,
// `POST /v1/runs/{id}/input`): the socket messages have no acknowledgement, the HTTP routes
// answer with the run object or a refusal with its code.

const TERMINAL = new Set(['agent_completed', 'agent_error', 'agent_cancelled']);

/** The event types that end a run; exactly one of them is each run's last event. */
export const TERMINAL_TYPES = Object.freeze([...TERMINAL]);

const OPEN = 1; // WebSocket.OPEN; an injected constructor need not carry the static
// What the event stream of `startAndStream` yields first, once the run object has arrived.
const RUN_KNOWN = Symbol('run known');
// The server closes a socket on a message over 64 KiB; a start near that goes over HTTP.
const SOCKET_MAX_BYTES = 60 * 1024;
// Finished runs are remembered so late duplicates of their events are recognised; a page open
// for days forgets the oldest ones (an entry is a few dozen bytes).
const FINISHED_KEPT = 10000;
// A run's events held behind a gap; past this the resume that fills the gap brings them again.
const HELD_MAX = 10000;
const RETRY_STATUSES = new Set([502, 503, 504]);
const CODE_OF_STATUS = {
  401: 'unauthorized',
  403: 'forbidden',
  404: 'not_found',
  409: 'conflict',
  413: 'payload_too_large',
  422: 'validation_error',
  429: 'rate_limited',
  503: 'unavailable',
};
const DEFAULTS = Object.freeze({
  minBackoffMs: 250,
  maxBackoffMs: 10000,
  retries: 8,
  pingIntervalMs: 25000,
  pongTimeoutMs: 10000,
  authTimeoutMs: 15000,
  idleTimeoutMs: 45000,
});

/**
 * A refusal or failure, with the server's error code (contract §3: `unauthorized`, `not_found`,
 * `conflict`, `payload_too_large`, `validation_error` with `details`, `rate_limited`,
 * `unavailable`) or one of the client's own: `network_error` (the server could not be reached,
 * retries included), `closed` (the client was closed), `http_error` (an answer without a code).
 */
export class CorralError extends Error {
  constructor(code, message, options = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'CorralError';
    this.code = code;
    this.status = options.status ?? null;
    this.details = options.details ?? null;
    this.retryAfter = options.retryAfter ?? null;
    this.clientRef = options.clientRef ?? null;
  }
}

/**
 * The messages of a `text/event-stream` body (a fetch `ReadableStream` of bytes), as
 * `{event, data, id}`, following the HTML parsing rules: CR, LF or CRLF line ends (also split
 * across chunks), multi-line `data`, comments skipped. `id` is the last event id seen so far.
 * `onChunk` is called for every chunk read, keepalive comments included. Returning early (a
 * `break` in `for await`) cancels the body.
 */
export async function* readEventStream(body, { onChunk } = {}) {
  const reader = body.getReader();
  const decoder = new TextDecoder();
  const lineEnd = /[\r\n]/g;
  let buffer = '';
  let data = [];
  let event = '';
  let id = null;
  // One line of the stream; returns the message a blank line completes, if any.
  const line = (text) => {
    if (text === '') {
      const message = data.length ? { event: event || 'message', data: data.join('\n'), id } : null;
      data = [];
      event = '';
      return message;
    }
    if (text[0] === ':') return null;
    const colon = text.indexOf(':');
    const field = colon < 0 ? text : text.slice(0, colon);
    let value = colon < 0 ? '' : text.slice(colon + 1);
    if (value[0] === ' ') value = value.slice(1);
    if (field === 'data') data.push(value);
    else if (field === 'event') event = value;
    else if (field === 'id' && !value.includes('\0')) id = value;
    return null;
  };
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) {
        // A CR held back in case an LF followed ends its line after all; a message without
        // its blank line is dropped, as browsers do.
        if (buffer.endsWith('\r')) {
          const message = line(buffer.slice(0, -1));
          if (message) yield message;
        }
        return;
      }
      if (onChunk) onChunk();
      buffer += decoder.decode(value, { stream: true });
      let start = 0;
      for (;;) {
        lineEnd.lastIndex = start;
        const found = lineEnd.exec(buffer);
        if (found === null) break;
        const at = found.index;
        // A CR at the end of what arrived may be the first half of a CRLF: wait for more.
        if (buffer[at] === '\r' && at + 1 === buffer.length) break;
        const message = line(buffer.slice(start, at));
        start = at + (buffer[at] === '\r' && buffer[at + 1] === '\n' ? 2 : 1);
        if (message) yield message;
      }
      buffer = buffer.slice(start);
    }
  } finally {
    reader.cancel().catch(() => {});
  }
}

/**
 * A client of one corral server for one user: live events of all the user's runs over one
 * WebSocket, runs started, cancelled and answered over HTTP, and single runs read as
 * Server-Sent Events. It connects as soon as it is made and reconnects on its own (exponential
 * backoff with jitter) until `close()`. Methods may be called while it is (re)connecting.
 */
export class CorralClient {
  #base;
  #wsUrl;
  #token;
  #getToken;
  #WebSocket;
  #fetch;
  #startOver;
  #o;
  #onError;
  #status = 'connecting';
  #closed = false;
  #closeError = null;
  #everReady = false;
  #userId = null;
  #ws = null;
  #gen = 0; // bumped for every socket: callbacks of an older socket are ignored
  #readyGen = -1; // the socket whose `ready` arrived
  #attempt = 0;
  #reconnectTimer = null;
  #authTimer = null;
  #pingTimer = null;
  #lastReceived = 0;
  #pingSent = false;
  #serverError = null; // the error the server sent on this socket, to explain its close
  #runs = new Map(); // run_id -> {id, last, held: Map<seq, event>, done, resumedOn}
  #finished = []; // ids of finished runs, oldest first
  #handlers = new Map(); // type or "*" -> Set<handler>
  #statusHandlers = new Set();
  #starts = new Map(); // client_ref -> {message, promise, resolve, reject} (socket starts)
  #waiters = new Set(); // ready() callers
  #active = new Set(); // AbortControllers of requests and streams in flight

  /**
   * @param {object} options `baseUrl` (the server, with its mount prefix if any; default: where
   *   this module was served from), `token` or `getToken` (sync or async; asked before every
   *   (re)connect and every HTTP request) — or `cookies: true` alone, for a page whose server
   *   signs it in from the browser's own cookies (an `--auth` hook): then no token is sent at
   *   all, neither in an `auth` message nor in an `Authorization` header — `WebSocket` and
   *   `fetch` (default: the global ones), `startOver` (`"socket"`, the default, or `"http"`),
   *   `onError` (gets listener exceptions and server errors that answer no request; default
   *   `console.error`), and the timings (index.d.ts).
   */
  constructor(options = {}) {
    if (options === null || typeof options !== 'object') {
      throw new TypeError('new CorralClient({baseUrl, token | getToken}) takes an options object');
    }
    const { token, getToken, cookies = false } = options;
    if (typeof cookies !== 'boolean') throw new TypeError('`cookies` is true or false');
    if (cookies ? token != null || getToken != null : (token == null) === (getToken == null)) {
      throw new TypeError(
        'pass exactly one of `token` (a string) or `getToken` (a function returning one), ' +
          'or `cookies: true` alone',
      );
    }
    if (token != null && (typeof token !== 'string' || !token)) {
      throw new TypeError('`token` must be a non-empty string');
    }
    if (getToken != null && typeof getToken !== 'function') {
      throw new TypeError('`getToken` must be a function returning a token (or a promise of one)');
    }
    this.#token = token ?? null;
    this.#getToken = getToken ?? null;
    this.#base = resolveBase(options.baseUrl);
    this.#wsUrl = `${this.#base.replace(/^http/, 'ws')}/v1/ws`;
    const WebSocketImpl = options.WebSocket ?? globalThis.WebSocket;
    if (typeof WebSocketImpl !== 'function') {
      throw new TypeError(
        'no WebSocket constructor: pass {WebSocket}, or on Node 20 run ' +
          '`node --experimental-websocket` (Node 22+ has one built in)',
      );
    }
    this.#WebSocket = WebSocketImpl;
    const fetchImpl = options.fetch ?? globalThis.fetch;
    if (typeof fetchImpl !== 'function') throw new TypeError('no fetch function: pass {fetch}');
    // Called through a closure: a browser's fetch refuses a `this` other than the window.
    this.#fetch = (...args) => fetchImpl(...args);
    const startOver = options.startOver ?? 'socket';
    if (startOver !== 'http' && startOver !== 'socket') {
      throw new TypeError('`startOver` is "socket" (the default) or "http"');
    }
    this.#startOver = startOver;
    this.#o = { ...DEFAULTS };
    for (const key of Object.keys(DEFAULTS)) {
      const value = options[key];
      if (value === undefined) continue;
      if (typeof value !== 'number' || !(value >= 0) || !Number.isFinite(value)) {
        throw new TypeError(`\`${key}\` must be a number >= 0`);
      }
      this.#o[key] = value;
    }
    const onError = options.onError ?? ((err) => console.error('corral-client:', err));
    if (typeof onError !== 'function') throw new TypeError('`onError` must be a function');
    this.#onError = onError;
    this.#connect();
  }

  /** `"connecting"` (never open yet), `"open"`, `"reconnecting"` or `"closed"`. */
  get status() {
    return this.#status;
  }

  /** The user the server signed this client in as (from `ready`); null before the first. */
  get userId() {
    return this.#userId;
  }

  /** The server's base URL this client talks to, without a trailing slash. */
  get baseUrl() {
    return this.#base;
  }

  /**
   * Listen to events: `type` is an event type (`"agent_completed"`, …) or `"*"` for all of
   * them. Each event of each run of the user reaches a listener once, in seq order per run.
   * Returns a function that removes the listener.
   */
  on(type, handler) {
    if (typeof type !== 'string' || !type)
      throw new TypeError('on(type, handler): type is an event type or "*"');
    if (typeof handler !== 'function') throw new TypeError('on(type, handler): handler must be a function');
    let set = this.#handlers.get(type);
    if (!set) this.#handlers.set(type, (set = new Set()));
    const entry = (event) => handler(event); // the same function may be added twice
    set.add(entry);
    return () => {
      set.delete(entry);
    };
  }

  /**
   * Watch the connection: `handler(status, info)` on every change (`info` may carry `attempt`,
   * `delayMs`, `code`, `reason`, `error`, `userId`). Returns a function that removes it.
   */
  onStatus(handler) {
    if (typeof handler !== 'function') throw new TypeError('onStatus(handler): handler must be a function');
    const entry = (status, info) => handler(status, info);
    this.#statusHandlers.add(entry);
    return () => {
      this.#statusHandlers.delete(entry);
    };
  }

  /** Resolves when the socket is signed in (at once if it is); rejects if the client closes. */
  ready() {
    if (this.#closed) return Promise.reject(this.#closeError ?? closedError());
    if (this.#status === 'open') return Promise.resolve();
    return new Promise((resolve, reject) => this.#waiters.add({ resolve, reject }));
  }

  /**
   * Start a run of `agent`; resolves with the run object (contract §3). `options`: `threadId`,
   * `clientRef` (the idempotency key; one is generated when absent), `multitask`, `timeoutS`.
   * Safe to retry with the same `clientRef`: the server answers with the first run.
   */
  async startRun(agent, input, options = {}) {
    this.#assertOpen();
    const { body, clientRef } = startBody(agent, input, options);
    if (this.#startOver === 'socket' && this.#status === 'open') {
      const message = { type: 'start_run', ...body, client_ref: clientRef };
      if (utf8Length(JSON.stringify(message)) <= SOCKET_MAX_BYTES) return this.#startOnSocket(message);
    }
    // The socket saw every event of runs created while it stayed signed in; otherwise the run
    // is resumed below so what was published before the socket knew of it is not missed.
    const readyOn = this.#readyGen === this.#gen ? this.#gen : -1;
    const run = await this.#http('POST', '/v1/runs', {
      body,
      headers: { 'Idempotency-Key': clientRef },
      retry: true,
    });
    this.#adopt(run, readyOn);
    return run;
  }

  /**
   * Cancel a run; resolves with the run object. A run that had already finished is a
   * `conflict` — unless an earlier attempt of this call was lost on the way, then the run as
   * it now is (the lost attempt may have been the one that cancelled it).
   */
  async cancelRun(runId) {
    this.#assertOpen();
    const path = `/v1/runs/${runPath(runId)}`;
    return this.#http('POST', `${path}/cancel`, {
      retry: true,
      replayed: () => this.#http('GET', path, { retry: true }),
    });
  }

  /**
   * Answer the run's open input request (contract §9); resolves with the run object. A value
   * that fails the request's schema is a `validation_error` with `details`; a run that is not
   * waiting for `requestId` is a `conflict` (after a lost attempt: the run as it now is).
   */
  async sendInput(runId, requestId, value) {
    this.#assertOpen();
    if (typeof requestId !== 'string' || !requestId)
      throw new TypeError('sendInput(runId, requestId, value): requestId is a string');
    const path = `/v1/runs/${runPath(runId)}`;
    return this.#http('POST', `${path}/input`, {
      body: { request_id: requestId, value: value === undefined ? null : value },
      retry: true,
      replayed: () => this.#http('GET', path, { retry: true }),
    });
  }

  /**
   * Deliver a run's events after seq `after` to the listeners, as if it had started here: for
   * a page that learnt of a run some other way (say, `GET /v1/runs` after a reload). A run the
   * client already follows is left as it is.
   */
  resume(runId, { after = 0 } = {}) {
    this.#assertOpen();
    runPath(runId);
    if (!Number.isInteger(after) || after < 0)
      throw new TypeError('resume(runId, {after}): after is a whole number >= 0');
    if (this.#runs.has(runId)) return;
    const run = this.#track(runId);
    run.last = after;
    this.#resumeRun(run);
  }

  /**
   * One run's events as Server-Sent Events over HTTP, an async iterable: events after `after`
   * in seq order, each once; it reconnects with `Last-Event-ID` after a drop and ends after the
   * terminal event. `signal` (an AbortSignal) or leaving the loop stops it. The iterable's
   * `reconnects` counts the drops it recovered from. Independent of the socket.
   */
  stream(runId, { after = 0, signal } = {}) {
    this.#assertOpen();
    runPath(runId);
    if (!Number.isInteger(after) || after < 0)
      throw new TypeError('stream(runId, {after}): after is a whole number >= 0');
    const state = { last: after, reconnects: 0, runId, run: null, start: null };
    return new RunStream(state, () => this.#streamEvents(state, signal));
  }

  /**
   * Start a run and read its events over HTTP, in one request (`POST /v1/runs/stream`, whose
   * first message is the run object): resolves, once the run exists, with a stream like that of
   * `stream()` whose `run` is the run object. Until the run object has arrived a retry repeats
   * the request with the same `clientRef` (the server answers it with the same run); after, the
   * stream resumes with `Last-Event-ID`. The socket's listeners get the run's events too.
   */
  async startAndStream(agent, input, options = {}) {
    this.#assertOpen();
    const { signal, ...startOptions } = options ?? {};
    const start = startBody(agent, input, startOptions);
    const readyOn = this.#readyGen === this.#gen ? this.#gen : -1;
    const state = { last: 0, reconnects: 0, runId: null, run: null, start };
    const events = this.#streamEvents(state, signal);
    const first = await events.next(); // the run object, before any event
    if (first.done || first.value !== RUN_KNOWN) throw new CorralError('http_error', 'no run object came');
    this.#adopt(state.run, readyOn);
    return new RunStream(state, () => events);
  }

  /**
   * An HTTP request to the API as this client's user: resolves with the JSON answer (null for
   * an empty one) or rejects with a `CorralError`. GET and DELETE, and a POST that carries an
   * `Idempotency-Key` header, are retried across dropped connections.
   */
  async request(method, path, { body, headers = {}, signal } = {}) {
    this.#assertOpen();
    if (typeof path !== 'string' || !path.startsWith('/'))
      throw new TypeError('request(method, path): path starts with "/", like "/v1/agents"');
    const verb = String(method).toUpperCase();
    const retry =
      verb === 'GET' ||
      verb === 'DELETE' ||
      Object.keys(headers).some((h) => h.toLowerCase() === 'idempotency-key');
    return this.#http(verb, path, { body, headers, signal, retry });
  }

  /**
   * Stop: close the socket, stop reconnecting, abort requests and streams in flight (they
   * reject with a `closed` CorralError). Idempotent.
   */
  close() {
    if (!this.#closed) this.#shutdown(null);
  }

  // -- the socket ------------------------------------------------------------------------------

  async #connect() {
    this.#reconnectTimer = null;
    if (this.#closed) return;
    const gen = ++this.#gen;
    this.#serverError = null;
    let token;
    try {
      token = await this.#currentToken();
    } catch (err) {
      if (gen !== this.#gen || this.#closed) return;
      this.#report(err);
      this.#retry({ reason: 'no token', error: err });
      return;
    }
    if (gen !== this.#gen || this.#closed) return;
    let ws;
    try {
      ws = new this.#WebSocket(this.#wsUrl);
    } catch (err) {
      this.#report(err);
      this.#retry({ reason: String(err?.message ?? err), error: err });
      return;
    }
    this.#ws = ws;
    const current = () => gen === this.#gen && !this.#closed;
    ws.onopen = () => {
      // The token goes in the first message, never in the URL (which servers and proxies log).
      // Signed in by cookies, the server knows the user from the upgrade and answers `ready`.
      if (current() && token !== null) ws.send(JSON.stringify({ type: 'auth', token }));
    };
    ws.onmessage = (message) => {
      if (current()) this.#onMessage(gen, message.data);
    };
    ws.onclose = (close) => {
      if (current()) this.#lost(close.code, close.reason);
    };
    // An error means the connection failed (code 1006 by the standard). Browsers fire close
    // after it, but Node 20's WebSocket fires only the error when the handshake fails, so the
    // error alone ends this socket; a close that follows is ignored.
    ws.onerror = () => {
      if (current()) this.#lost(1006, 'the connection failed');
    };
    this.#authTimer = setTimeout(() => {
      if (current() && this.#readyGen !== gen) this.#lost(4000, 'the server did not answer in time');
    }, this.#o.authTimeoutMs);
  }

  #onMessage(gen, data) {
    this.#lastReceived = Date.now();
    this.#pingSent = false;
    let message;
    try {
      message = JSON.parse(typeof data === 'string' ? data : new TextDecoder().decode(data));
    } catch {
      return; // not JSON: nothing of ours
    }
    if (message === null || typeof message !== 'object') return;
    switch (message.type) {
      case 'ready':
        this.#onReady(gen, message);
        return;
      case 'pong':
        return;
      case 'run_accepted':
        this.#onAccepted(message);
        return;
      case 'error':
        this.#onServerError(message);
        return;
      default:
        if (typeof message.run_id === 'string' && Number.isInteger(message.seq) && message.seq >= 1) {
          this.#ingest(message);
        }
    }
  }

  #onReady(gen, message) {
    clearTimeout(this.#authTimer);
    this.#readyGen = gen;
    this.#everReady = true;
    this.#attempt = 0;
    if (typeof message.user_id === 'string') this.#userId = message.user_id;
    clearInterval(this.#pingTimer);
    const every = Math.max(500, Math.min(this.#o.pingIntervalMs, this.#o.pongTimeoutMs) / 2);
    this.#pingTimer = setInterval(() => this.#tick(), every);
    for (const run of this.#runs.values()) {
      if (!run.done) this.#resumeRun(run);
    }
    for (const start of this.#starts.values()) this.#send(start.message);
    this.#setStatus('open', { userId: this.#userId });
  }

  /** A socket that stays silent is dead (a half-open TCP connection): ping, then give up on it. */
  #tick() {
    const idle = Date.now() - this.#lastReceived;
    if (idle >= this.#o.pingIntervalMs + this.#o.pongTimeoutMs) {
      this.#lost(4000, 'no answer to ping');
    } else if (idle >= this.#o.pingIntervalMs && !this.#pingSent) {
      this.#pingSent = this.#send({ type: 'ping' });
    }
  }

  #onAccepted(message) {
    const start = this.#starts.get(message.client_ref);
    if (!start) return;
    this.#starts.delete(message.client_ref);
    const run = message.run;
    if (run && typeof run.run_id === 'string') {
      const tracked = this.#track(run.run_id);
      // A start sent again is answered with the first run, which may have emitted events
      // while no socket was open: fetch what this socket has not seen.
      if (Number.isInteger(run.last_seq) && run.last_seq > tracked.last) this.#resumeRun(tracked);
    }
    start.resolve(run);
  }

  #onServerError(message) {
    const ref = typeof message.client_ref === 'string' ? message.client_ref : null;
    const error = new CorralError(
      typeof message.code === 'string' ? message.code : 'unavailable',
      typeof message.message === 'string' ? message.message : 'the server reported an error',
      { details: message.details ?? null, clientRef: ref },
    );
    const start = ref === null ? undefined : this.#starts.get(ref);
    if (start) {
      this.#starts.delete(ref);
      start.reject(error);
      return;
    }
    this.#serverError = error;
    // Before `ready` the server is refusing the socket; the close that follows acts on it.
    if (this.#readyGen === this.#gen) this.#report(error);
  }

  /** The socket is gone (closed by either side, or given up on): reconnect unless refused. */
  #lost(code, reason) {
    const refusal = this.#serverError;
    this.#detach();
    if (this.#closed) return;
    if (code === 1008 && refusal?.code === 'unauthorized' && !this.#getToken) {
      // A fixed token (or cookie) the server refuses will not get better by retrying.
      const advice =
        this.#token === null
          ? 'sign in again, then make a new client'
          : 'make a new client with a valid token, or pass getToken';
      this.#shutdown(
        new CorralError('unauthorized', `the server refused the sign-in (${refusal.message}); ${advice}`, {
          status: 401,
        }),
      );
      return;
    }
    // 1008 (token expired or refused): the next connect asks getToken for a fresh one.
    // 1013 (this client read too slowly), 1001 (server restarting), 1006 (network): resume.
    this.#retry({ code, reason, error: refusal });
  }

  #retry(info) {
    const delayMs = backoff(this.#attempt, this.#o);
    this.#attempt += 1;
    this.#setStatus(this.#everReady ? 'reconnecting' : 'connecting', {
      ...info,
      attempt: this.#attempt,
      delayMs,
    });
    if (this.#closed) return; // a status listener closed the client
    clearTimeout(this.#reconnectTimer);
    this.#reconnectTimer = setTimeout(() => this.#connect(), delayMs);
  }

  /** Forget the current socket: its callbacks are ignored from now on. */
  #detach() {
    const ws = this.#ws;
    this.#ws = null;
    this.#gen += 1;
    clearTimeout(this.#authTimer);
    clearInterval(this.#pingTimer);
    this.#pingTimer = null;
    if (ws) {
      ws.onopen = null;
      ws.onmessage = null;
      ws.onclose = null;
      ws.onerror = () => {}; // the `ws` package throws on an 'error' nobody listens to
      try {
        ws.close(1000);
      } catch {
        // already closing
      }
    }
  }

  #send(message) {
    const ws = this.#ws;
    if (!ws || ws.readyState !== OPEN || this.#readyGen !== this.#gen) return false;
    try {
      ws.send(JSON.stringify(message));
      return true;
    } catch {
      return false;
    }
  }

  #startOnSocket(message) {
    const ref = message.client_ref;
    const pending = this.#starts.get(ref);
    if (pending) return pending.promise;
    const start = { message };
    start.promise = new Promise((resolve, reject) => {
      start.resolve = resolve;
      start.reject = reject;
    });
    this.#starts.set(ref, start);
    this.#send(message); // if the socket dropped meanwhile, `ready` of the next one sends it
    return start.promise;
  }

  // -- delivery ----------------------------------------------------------------------------

  #track(runId) {
    let run = this.#runs.get(runId);
    if (!run) {
      run = { id: runId, last: 0, held: new Map(), done: false, resumedOn: -1 };
      this.#runs.set(runId, run);
    }
    return run;
  }

  /** A run started over HTTP: follow it, and fetch what the socket may have missed of it. */
  #adopt(runObject, readyOn) {
    if (!runObject || typeof runObject.run_id !== 'string') return;
    const known = this.#runs.has(runObject.run_id);
    const run = this.#track(runObject.run_id);
    if (!known && readyOn !== this.#gen) this.#resumeRun(run);
  }

  /** Ask for the run's events after the last one delivered, once per socket. */
  #resumeRun(run) {
    if (run.done || run.resumedOn === this.#gen) return;
    if (this.#send({ type: 'resume', run_id: run.id, after: run.last })) run.resumedOn = this.#gen;
  }

  #ingest(event) {
    const run = this.#track(event.run_id);
    if (run.done || event.seq <= run.last) return; // a duplicate: resume overlap or replay
    if (event.seq > run.last + 1) {
      // A gap (this socket joined mid-run, or missed some): hold it, fetch what is missing.
      if (run.held.size < HELD_MAX) run.held.set(event.seq, event);
      this.#resumeRun(run);
      return;
    }
    this.#deliver(run, event);
    for (let next = run.held.get(run.last + 1); next && !run.done; next = run.held.get(run.last + 1)) {
      run.held.delete(next.seq);
      this.#deliver(run, next);
    }
    // Held events that arrived again in the replay were delivered from there.
    for (const seq of run.held.keys()) if (seq <= run.last) run.held.delete(seq);
    if (!run.held.size) run.resumedOn = -1; // caught up: a later gap may ask again
  }

  #deliver(run, event) {
    run.last = event.seq;
    if (TERMINAL.has(event.type)) {
      run.done = true;
      run.held.clear();
      this.#finished.push(run.id);
      if (this.#finished.length > FINISHED_KEPT) this.#runs.delete(this.#finished.shift());
    }
    this.#emit(event.type, event);
    this.#emit('*', event);
  }

  #emit(type, event) {
    const set = this.#handlers.get(type);
    if (!set) return;
    for (const handler of [...set]) {
      try {
        handler(event);
      } catch (err) {
        this.#report(err); // one listener's bug must not stop delivery to the others
      }
    }
  }

  #setStatus(status, info) {
    this.#status = status;
    for (const handler of [...this.#statusHandlers]) {
      try {
        handler(status, info);
      } catch (err) {
        this.#report(err);
      }
    }
    if (status === 'open' || status === 'closed') {
      const waiters = [...this.#waiters];
      this.#waiters.clear();
      for (const w of waiters) {
        if (status === 'open') w.resolve();
        else w.reject(this.#closeError ?? closedError());
      }
    }
  }

  #report(err) {
    try {
      this.#onError(err);
    } catch {
      // the error reporter itself failed; nothing better to do
    }
  }

  #assertOpen() {
    if (this.#closed) throw this.#closeError ?? closedError();
  }

  #shutdown(error) {
    this.#closed = true;
    this.#closeError = error;
    clearTimeout(this.#reconnectTimer);
    this.#reconnectTimer = null;
    this.#detach();
    const reason = error ?? closedError();
    for (const controller of this.#active) controller.abort(reason);
    this.#active.clear();
    for (const start of this.#starts.values()) start.reject(reason);
    this.#starts.clear();
    this.#setStatus('closed', error ? { error } : {});
  }

  // -- HTTP --------------------------------------------------------------------------------

  /** The token to send now; null when the browser's cookies sign in (`cookies: true`). */
  async #currentToken() {
    if (!this.#getToken) return this.#token;
    let token;
    try {
      token = await this.#getToken();
    } catch (err) {
      throw new CorralError('unauthorized', `getToken() failed: ${err?.message ?? err}`, { cause: err });
    }
    if (typeof token !== 'string' || !token) {
      throw new CorralError(
        'unauthorized',
        'getToken() returned no token: it must return (or resolve to) a non-empty string',
      );
    }
    return token;
  }

  #url(path) {
    return this.#base + path;
  }

  /** A controller aborted by `signal` and by close(); `done()` forgets it. */
  #controller(signal) {
    const controller = new AbortController();
    const onAbort = () => controller.abort(signal.reason);
    if (signal) {
      if (signal.aborted) controller.abort(signal.reason);
      else signal.addEventListener('abort', onAbort, { once: true });
    }
    this.#active.add(controller);
    controller.done = () => {
      this.#active.delete(controller);
      if (signal) signal.removeEventListener('abort', onAbort);
    };
    return controller;
  }

  async #http(method, path, { body, headers = {}, retry = false, signal, replayed } = {}) {
    const controller = this.#controller(signal);
    try {
      let uncertain = false; // an attempt failed on the way: it may have been applied
      let refreshed = false;
      for (let attempt = 1; ; attempt += 1) {
        let response;
        let text;
        try {
          const token = await this.#currentToken();
          const sent = { Accept: 'application/json', ...headers };
          if (token !== null) sent.Authorization = `Bearer ${token}`;
          if (body !== undefined) sent['Content-Type'] = 'application/json';
          response = await this.#fetch(this.#url(path), {
            method,
            headers: sent,
            body: body === undefined ? undefined : JSON.stringify(body),
            signal: controller.signal,
          });
          text = await response.text();
        } catch (err) {
          if (controller.signal.aborted) throw controller.signal.reason ?? err;
          if (err instanceof CorralError) throw err;
          if (!retry || attempt > this.#o.retries) {
            throw new CorralError(
              'network_error',
              `${method} ${path} failed (${err?.message ?? err}); ` +
                'check that the server is reachable and retry',
              { cause: err },
            );
          }
          uncertain = true;
          await sleep(backoff(attempt - 1, this.#o), controller.signal);
          continue;
        }
        const data = parseJson(text);
        if (response.ok) return data;
        const error = errorFromResponse(response, data);
        if (response.status === 409 && uncertain && replayed) return await replayed();
        if (response.status === 401 && this.#getToken && !refreshed) {
          refreshed = true; // one more try with whatever getToken gives now
          continue;
        }
        if (retry && RETRY_STATUSES.has(response.status) && attempt <= this.#o.retries) {
          const wait = error.retryAfter != null ? error.retryAfter * 1000 : backoff(attempt - 1, this.#o);
          await sleep(Math.min(wait, this.#o.maxBackoffMs), controller.signal);
          if (controller.signal.aborted) throw controller.signal.reason;
          continue;
        }
        throw error;
      }
    } finally {
      controller.done();
    }
  }

  async *#streamEvents(state, signal) {
    const outer = this.#controller(signal);
    let failures = 0;
    let refreshed = false;
    try {
      for (;;) {
        if (outer.signal.aborted) throw outer.signal.reason;
        const attempt = this.#controller(outer.signal);
        let watchdog = null;
        // No byte for this long (the server sends a comment every 15 s): the connection is dead.
        const arm = () => {
          clearTimeout(watchdog);
          watchdog = setTimeout(
            () => attempt.abort(new Error('the stream went silent')),
            this.#o.idleTimeoutMs,
          );
        };
        let failure = null;
        let fatal = null;
        try {
          const headers = { Accept: 'text/event-stream' };
          const token = await this.#currentToken();
          if (token !== null) headers.Authorization = `Bearer ${token}`;
          // Until the run is known, (re)send the start; then resume the run's stream.
          const request = { headers, signal: attempt.signal, cache: 'no-store' };
          let path;
          if (state.runId === null) {
            path = '/v1/runs/stream';
            request.method = 'POST';
            request.body = JSON.stringify(state.start.body);
            headers['Content-Type'] = 'application/json';
            headers['Idempotency-Key'] = state.start.clientRef;
          } else {
            path = `/v1/runs/${runPath(state.runId)}/stream`;
            if (state.last > 0) headers['Last-Event-ID'] = String(state.last);
          }
          arm();
          const response = await this.#fetch(this.#url(path), request);
          if (!response.ok) {
            const error = errorFromResponse(response, parseJson(await response.text()));
            if (response.status === 401 && this.#getToken && !refreshed) {
              refreshed = true;
              continue;
            }
            if (RETRY_STATUSES.has(response.status)) failure = error;
            else fatal = error;
          } else {
            refreshed = false;
            for await (const message of readEventStream(response.body, { onChunk: arm })) {
              let event;
              try {
                event = JSON.parse(message.data);
              } catch {
                continue;
              }
              if (message.event === 'run' && event && typeof event.run_id === 'string') {
                const known = state.run !== null;
                state.run = event;
                state.runId = event.run_id;
                if (!known) {
                  clearTimeout(watchdog); // the caller's pace is not the connection's silence
                  yield RUN_KNOWN;
                  arm();
                }
                continue;
              }
              if (!event || !Number.isInteger(event.seq)) continue;
              if (event.seq <= state.last) continue; // already yielded
              if (event.seq !== state.last + 1) break; // never sent by corral; reconnect from last
              state.last = event.seq;
              failures = 0;
              clearTimeout(watchdog); // the consumer's pace is not the connection's silence
              yield event;
              // Aborted or closed while the consumer held the event: the rest may be buffered.
              if (outer.signal.aborted) throw outer.signal.reason;
              if (TERMINAL.has(event.type)) return;
              arm();
            }
            failure = new Error('the stream ended before the run did');
          }
        } catch (err) {
          if (outer.signal.aborted) throw outer.signal.reason;
          if (err instanceof CorralError) fatal = err;
          else failure = err;
        } finally {
          clearTimeout(watchdog);
          attempt.abort();
          attempt.done();
        }
        if (fatal) throw fatal;
        failures += 1;
        if (failures > this.#o.retries) {
          throw new CorralError(
            'network_error',
            `the event stream of run ${state.runId ?? '(starting)'} failed ${failures} times in a row ` +
              `(${failure?.message ?? failure}); check that the server is reachable`,
            { cause: failure },
          );
        }
        state.reconnects += 1;
        await sleep(backoff(failures - 1, this.#o), outer.signal);
      }
    } finally {
      outer.done();
    }
  }
}

/** What `stream()` and `startAndStream()` return: iterate it once with `for await`. */
class RunStream {
  #state;
  #open;
  #used = false;

  constructor(state, open) {
    this.#state = state;
    this.#open = open;
  }

  /** The run's id (for a stream from `startAndStream`, once the run object has arrived). */
  get runId() {
    return this.#state.runId;
  }

  /** The run object, for a stream from `startAndStream`; else null. */
  get run() {
    return this.#state.run;
  }

  /** Dropped connections the stream recovered from so far. */
  get reconnects() {
    return this.#state.reconnects;
  }

  /** The seq of the last event yielded (or the `after` it started from). */
  get lastSeq() {
    return this.#state.last;
  }

  [Symbol.asyncIterator]() {
    if (this.#used) throw new TypeError('a run stream can be iterated once; call stream() again');
    this.#used = true;
    return this.#open(this.#state);
  }
}

// -- helpers -----------------------------------------------------------------------------------

function resolveBase(baseUrl) {
  let url;
  if (baseUrl == null) {
    // Served by corral, this module sits at the app's root: its own URL names the server,
    // mount prefix included.
    if (!/^https?:/.test(import.meta.url)) {
      throw new TypeError(
        'baseUrl is required here, e.g. new CorralClient({baseUrl: "http://127.0.0.1:8000", token})',
      );
    }
    url = new URL('.', import.meta.url);
  } else {
    const page = globalThis.location?.href;
    try {
      url = page ? new URL(String(baseUrl), page) : new URL(String(baseUrl));
    } catch {
      throw new TypeError(
        `baseUrl ${JSON.stringify(String(baseUrl))} is not a URL: give one like "http://127.0.0.1:8000"`,
      );
    }
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    throw new TypeError(`baseUrl must be http: or https:, not ${url.protocol}`);
  }
  return (url.origin + url.pathname).replace(/\/+$/, '');
}

/** The body of a start and its idempotency key (checked; a key is made when none is given). */
function startBody(agent, input, options) {
  if (typeof agent !== 'string' || !agent)
    throw new TypeError('startRun(agent, input): agent is a name from GET /v1/agents');
  const { threadId, clientRef = newClientRef(), multitask, timeoutS } = options ?? {};
  // The server takes a client_ref of up to 128 characters; as an Idempotency-Key header it
  // must also be printable ASCII: this is what both accept.
  if (typeof clientRef !== 'string' || !/^[\x21-\x7e]{1,128}$/.test(clientRef)) {
    throw new TypeError('clientRef is 1-128 printable ASCII characters without spaces');
  }
  const body = { agent, input: input ?? {} };
  if (threadId != null) body.thread_id = threadId;
  if (multitask != null) body.multitask = multitask;
  if (timeoutS != null) body.timeout_s = timeoutS;
  return { body, clientRef };
}

function runPath(runId) {
  if (typeof runId !== 'string' || !runId) throw new TypeError('a run id is a non-empty string');
  return encodeURIComponent(runId);
}

/** Exponential backoff with jitter: between half and all of min·2^attempt, capped. */
function backoff(attempt, o) {
  const cap = Math.min(o.maxBackoffMs, o.minBackoffMs * 2 ** Math.min(attempt, 30));
  return Math.round(cap / 2 + (Math.random() * cap) / 2);
}

/** Resolves after `ms`, or at once when `signal` aborts (the caller checks it). */
function sleep(ms, signal) {
  return new Promise((resolve) => {
    if (signal?.aborted) {
      resolve();
      return;
    }
    const done = () => {
      clearTimeout(timer);
      signal?.removeEventListener('abort', done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal?.addEventListener('abort', done, { once: true });
  });
}

function newClientRef() {
  const c = globalThis.crypto;
  // randomUUID exists only in secure contexts (https, localhost); getRandomValues everywhere.
  if (typeof c?.randomUUID === 'function') return `c-${c.randomUUID()}`;
  const bytes = new Uint8Array(16);
  c.getRandomValues(bytes);
  return `c-${Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('')}`;
}

function utf8Length(text) {
  return new TextEncoder().encode(text).length;
}

function parseJson(text) {
  if (!text) return null;
  try {
    return JSON.parse(text);
  } catch {
    return null;
  }
}

function errorFromResponse(response, data) {
  const body =
    data && typeof data === 'object' && data.error && typeof data.error === 'object' ? data.error : {};
  const code = typeof body.code === 'string' ? body.code : (CODE_OF_STATUS[response.status] ?? 'http_error');
  const message =
    typeof body.message === 'string'
      ? body.message
      : `the server answered ${response.status} ${response.statusText ?? ''}`.trim();
  const after = Number.parseFloat(response.headers.get('retry-after') ?? '');
  return new CorralError(code, message, {
    status: response.status,
    details: Array.isArray(body.details) ? body.details : null,
    retryAfter: Number.isFinite(after) && after >= 0 ? after : null,
  });
}

function closedError() {
  return new CorralError('closed', 'the client was closed; make a new CorralClient to go on');
}
