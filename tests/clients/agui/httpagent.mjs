// @ag-ui/client's HttpAgent against a corral server, as a frontend would use it: the events it
// reports to a subscriber, what runAgent resolves with, and the messages it ends with.
// Run by tests/clients/test_agui_httpagent.py with CORRAL_URL (a server whose chat agent talks
// to a scripted model) and CORRAL_TOKEN; prints one JSON document.
import { HttpAgent } from '@ag-ui/client';

const token = process.env.CORRAL_TOKEN;

function agentFor(base, name, threadId) {
  return new HttpAgent({
    url: `${base}/v1/ag-ui/${name}`,
    headers: { Authorization: `Bearer ${token}` },
    threadId,
  });
}

async function run(agent, text, parameters = {}) {
  if (text !== null) agent.addMessage({ id: `user-${agent.messages.length}`, role: 'user', content: text });
  const events = [];
  let error = null;
  let result = null;
  try {
    result = await agent.runAgent(parameters, { onEvent: ({ event }) => events.push(event) });
  } catch (err) {
    error = String(err?.message ?? err);
  }
  return { events, result, error, messages: structuredClone(agent.messages) };
}

const base = process.env.CORRAL_URL;
const out = {};
out.echo = await run(agentFor(base, 'echo', 'echo-thread'), null, {
  forwardedProps: { input: { message: 'from HttpAgent', steps: 2 } },
});
const research = agentFor(base, 'research', 'research-thread');
out.research1 = await run(research, 'What is 12 * 7?');
out.research2 = await run(research, 'And what is 6 * 7?');
out.failed = await run(agentFor(base, 'echo', 'fail-thread'), null, {
  forwardedProps: { input: { message: 'm', fail: true } },
});
const chat = agentFor(base, 'chat', 'chat-thread');
out.chat1 = await run(chat, 'hi, I am Ada');
out.chat2 = await run(chat, 'what did I say?');
process.stdout.write(JSON.stringify(out));
