// The client through a TCP proxy that cuts every connection at a random point (CORRAL_PROXY_URL):
// sockets, starts, cancels and SSE streams all fail mid-way, again and again, and every run's
// events must still arrive exactly once, in order, and only to their own user. What the client
// delivered is compared with what the server stored, read straight from CORRAL_URL.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import { CorralClient } from '../corral-client.js';
import { PROXY, Recorder, call, checkRun, devToken, needsProxy, newUser, storedEvents } from './support.mjs';

const RUNS_PER_USER = 8;
// Each event carries the message twice or so: a run of 20 steps is ~30 KB on the wire, so a
// user's socket carries several times the proxy's largest budget (40 KB) and must be cut mid-run.
const MESSAGE = 'cut me anywhere; '.repeat(12);
const TIMEOUT = { timeout: 90000 };

function proxied(token, extra = {}) {
  return new CorralClient({
    baseUrl: PROXY,
    token,
    minBackoffMs: 50,
    maxBackoffMs: 1000,
    onError: () => {},
    ...extra,
  });
}

describe('through a cutting proxy', { skip: needsProxy }, () => {
  test(
    'two users, many runs: every run once, seq 1..N, started first, one terminal last, nothing foreign',
    TIMEOUT,
    async () => {
      // Alice starts over her socket (the default), Bob over HTTP: both are retried through
      // the cuts with one idempotency key per start.
      const users = await Promise.all(
        [
          ['alice', 'socket'],
          ['bob', 'http'],
        ].map(async ([name, startOver]) => {
          const user = newUser(name);
          const token = await devToken(user);
          const client = proxied(token, { startOver });
          return { user, token, client, recorder: new Recorder(client), runs: [] };
        }),
      );
      try {
        await Promise.all(
          users.map(async (u) => {
            u.runs = await Promise.all(
              Array.from({ length: RUNS_PER_USER }, (_, i) =>
                u.client.startRun('echo', { message: `${u.user} ${i} ${MESSAGE}`, steps: 20, delay_ms: 5 }),
              ),
            );
          }),
        );
        await Promise.all(
          users.map((u) =>
            u.recorder.until(
              () => u.runs.every((r) => u.recorder.finished(r.run_id)),
              `every run of ${u.user} to finish`,
              80000,
            ),
          ),
        );
        const [a, b] = users;
        for (const u of users) {
          const ids = u.runs.map((r) => r.run_id);
          assert.equal(new Set(ids).size, RUNS_PER_USER, `${u.user}: one run per startRun`);
          // Retried starts (cut mid-request or mid-answer) created no extra runs.
          const listed = await call(u.token, 'GET', '/v1/runs?limit=200');
          assert.deepEqual(
            listed.runs.map((r) => r.run_id).sort(),
            [...ids].sort(),
            `${u.user}: runs on the server`,
          );
          // Nothing but its own runs reached the client.
          assert.deepEqual([...u.recorder.byRun.keys()].sort(), [...ids].sort(), `${u.user}: runs delivered`);
          const other = u === a ? b : a;
          assert.ok(
            u.recorder.all.every((e) => !other.runs.some((r) => r.run_id === e.run_id)),
            `${u.user} got an event of ${other.user}`,
          );
          for (const run of u.runs) {
            const events = u.recorder.events(run.run_id);
            checkRun(events, run.run_id);
            assert.ok(events.every((e) => e.thread_id === run.thread_id));
            assert.deepEqual(
              events,
              await storedEvents(u.token, run.run_id),
              `${run.run_id}: delivered = stored`,
            );
          }
          // The socket really was cut while runs were under way, and the client came back.
          const midRun = u.recorder.statuses.filter((s) => s.status === 'reconnecting' && s.unfinished > 0);
          assert.ok(
            midRun.length >= 1,
            `${u.user}: no reconnect while runs were unfinished: ${JSON.stringify(u.recorder.statuses)}`,
          );
        }
      } finally {
        for (const u of users) u.client.close();
      }
    },
  );

  test(
    'cancelRun through the cuts cancels a long run; its last event is agent_cancelled',
    TIMEOUT,
    async () => {
      const token = await devToken(newUser('canceller'));
      const client = proxied(token);
      try {
        const recorder = new Recorder(client);
        const run = await client.startRun('echo', { message: MESSAGE, steps: 100, delay_ms: 40 });
        await recorder.until(() => recorder.events(run.run_id).length >= 4, 'the run to be under way', 30000);
        const answer = await client.cancelRun(run.run_id);
        assert.equal(answer.run_id, run.run_id);
        await recorder.until(() => recorder.finished(run.run_id), 'its terminal event', 30000);
        const events = recorder.events(run.run_id);
        checkRun(events, run.run_id);
        assert.equal(events.at(-1).type, 'agent_cancelled');
        assert.ok(events.length < 3 * 100 + 2, 'cancelled before the end');
        assert.deepEqual(events, await storedEvents(token, run.run_id));
        assert.equal((await call(token, 'GET', `/v1/runs/${run.run_id}`)).status, 'cancelled');
      } finally {
        client.close();
      }
    },
  );

  test(
    'stream() through the cuts yields a long run complete, resuming with Last-Event-ID',
    TIMEOUT,
    async () => {
      const token = await devToken(newUser('streamer'));
      const resumedFrom = []; // the Last-Event-ID of each stream request, null for none
      const fetchAndRecord = (url, init) => {
        if (String(url).endsWith('/stream')) resumedFrom.push(init.headers['Last-Event-ID'] ?? null);
        return fetch(url, init);
      };
      const client = proxied(token, { fetch: fetchAndRecord });
      try {
        const run = await client.startRun('echo', { message: MESSAGE, steps: 60, delay_ms: 2 });
        const stream = client.stream(run.run_id);
        const events = [];
        for await (const event of stream) events.push(event);
        checkRun(events, run.run_id);
        assert.deepEqual(events, await storedEvents(token, run.run_id));
        // ~90 KB of events through budgets of at most 40 KB: the stream was cut and resumed,
        // each time from the last event it had yielded.
        assert.ok(stream.reconnects >= 1, `reconnects: ${stream.reconnects}`);
        assert.equal(resumedFrom.length, stream.reconnects + 1);
        assert.equal(resumedFrom[0], null);
        const seqs = resumedFrom.filter((id) => id !== null).map(Number);
        assert.ok(seqs.length >= 1, `never resumed with Last-Event-ID: ${resumedFrom}`);
        assert.deepEqual(
          seqs,
          [...seqs].sort((a, b) => a - b),
          `resumed backwards: ${resumedFrom}`,
        );
        assert.ok(
          seqs.every((seq) => seq >= 1 && seq < events.length),
          `${resumedFrom}`,
        );
      } finally {
        client.close();
      }
    },
  );

  test('startAndStream through the cuts starts one run and streams it complete', TIMEOUT, async () => {
    const token = await devToken(newUser('start-streamer'));
    const client = proxied(token);
    try {
      const stream = await client.startAndStream('echo', { message: MESSAGE, steps: 20, delay_ms: 2 });
      const events = [];
      for await (const event of stream) events.push(event);
      checkRun(events, stream.run.run_id);
      assert.deepEqual(events, await storedEvents(token, stream.run.run_id));
      const listed = await call(token, 'GET', '/v1/runs');
      assert.deepEqual(
        listed.runs.map((r) => r.run_id),
        [stream.run.run_id],
      );
    } finally {
      client.close();
    }
  });
});
