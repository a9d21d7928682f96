"""``corral-client.js`` in headless Chromium, loaded from the server as a page would load it.

The module finds the server from its own URL (no ``baseUrl``), signs in with the first-message
token, starts a run, and delivers its events once each; a socket closed mid-run is reopened and
the run resumed without a duplicate or a gap; ``stream()`` reads the same run over SSE.
"""

from __future__ import annotations

from typing import Any

import pytest

pytestmark = [
    pytest.mark.browser,
    pytest.mark.parametrize("database_url", ["sqlite"], indirect=True),
]

# Runs in the page: import the served module, run `echo`, close the socket (the page's
# window.__corral probe holds every WebSocket it opened) after `drop_after` events, and report
# what the client delivered and what the stream read.
SCENARIO = """
async ({ token, dropAfter }) => {
  const { CorralClient } = await import('/corral-client.js');
  const client = new CorralClient({ token });
  const delivered = [];
  const statuses = [];
  client.onStatus((status) => statuses.push(status));
  const finished = new Promise((resolve) => client.on('*', (event) => {
    delivered.push([event.run_id, event.seq, event.type]);
    if (delivered.length === dropAfter) window.__corral.sockets.at(-1).close();
    if (['agent_completed', 'agent_error', 'agent_cancelled'].includes(event.type)) resolve();
  }));
  await client.ready();
  const run = await client.startRun('echo', { message: 'from a browser', steps: 12, delay_ms: 30 });
  await finished;
  const streamed = [];
  for await (const event of client.stream(run.run_id)) streamed.push(event.seq);
  const result = {
    baseUrl: client.baseUrl, userId: client.userId, runId: run.run_id,
    delivered, statuses, streamed, sockets: window.__corral.sockets.length,
  };
  client.close();
  return result;
}
"""


async def test_served_module_runs_and_resumes_in_a_browser(server: Any, new_page: Any) -> None:
    """No baseUrl needed; a socket closed mid-run is reopened and the run delivered whole, once."""
    page = await new_page()
    await page.goto(server.url + "/")
    result = await page.evaluate(SCENARIO, {"token": server.token("browser-user"), "dropAfter": 5})
    assert result["baseUrl"] == server.url
    assert result["userId"] == "browser-user"
    run_id = result["runId"]
    delivered = result["delivered"]
    assert {r for r, _seq, _type in delivered} == {run_id}
    seqs = [seq for _r, seq, _type in delivered]
    assert seqs == list(range(1, len(seqs) + 1)), seqs
    assert len(seqs) == 1 + 3 * 12 + 1
    assert delivered[0][2] == "agent_started"
    assert delivered[-1][2] == "agent_completed"
    assert result["sockets"] >= 2, "the closed socket was replaced"
    assert result["statuses"][:3] == ["open", "reconnecting", "open"]
    assert result["streamed"] == seqs
