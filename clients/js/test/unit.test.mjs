// The parts of the client that need no server: options, errors, the event-stream parser, and
// the package's own files (declarations, package.json).
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { test } from 'node:test';

import * as client from '../corral-client.js';
import { CorralClient, CorralError, TERMINAL_TYPES, readEventStream } from '../corral-client.js';

const here = new URL('..', import.meta.url);

/** A fetch-like body that yields `chunks` (strings) one read at a time. */
function body(chunks) {
  const encoder = new TextEncoder();
  let cancelled = false;
  const stream = new ReadableStream({
    pull(controller) {
      const next = chunks.shift();
      if (next === undefined) controller.close();
      else controller.enqueue(encoder.encode(next));
    },
    cancel() {
      cancelled = true;
    },
  });
  return { stream, cancelled: () => cancelled };
}

async function collect(chunks) {
  const out = [];
  for await (const message of readEventStream(body(chunks).stream)) out.push(message);
  return out;
}

test('readEventStream parses id, event and data, skips comments, keeps the last id', async () => {
  const messages = await collect([
    ': keepalive\n\n',
    'id: 1\nevent: agent_started\ndata: {"seq":1}\n\n',
    'event: agent_thinking\ndata: {"seq":2}\n\n',
  ]);
  assert.deepEqual(messages, [
    { event: 'agent_started', data: '{"seq":1}', id: '1' },
    { event: 'agent_thinking', data: '{"seq":2}', id: '1' },
  ]);
});

test('readEventStream handles CRLF and CR line ends, also split between chunks', async () => {
  const messages = await collect(['id: 7\r', '\nevent: a\r\ndata: x\r', '\r', 'data: y\rdata:z\r\r']);
  assert.deepEqual(messages, [
    { event: 'a', data: 'x', id: '7' },
    { event: 'message', data: 'y\nz', id: '7' },
  ]);
});

test('readEventStream joins multi-line data, splits fields at the first colon only', async () => {
  const messages = await collect(['data: {"a":\n', 'data:  "b: c"}\n', '\n']);
  assert.deepEqual(messages, [{ event: 'message', data: '{"a":\n "b: c"}', id: null }]);
});

test('readEventStream drops an unterminated message at the end of the body', async () => {
  assert.deepEqual(await collect(['data: whole\n\n', 'data: half']), [
    { event: 'message', data: 'whole', id: null },
  ]);
});

test('leaving a readEventStream loop early cancels the body', async () => {
  const b = body(['data: 1\n\n', 'data: 2\n\n', 'data: 3\n\n']);
  for await (const message of readEventStream(b.stream)) {
    assert.equal(message.data, '1');
    break;
  }
  assert.equal(b.cancelled(), true);
});

test('CorralError carries code, message, status, details and the client ref', () => {
  const details = [{ field: 'input.steps', message: 'too big', type: 'less_than_equal' }];
  const err = new CorralError('validation_error', 'the input is not valid', {
    status: 422,
    details,
    clientRef: 'r1',
  });
  assert.ok(err instanceof Error);
  assert.equal(err.name, 'CorralError');
  assert.equal(err.code, 'validation_error');
  assert.equal(err.message, 'the input is not valid');
  assert.equal(err.status, 422);
  assert.deepEqual(err.details, details);
  assert.equal(err.clientRef, 'r1');
  assert.equal(new CorralError('closed', 'x').status, null);
});

test('TERMINAL_TYPES names the three terminal events and cannot be changed', () => {
  assert.deepEqual([...TERMINAL_TYPES].sort(), ['agent_cancelled', 'agent_completed', 'agent_error']);
  assert.ok(Object.isFrozen(TERMINAL_TYPES));
});

test('the constructor refuses options it cannot work with, saying what to pass', () => {
  const WebSocket = class {};
  const cases = [
    [{ baseUrl: 'http://127.0.0.1:1', WebSocket }, /exactly one of `token`/],
    [{ baseUrl: 'http://127.0.0.1:1', token: 't', getToken: () => 't', WebSocket }, /exactly one of `token`/],
    [{ baseUrl: 'http://127.0.0.1:1', token: '', WebSocket }, /non-empty string/],
    [{ baseUrl: 'http://127.0.0.1:1', getToken: 'x', WebSocket }, /must be a function/],
    [{ baseUrl: 'http://127.0.0.1:1', cookies: true, token: 't', WebSocket }, /or `cookies: true` alone/],
    [{ baseUrl: 'http://127.0.0.1:1', cookies: 'yes', WebSocket }, /`cookies` is true or false/],
    [{ baseUrl: 'not a url', token: 't', WebSocket }, /is not a URL/],
    [{ baseUrl: 'ftp://127.0.0.1', token: 't', WebSocket }, /http: or https:/],
    [{ token: 't', WebSocket }, /baseUrl is required/],
    [{ baseUrl: 'http://127.0.0.1:1', token: 't', WebSocket: 42 }, /no WebSocket constructor/],
    [{ baseUrl: 'http://127.0.0.1:1', token: 't', WebSocket, startOver: 'pigeon' }, /startOver/],
    [{ baseUrl: 'http://127.0.0.1:1', token: 't', WebSocket, maxBackoffMs: -1 }, /maxBackoffMs/],
  ];
  for (const [options, message] of cases) {
    assert.throws(() => new CorralClient(options), { name: 'TypeError', message }, JSON.stringify(options));
  }
  assert.throws(() => new CorralClient(null), TypeError);
});

test('every export of the module is declared in index.d.ts', async () => {
  const declarations = await readFile(new URL('index.d.ts', here), 'utf8');
  const names = Object.keys(client);
  assert.deepEqual(names.sort(), ['CorralClient', 'CorralError', 'TERMINAL_TYPES', 'readEventStream']);
  for (const name of names) {
    assert.match(declarations, new RegExp(`export declare (class|function|const) ${name}\\b`), name);
  }
  for (const method of [
    'startRun',
    'cancelRun',
    'sendInput',
    'on',
    'onStatus',
    'ready',
    'resume',
    'stream',
    'startAndStream',
    'request',
    'close',
  ]) {
    assert.equal(typeof CorralClient.prototype[method], 'function', method);
    assert.match(declarations, new RegExp(`\\n\\s+${method}[<(]`), `${method} is declared`);
  }
});

test('package.json names the package corral-client, an ES module for Node 20+ with types', async () => {
  const pkg = JSON.parse(await readFile(new URL('package.json', here), 'utf8'));
  assert.equal(pkg.name, 'corral-client');
  assert.equal(pkg.type, 'module');
  assert.equal(pkg.types, './index.d.ts');
  assert.deepEqual(pkg.exports['.'], { types: './index.d.ts', default: './corral-client.js' });
  assert.equal(pkg.engines.node, '>=20');
  assert.deepEqual(pkg.dependencies ?? {}, {});
  assert.ok(pkg.scripts.test.includes('--test'));
  for (const file of pkg.files) await readFile(new URL(file, here)); // every listed file exists
});

test('with cookies: true no token is sent: no auth message, no Authorization header', async () => {
  // Stand-ins for the browser's socket and fetch, recording what the client sends: a server
  // that signs the browser in from its cookies answers `ready` right after the upgrade.
  const sent = [];
  class CookieSocket {
    constructor(url) {
      this.url = url;
      this.readyState = 0;
      setTimeout(() => {
        this.readyState = 1;
        this.onopen?.({});
        this.onmessage?.({ data: JSON.stringify({ type: 'ready', user_id: 'ann' }) });
      }, 0);
    }
    send(data) {
      sent.push(JSON.parse(data));
    }
    close() {
      this.readyState = 3;
    }
  }
  const requests = [];
  const fetch = async (url, init) => {
    requests.push({ url, headers: init.headers });
    return new Response(JSON.stringify({ user_id: 'ann', roles: [] }), { status: 200 });
  };
  const client = new CorralClient({
    baseUrl: 'http://127.0.0.1:1/agents/',
    cookies: true,
    WebSocket: CookieSocket,
    fetch,
  });
  try {
    await client.ready();
    assert.equal(client.userId, 'ann');
    assert.deepEqual(await client.request('GET', '/v1/me'), { user_id: 'ann', roles: [] });
    assert.deepEqual(sent, [], 'nothing, not even an auth message, went over the socket');
    assert.equal(requests.length, 1);
    assert.equal(requests[0].url, 'http://127.0.0.1:1/agents/v1/me');
    assert.ok(!Object.keys(requests[0].headers).some((h) => h.toLowerCase() === 'authorization'));
  } finally {
    client.close();
  }
});
