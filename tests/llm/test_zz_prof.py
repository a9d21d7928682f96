import time
from typing import Any
from tests.llm.conftest import answer, chat_registry, llm_settings, run_chat, start_run, stream_events

async def test_prof(start_server: Any, scripted: Any) -> None:
    t0 = time.perf_counter()
    model, url = await scripted(answer(*"abcdefghij"))
    t1 = time.perf_counter()
    server = await start_server(registry=chat_registry(llm_settings(url, max_tokens=3)))
    t2 = time.perf_counter()
    async with server.client("ann") as client:
        run = await start_run(client, "hi", agent="echo")
        t3 = time.perf_counter()
        ev = await stream_events(client, run["run_id"])
        t4 = time.perf_counter()
        run, events = await run_chat(client, "hi")
        t5 = time.perf_counter()
    print("\nscripted %.2f start %.2f post %.2f echo-stream %.2f chat %.2f" % (t1-t0, t2-t1, t3-t2, t4-t3, t5-t4))
    for e in ev: print(e.at, e.event["type"])
