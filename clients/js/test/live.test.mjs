// The client against a real corral server, connected directly (CORRAL_URL): starting runs over
// HTTP and over the socket, refusals, listeners, tokens, resuming, cancelling, streams.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import { CorralClient, CorralError } from '../corral-client.js';
import {
  EXPIRED_TOKEN,
  Recorder,
  SERVER,
  call,
  checkRun,
  devToken,
  eventually,
  needsServer,
  newUser,
  storedEvents,
} from './support.mjs';

const RUN_FIELDS = [
  'agent',
  'created_at',
  'error',
  'finished_at',
  'input',
  'last_seq',
  'output',
  'run_id',
  'started_at',
  'status',
  'thread_id',
];
const TIMEOUT = { timeout: 60000 };

/** A client of a new user, its token, and a recorder of what it delivers; closed after `body`. */
async function withClient(prefix, options, body) {
  const user = newUser(prefix);
  const token = await devToken(user);
  const errors = [];
  const client = new CorralClient({ baseUrl: SERVER, token, onError: (err) => errors.push(err), ...options });
  const recorder = new Recorder(client);
  try {
    return await body({ client, recorder, token, user, errors });
  } finally {
    client.close();
  }
}

describe('against a live server', { skip: needsServer }, () => {
  test(
    'startRun over HTTP resolves with the run object; its events are delivered once, in order',
    TIMEOUT,
    async () => {
      await withClient('http-start', { startOver: 'http' }, async ({ client, recorder, token, user }) => {
        const run = await client.startRun('echo', { message: 'hello', steps: 3 });
        assert.deepEqual(Object.keys(run).sort(), RUN_FIELDS);
        assert.equal(run.agent, 'echo');
        await recorder.until(() => recorder.finished(run.run_id), 'the run to finish');
        const events = recorder.events(run.run_id);
        checkRun(events, run.run_id);
        assert.deepEqual(events, await storedEvents(token, run.run_id));
        assert.equal(client.userId, user);
        assert.equal(client.status, 'open');
      });
    },
  );

  test(
    'startRun goes over the socket by default, resolves on run_accepted; its events follow',
    TIMEOUT,
    async () => {
      const sent = [];
      class RecordingWebSocket extends WebSocket {
        send(data) {
          sent.push(JSON.parse(data).type);
          super.send(data);
        }
      }
      await withClient('ws-start', { WebSocket: RecordingWebSocket }, async ({ client, recorder, token }) => {
        await client.ready();
        const run = await client.startRun(
          'echo',
          { message: 'over the socket', steps: 2 },
          { clientRef: 'ws-ref-1' },
        );
        assert.deepEqual(Object.keys(run).sort(), RUN_FIELDS);
        assert.ok(sent.includes('start_run'), `sent: ${sent}`);
        await recorder.until(() => recorder.finished(run.run_id), 'the run to finish');
        checkRun(recorder.events(run.run_id), run.run_id);
        assert.deepEqual(recorder.events(run.run_id), await storedEvents(token, run.run_id));
      });
    },
  );

  test(
    'a socket start whose socket drops before run_accepted is sent again, same client_ref',
    TIMEOUT,
    async () => {
      const sent = [];
      let dropped = false;
      // The socket drops right after the start leaves: a fault at the transport, not a stand-in
      // for the server (the real server answers on the next socket).
      class DroppingWebSocket extends WebSocket {
        send(data) {
          const message = JSON.parse(data);
          if (message.type !== 'auth') sent.push(message);
          super.send(data);
          if (message.type === 'start_run' && !dropped) {
            dropped = true;
            this.close();
          }
        }
      }
      await withClient(
        'ws-resend',
        { startOver: 'socket', WebSocket: DroppingWebSocket, minBackoffMs: 10 },
        async ({ client, recorder, token }) => {
          await client.ready();
          const run = await client.startRun(
            'echo',
            { message: 'again', steps: 1 },
            { clientRef: 'resent-ref' },
          );
          const starts = sent.filter((m) => m.type === 'start_run');
          assert.equal(starts.length, 2);
          assert.deepEqual(starts[0], starts[1]);
          assert.equal(starts[1].client_ref, 'resent-ref');
          assert.ok(recorder.statuses.some((s) => s.status === 'reconnecting'));
          await recorder.until(() => recorder.finished(run.run_id), 'the run to finish');
          checkRun(recorder.events(run.run_id), run.run_id);
          // Exactly one run: the server treats client_ref as an idempotency key (contract §5).
          assert.deepEqual(
            (await call(token, 'GET', '/v1/runs')).runs.map((r) => r.run_id),
            [run.run_id],
          );
        },
      );
    },
  );

  test(
    'a socket start the server refuses rejects with a CorralError: code, details, client ref',
    TIMEOUT,
    async () => {
      await withClient('ws-refused', { startOver: 'socket' }, async ({ client, errors }) => {
        await client.ready();
        await assert.rejects(client.startRun('no-such-agent', {}, { clientRef: 'bad-agent' }), (err) => {
          assert.ok(err instanceof CorralError);
          assert.equal(err.code, 'not_found');
          assert.equal(err.clientRef, 'bad-agent');
          assert.equal(err.status, null);
          return true;
        });
        await assert.rejects(client.startRun('echo', { message: 'm', steps: 101 }), (err) => {
          assert.equal(err.code, 'validation_error');
          assert.ok(
            err.details.some((d) => d.field.includes('steps')),
            JSON.stringify(err.details),
          );
          return true;
        });
        assert.deepEqual(errors, [], 'refusals that answer a start are not reported as stray errors');
        assert.equal(client.status, 'open', 'the socket stays usable');
      });
    },
  );

  test('an HTTP start the server refuses rejects with the status, code and details', TIMEOUT, async () => {
    await withClient('http-refused', { startOver: 'http' }, async ({ client }) => {
      await assert.rejects(client.startRun('echo', { message: 'm', steps: 0 }), (err) => {
        assert.ok(err instanceof CorralError);
        assert.equal(err.status, 422);
        assert.equal(err.code, 'validation_error');
        assert.ok(
          err.details.some((d) => d.field.includes('steps')),
          JSON.stringify(err.details),
        );
        return true;
      });
      await assert.rejects(client.startRun('no-such-agent', {}), {
        name: 'CorralError',
        code: 'not_found',
        status: 404,
      });
    });
  });

  test('startRun twice with one clientRef starts one run and resolves both with it', TIMEOUT, async () => {
    await withClient('idempotent', {}, async ({ client, recorder, token }) => {
      const input = { message: 'once', steps: 2 };
      const [a, b] = await Promise.all([
        client.startRun('echo', input, { clientRef: 'same-ref' }),
        client.startRun('echo', input, { clientRef: 'same-ref' }),
      ]);
      assert.equal(a.run_id, b.run_id);
      await recorder.until(() => recorder.finished(a.run_id), 'the run to finish');
      const listed = await call(token, 'GET', '/v1/runs');
      assert.deepEqual(
        listed.runs.map((r) => r.run_id),
        [a.run_id],
      );
      assert.deepEqual([...recorder.byRun.keys()], [a.run_id]);
    });
  });

  test(
    'on(type) gets that type only, "*" gets all, and the returned function unsubscribes',
    TIMEOUT,
    async () => {
      await withClient('listeners', {}, async ({ client, recorder }) => {
        const thinking = [];
        const stop = client.on('agent_thinking', (e) => thinking.push(e.seq));
        const first = await client.startRun('echo', { message: 'one', steps: 3 });
        await recorder.until(() => recorder.finished(first.run_id), 'the first run to finish');
        stop();
        const second = await client.startRun('echo', { message: 'two', steps: 3 });
        await recorder.until(() => recorder.finished(second.run_id), 'the second run to finish');
        const expected = recorder
          .events(first.run_id)
          .filter((e) => e.type === 'agent_thinking')
          .map((e) => e.seq);
        assert.equal(expected.length, 3);
        assert.deepEqual(thinking, expected, 'only the first run, only agent_thinking');
      });
    },
  );

  test('a listener that throws is reported to onError and does not stop the others', TIMEOUT, async () => {
    await withClient('throwing', {}, async ({ client, recorder, errors }) => {
      client.on('*', () => {
        throw new Error('a listener bug');
      });
      const run = await client.startRun('echo', { message: 'm', steps: 1 });
      await recorder.until(() => recorder.finished(run.run_id), 'the run to finish');
      checkRun(recorder.events(run.run_id), run.run_id);
      assert.equal(errors.length, recorder.events(run.run_id).length);
      assert.ok(errors.every((e) => e.message === 'a listener bug'));
    });
  });

  test(
    'a client that connects mid-run delivers that run from seq 1: the gap is filled by resume',
    TIMEOUT,
    async () => {
      const user = newUser('mid-run');
      const token = await devToken(user);
      const run = await call(token, 'POST', '/v1/runs', {
        agent: 'echo',
        input: { message: 'long', steps: 40, delay_ms: 25 },
      });
      await eventually(
        async () => (await storedEvents(token, run.run_id)).length >= 5,
        'the run to be under way',
      );
      const client = new CorralClient({ baseUrl: SERVER, token });
      try {
        const recorder = new Recorder(client);
        await recorder.until(() => recorder.finished(run.run_id), 'the run to finish', 30000);
        const events = recorder.events(run.run_id);
        checkRun(events, run.run_id);
        assert.deepEqual(events, await storedEvents(token, run.run_id));
      } finally {
        client.close();
      }
    },
  );

  test('resume(runId) delivers a run that finished before the client connected, once', TIMEOUT, async () => {
    const user = newUser('resume');
    const token = await devToken(user);
    const run = await call(token, 'POST', '/v1/runs', { agent: 'echo', input: { message: 'm', steps: 3 } });
    await eventually(
      async () => (await call(token, 'GET', `/v1/runs/${run.run_id}`)).finished_at,
      'the run to finish',
    );
    const client = new CorralClient({ baseUrl: SERVER, token });
    try {
      const recorder = new Recorder(client);
      await client.ready();
      assert.equal(recorder.all.length, 0, 'a finished run sends nothing live');
      client.resume(run.run_id, { after: 2 });
      await recorder.until(() => recorder.finished(run.run_id), 'the resumed run to finish');
      const stored = await storedEvents(token, run.run_id);
      assert.deepEqual(recorder.events(run.run_id), stored.slice(2));
      client.resume(run.run_id); // known already: nothing more
      const other = await client.startRun('echo', { message: 'later', steps: 1 });
      await recorder.until(() => recorder.finished(other.run_id), 'a later run to finish');
      assert.deepEqual(recorder.events(run.run_id), stored.slice(2));
    } finally {
      client.close();
    }
  });

  test(
    'getToken is asked on every connect; a refused (expired) token is replaced after 1008',
    TIMEOUT,
    async (t) => {
      if (!EXPIRED_TOKEN)
        return t.skip('set CORRAL_TOKEN_EXPIRED to an expired token of user "expired-user"');
      const fresh = await devToken('expired-user');
      const given = [];
      const client = new CorralClient({
        baseUrl: SERVER,
        getToken: async () => {
          given.push(given.length === 0 ? 'expired' : 'fresh');
          return given.length === 1 ? EXPIRED_TOKEN : fresh;
        },
        minBackoffMs: 10,
      });
      try {
        const recorder = new Recorder(client);
        await client.ready();
        assert.deepEqual(given, ['expired', 'fresh']);
        const lost = recorder.statuses.find((s) => s.status === 'connecting');
        assert.equal(lost.info.code, 1008);
        assert.equal(lost.info.error.code, 'unauthorized');
        assert.equal(client.userId, 'expired-user');
        const run = await client.startRun('echo', { message: 'after a fresh token', steps: 1 });
        await recorder.until(() => recorder.finished(run.run_id), 'the run to finish');
        checkRun(recorder.events(run.run_id), run.run_id);
      } finally {
        client.close();
      }
    },
  );

  test(
    'a fixed token the server refuses closes the client with unauthorized, no retry loop',
    TIMEOUT,
    async () => {
      const client = new CorralClient({ baseUrl: SERVER, token: 'not-a-token' });
      const statuses = [];
      client.onStatus((status, info) => statuses.push([status, info.error?.code]));
      await assert.rejects(client.ready(), { name: 'CorralError', code: 'unauthorized' });
      assert.deepEqual(statuses, [['closed', 'unauthorized']]);
      assert.equal(client.status, 'closed');
      await assert.rejects(client.startRun('echo', { message: 'm' }), { code: 'unauthorized' });
    },
  );

  test(
    'cancelRun cancels a running run (agent_cancelled last); cancelling it again is a conflict',
    TIMEOUT,
    async () => {
      await withClient('cancel', {}, async ({ client, recorder }) => {
        const run = await client.startRun('echo', { message: 'slow', steps: 100, delay_ms: 50 });
        await recorder.until(() => recorder.events(run.run_id).length >= 2, 'the run to be under way');
        const cancelled = await client.cancelRun(run.run_id);
        assert.equal(cancelled.run_id, run.run_id);
        await recorder.until(() => recorder.finished(run.run_id), 'the terminal event');
        const events = recorder.events(run.run_id);
        checkRun(events, run.run_id);
        assert.equal(events.at(-1).type, 'agent_cancelled');
        await assert.rejects(client.cancelRun(run.run_id), { code: 'conflict', status: 409 });
      });
    },
  );

  test('sendInput to a run that does not exist is refused with not_found', TIMEOUT, async () => {
    await withClient('input', {}, async ({ client }) => {
      await assert.rejects(client.sendInput('run_does-not-exist', 'req-1', { answer: 42 }), {
        name: 'CorralError',
        code: 'not_found',
        status: 404,
      });
    });
  });

  test(
    'stream() yields the events after `after`, ends after the terminal one; unknown runs are not_found',
    TIMEOUT,
    async () => {
      await withClient('stream', {}, async ({ client, token }) => {
        const run = await client.startRun('echo', { message: 'm', steps: 4, delay_ms: 10 });
        const all = [];
        for await (const event of client.stream(run.run_id)) all.push(event);
        checkRun(all, run.run_id);
        assert.deepEqual(all, await storedEvents(token, run.run_id));
        const tail = [];
        const stream = client.stream(run.run_id, { after: 5 });
        for await (const event of stream) tail.push(event);
        assert.deepEqual(tail, all.slice(5));
        assert.equal(stream.lastSeq, all.length);
        assert.equal(stream.reconnects, 0);
        const unknown = client.stream('run_nope');
        await assert.rejects(
          async () => {
            for await (const _ of unknown) assert.fail('no events of an unknown run');
          },
          { name: 'CorralError', code: 'not_found' },
        );
      });
    },
  );

  test('leaving a stream early, or aborting its signal, stops it', TIMEOUT, async () => {
    await withClient('stream-stop', {}, async ({ client }) => {
      const run = await client.startRun('echo', { message: 'm', steps: 50, delay_ms: 20 });
      for await (const event of client.stream(run.run_id)) {
        assert.equal(event.seq, 1);
        break;
      }
      const controller = new AbortController();
      const seen = [];
      await assert.rejects(
        async () => {
          for await (const event of client.stream(run.run_id, { signal: controller.signal })) {
            seen.push(event.seq);
            if (event.seq === 3) controller.abort();
          }
        },
        { name: 'AbortError' },
      );
      assert.deepEqual(seen, [1, 2, 3]);
      await client.cancelRun(run.run_id); // nothing left running behind the test
    });
  });

  test('startAndStream starts a run and streams it to the end in one request', TIMEOUT, async () => {
    const requests = [];
    const fetchSpy = (url, init) => {
      requests.push(`${init?.method ?? 'GET'} ${new URL(url).pathname}`);
      return fetch(url, init);
    };
    await withClient('start-stream', { fetch: fetchSpy }, async ({ client, token }) => {
      const stream = await client.startAndStream('echo', { message: 'both', steps: 2 });
      assert.equal(stream.run.agent, 'echo');
      assert.equal(stream.runId, stream.run.run_id);
      assert.deepEqual(requests, ['POST /v1/runs/stream']);
      const events = [];
      for await (const event of stream) events.push(event);
      checkRun(events, stream.run.run_id);
      assert.deepEqual(events, await storedEvents(token, stream.run.run_id));
    });
  });

  test('request() calls the API as the client user', TIMEOUT, async () => {
    await withClient('request', {}, async ({ client }) => {
      const agents = await client.request('GET', '/v1/agents');
      assert.ok(agents.some((a) => a.name === 'echo'));
      await assert.rejects(client.request('GET', '/v1/runs/run_nope'), { code: 'not_found', status: 404 });
    });
  });

  test('close() is idempotent, stops the socket, and later calls reject with closed', TIMEOUT, async () => {
    const token = await devToken(newUser('close'));
    const client = new CorralClient({ baseUrl: SERVER, token });
    await client.ready();
    const statuses = [];
    client.onStatus((status) => statuses.push(status));
    client.close();
    client.close();
    assert.deepEqual(statuses, ['closed']);
    assert.equal(client.status, 'closed');
    await assert.rejects(client.startRun('echo', { message: 'm' }), { name: 'CorralError', code: 'closed' });
    await assert.rejects(client.ready(), { code: 'closed' });
    assert.throws(() => client.stream('run_x'), { code: 'closed' });
  });

  test('close() aborts a stream in flight with a closed error', TIMEOUT, async () => {
    const token = await devToken(newUser('close-stream'));
    const client = new CorralClient({ baseUrl: SERVER, token });
    const run = await client.startRun('echo', { message: 'm', steps: 100, delay_ms: 30 });
    await assert.rejects(
      async () => {
        for await (const event of client.stream(run.run_id)) {
          if (event.seq === 2) client.close();
          assert.ok(event.seq <= 2);
        }
      },
      { name: 'CorralError', code: 'closed' },
    );
    await call(token, 'POST', `/v1/runs/${run.run_id}/cancel`); // nothing left running
  });
});
