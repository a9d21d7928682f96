// Type declarations of corral-client.js (contract §3, §4, §5, §11).

/** The event types of contract §4. */
export type EventType =
  | 'agent_started'
  | 'agent_thinking'
  | 'tool_executing'
  | 'tool_completed'
  | 'agent_update'
  | 'input_requested'
  | 'input_received'
  | 'agent_completed'
  | 'agent_error'
  | 'agent_cancelled';

export type TerminalType = 'agent_completed' | 'agent_error' | 'agent_cancelled';

export type JsonValue = null | boolean | number | string | JsonValue[] | { [key: string]: JsonValue };

export interface RunErrorInfo {
  type: string;
  message: string;
}

/** The `data` of each event type. */
export interface EventDataMap {
  agent_started: { agent: string };
  agent_thinking: { text: string; step?: number; total_steps?: number };
  tool_executing: { call_id: string; tool: string; args: { [key: string]: JsonValue } };
  tool_completed: {
    call_id: string;
    tool: string;
    status: 'success' | 'error' | 'timeout';
    result?: JsonValue;
    error?: JsonValue;
    duration_ms: number;
  };
  agent_update: { kind: string; [key: string]: JsonValue };
  input_requested: { request_id: string; prompt: string; schema: { [key: string]: JsonValue } | null };
  input_received: { request_id: string; value: JsonValue };
  agent_completed: { output: JsonValue; duration_ms: number };
  agent_error: { error: RunErrorInfo; duration_ms: number };
  agent_cancelled: { reason: string };
}

/** One event of one run: `seq` starts at 1 and grows by 1; `ts` is UTC with microseconds. */
export interface CorralEvent<T extends string = EventType> {
  type: T;
  run_id: string;
  thread_id: string;
  seq: number;
  ts: string;
  data: T extends keyof EventDataMap ? EventDataMap[T] : { [key: string]: JsonValue };
}

export type AnyCorralEvent = { [T in EventType]: CorralEvent<T> }[EventType];

export type RunStatus = 'queued' | 'running' | 'waiting' | 'succeeded' | 'failed' | 'cancelled' | 'timed_out';

/** The run object of contract §3. */
export interface Run {
  run_id: string;
  thread_id: string;
  agent: string;
  status: RunStatus;
  input: JsonValue;
  output: JsonValue;
  error: RunErrorInfo | null;
  created_at: string;
  started_at: string | null;
  finished_at: string | null;
  last_seq: number;
}

/** The event types that end a run; exactly one of them is each run's last event. */
export declare const TERMINAL_TYPES: readonly TerminalType[];

/** The server's codes (contract §3) and the client's own. */
export type CorralErrorCode =
  | 'unauthorized'
  | 'not_found'
  | 'conflict'
  | 'payload_too_large'
  | 'validation_error'
  | 'rate_limited'
  | 'unavailable'
  | 'forbidden'
  | 'network_error'
  | 'closed'
  | 'http_error'
  | (string & {});

export interface ErrorDetail {
  field: string;
  message: string;
  type: string;
}

export interface CorralErrorOptions {
  status?: number | null;
  details?: ErrorDetail[] | null;
  retryAfter?: number | null;
  clientRef?: string | null;
  cause?: unknown;
}

/** A refusal or failure with its code; `status` is the HTTP status (null over the socket). */
export declare class CorralError extends Error {
  constructor(code: CorralErrorCode, message: string, options?: CorralErrorOptions);
  readonly name: 'CorralError';
  readonly code: CorralErrorCode;
  readonly status: number | null;
  /** For `validation_error`: each bad field. */
  readonly details: ErrorDetail[] | null;
  /** Seconds, from a `Retry-After` header (`rate_limited`, `unavailable`). */
  readonly retryAfter: number | null;
  /** The `client_ref` of the socket start this error answers. */
  readonly clientRef: string | null;
}

/** The constructor of a WebSocket: the browser's, Node 22+'s, or the `ws` package's. */
export interface WebSocketConstructor {
  new (url: string): WebSocketLike;
}

export interface WebSocketLike {
  readonly readyState: number;
  onopen: ((event: unknown) => void) | null;
  onmessage: ((event: { data: unknown }) => void) | null;
  onclose: ((event: { code: number; reason: string }) => void) | null;
  onerror: ((event: unknown) => void) | null;
  send(data: string): void;
  close(code?: number, reason?: string): void;
}

/**
 * How the client signs in: a fixed `token`, a `getToken` asked on every (re)connect and request,
 * or `cookies: true` — the server signs the browser in from its own cookies (an `--auth` hook),
 * and no token is sent at all.
 */
export type TokenSource =
  | { token: string; getToken?: undefined; cookies?: false }
  | { getToken: () => string | Promise<string>; token?: undefined; cookies?: false }
  | { cookies: true; token?: undefined; getToken?: undefined };

export type CorralClientOptions = TokenSource & {
  /** The server, with its mount prefix if any. Default: where this module was served from. */
  baseUrl?: string | URL;
  /** Default: `globalThis.WebSocket` (Node 20 needs `--experimental-websocket`). */
  WebSocket?: WebSocketConstructor;
  /** Default: `globalThis.fetch`. */
  fetch?: typeof fetch;
  /**
   * `"socket"` (default): `start_run` over the open socket, resolved by `run_accepted` and sent
   * again with the same `client_ref` after a reconnect (over HTTP while the socket is down).
   * `"http"`: `POST /v1/runs` with `Idempotency-Key: <clientRef>`, retried across dropped
   * connections. Either way exactly once: the server treats the key as an idempotency key.
   */
  startOver?: 'socket' | 'http';
  /** Gets listener exceptions and server errors that answer no request. Default: console.error. */
  onError?: (error: unknown) => void;
  /** Reconnect and retry backoff: between half and all of min·2^attempt, at most max. */
  minBackoffMs?: number;
  maxBackoffMs?: number;
  /** Attempts after the first for a request (or a stream) that fails on the way. Default 8. */
  retries?: number;
  /** A silent socket is pinged after this long (default 25 s)… */
  pingIntervalMs?: number;
  /** …and given up on (and reconnected) if still silent this much later (default 10 s). */
  pongTimeoutMs?: number;
  /** A socket not signed in this long after it opens is reconnected. Default 15 s. */
  authTimeoutMs?: number;
  /** A stream with no byte for this long is reconnected (the server sends one every 15 s). */
  idleTimeoutMs?: number;
};

export type ConnectionStatus = 'connecting' | 'open' | 'reconnecting' | 'closed';

export interface StatusInfo {
  /** On `open`: the signed-in user. */
  userId?: string | null;
  /** On `connecting` / `reconnecting`: the attempt number and the wait before it. */
  attempt?: number;
  delayMs?: number;
  /** The close code of the socket that was lost (1008 token refused, 1013 too slow, …). */
  code?: number;
  reason?: string;
  /** What the server said before closing, or why the client closed. */
  error?: CorralError | unknown;
}

export interface StartRunOptions {
  threadId?: string;
  /** The idempotency key of this start (1-128 printable ASCII characters); generated when absent. */
  clientRef?: string;
  multitask?: 'enqueue' | 'reject' | 'interrupt';
  timeoutS?: number;
}

export interface StreamOptions {
  /** Yield only events with a greater seq. Default 0. */
  after?: number;
  /** Aborting it ends the iteration with the signal's reason. */
  signal?: AbortSignal;
}

/** A run's events over Server-Sent Events: iterate it once with `for await`. */
export interface RunStream extends AsyncIterable<AnyCorralEvent> {
  readonly runId: string;
  /** The run object, for a stream from `startAndStream`; else null. */
  readonly run: Run | null;
  /** Dropped connections it recovered from so far. */
  readonly reconnects: number;
  /** The seq of the last event yielded (or the `after` it started from). */
  readonly lastSeq: number;
}

export interface RequestOptions {
  body?: unknown;
  headers?: Record<string, string>;
  signal?: AbortSignal;
}

/**
 * A client of one corral server for one user. It connects when made and reconnects on its own
 * until `close()`; listeners get each event of each of the user's runs exactly once, in seq
 * order per run, resumed across reconnects.
 */
export declare class CorralClient {
  constructor(options: CorralClientOptions);

  readonly status: ConnectionStatus;
  /** The user the server signed this client in as; null before the first `ready`. */
  readonly userId: string | null;
  readonly baseUrl: string;

  /** Listen to one event type, or `"*"` for all; returns a function that removes the listener. */
  on<T extends EventType>(type: T, handler: (event: CorralEvent<T>) => void): () => void;
  on(type: '*', handler: (event: AnyCorralEvent) => void): () => void;
  on(type: string, handler: (event: CorralEvent<string>) => void): () => void;

  /** Watch the connection (for an indicator); returns a function that removes the handler. */
  onStatus(handler: (status: ConnectionStatus, info: StatusInfo) => void): () => void;

  /** Resolves when the socket is signed in; rejects if the client closes first. */
  ready(): Promise<void>;

  /** Start a run; resolves with the run object. Rejects with a CorralError the server's code. */
  startRun(agent: string, input?: JsonValue, options?: StartRunOptions): Promise<Run>;

  /** Cancel a run; resolves with the run object (`conflict` if it had already finished). */
  cancelRun(runId: string): Promise<Run>;

  /** Answer the run's open input request (contract §9); resolves with the run object. */
  sendInput(runId: string, requestId: string, value: JsonValue): Promise<Run>;

  /** Deliver a run this client did not start to the listeners, from after seq `after`. */
  resume(runId: string, options?: { after?: number }): void;

  /** One run's events over HTTP (SSE), resumed with Last-Event-ID, ending after the terminal event. */
  stream(runId: string, options?: StreamOptions): RunStream;

  /**
   * Start a run and stream it over HTTP in one request (`POST /v1/runs/stream`); resolves once
   * the run exists, with the stream whose `run` is the run object.
   */
  startAndStream(
    agent: string,
    input?: JsonValue,
    options?: StartRunOptions & { signal?: AbortSignal },
  ): Promise<RunStream>;

  /** Any API request as this client's user; resolves with the JSON answer. */
  request<T = unknown>(method: string, path: string, options?: RequestOptions): Promise<T>;

  /** Close the socket, stop reconnecting, abort what is in flight. Idempotent. */
  close(): void;
}

export interface EventStreamMessage {
  event: string;
  data: string;
  id: string | null;
}

/** The messages of a `text/event-stream` body; breaking out of the loop cancels the body. */
export declare function readEventStream(
  body: ReadableStream<Uint8Array>,
  options?: { onChunk?: () => void },
): AsyncGenerator<EventStreamMessage, void, undefined>;
