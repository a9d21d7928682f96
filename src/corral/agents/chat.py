"""The ``chat`` agent (contract §6): a conversation with a model, continued across a thread.

Each run builds its conversation from scratch — the system prompt, the thread's earlier
exchanges and the new message — so nothing one user says can reach another user's request.
The exchanges live in the thread's state (``ctx.state["chat"]``, at most
``CORRAL_LLM_HISTORY_RUNS`` of them), saved with each successful reply; a thread from before
that (no ``chat`` state yet) is read once from its latest runs instead. The model may call a
few registry tools (``CORRAL_LLM_TOOLS``) for up to ``CORRAL_LLM_MAX_TOOL_ROUNDS`` responses;
then it must answer. The answer streams as ``agent_update`` ``{"kind": "text_delta", "text"}``
events whose texts concatenate exactly to ``output.answer``.
"""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from corral.errors import AgentFailed, ToolCallError, UnknownToolError
from corral.llm import (
    ChatModel,
    Completion,
    LLMError,
    LLMLimitExceeded,
    LLMRateLimited,
    LLMSettings,
    LLMUnavailable,
    ToolCall,
)

if TYPE_CHECKING:
    from corral.core.engine import RunContext
    from corral.core.registry import AgentRegistry

ERROR_TYPE = "llm_error"
STATE_KEY = (
    "chat"  # this agent's part of the thread's state: {"exchanges": [{"user", "assistant"}]}
)
_ARGS_PREVIEW = 120


class ChatInput(BaseModel):
    """Input of ``chat``: one message; the thread's earlier messages are remembered."""

    model_config = ConfigDict(extra="forbid")

    message: str = Field(
        min_length=1,
        max_length=16_000,
        description="What you say to the model. Earlier messages of this thread are sent too.",
    )


def register(
    registry: AgentRegistry, settings: LLMSettings, *, model: ChatModel | None = None
) -> ChatModel:
    """Register the ``chat`` agent, talking to the endpoint in ``settings``.

    The returned :class:`ChatModel` holds one connection pool while an app serves
    ``registry`` (a registry lifespan). Tools are looked up in ``registry`` when a run starts.
    """
    chat_model = model or ChatModel(settings)
    registry.add_lifespan(chat_model.open)

    @registry.agent(
        "chat",
        input_model=ChatInput,
        description=f"Chat with the model {settings.model}; the thread remembers earlier "
        "messages, and the model may use the built-in tools.",
    )
    async def chat(ctx: RunContext, params: ChatInput) -> dict[str, Any]:
        return await Conversation(ctx, chat_model, registry, settings).reply(params.message)

    return chat_model


def _as_messages(exchanges: list[tuple[str, str]]) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []
    for said, answered in exchanges:
        messages.append({"role": "user", "content": said})
        messages.append({"role": "assistant", "content": answered})
    return messages


class AnswerStream:
    """The answer as it grows: ``text_delta`` events that concatenate to :attr:`text`.

    Text arriving within ``interval_s`` of the last event waits for the next piece and goes out
    with it, so a fast model does not cost one stored event per token; the first piece of each
    response goes out at once, and :meth:`flush` sends whatever waits.
    """

    def __init__(self, ctx: RunContext, interval_s: float) -> None:
        self._ctx = ctx
        self._interval_s = interval_s
        self._sent: list[str] = []
        self._pending: list[str] = []
        self._last = float("-inf")
        self._new_response = True

    @property
    def text(self) -> str:
        return "".join(self._sent) + "".join(self._pending)

    def start_response(self) -> None:
        self._new_response = True

    async def add(self, text: str) -> None:
        if self._new_response:
            self._new_response = False
            so_far = self.text
            if so_far and not so_far[-1].isspace():
                text = "\n\n" + text  # text of an earlier response (before a tool call) ends
        self._pending.append(text)
        if asyncio.get_running_loop().time() - self._last >= self._interval_s:
            await self.flush()

    async def flush(self) -> None:
        if not self._pending:
            return
        text = "".join(self._pending)
        self._pending.clear()
        self._sent.append(text)
        self._last = asyncio.get_running_loop().time()
        await self._ctx.update("text_delta", text=text)


class Conversation:
    """One ``chat`` run: made per run, holds only that run's messages."""

    def __init__(
        self, ctx: RunContext, model: ChatModel, registry: AgentRegistry, settings: LLMSettings
    ) -> None:
        self.ctx = ctx
        self.model = model
        self.registry = registry
        self.settings = settings
        self.answer = AnswerStream(ctx, settings.delta_interval_s)
        self.tokens = 0
        self.tool_calls = 0

    async def reply(self, message: str) -> dict[str, Any]:
        """Answer ``message``; raises :class:`AgentFailed` (``llm_error``) when the model fails.

        Cancellation propagates from any await: the model's HTTP response is closed at once and
        a running tool call still gets its ``tool_completed`` event.
        """
        s = self.settings
        deadline = asyncio.get_running_loop().time() + s.model_time_limit_s
        exchanges = await self.exchanges()
        history = _as_messages(exchanges)
        messages: list[dict[str, Any]] = [{"role": "system", "content": s.system_prompt}]
        messages += history
        messages.append({"role": "user", "content": message})
        tools = self.tool_schemas()
        offered = {t["function"]["name"] for t in tools}
        earlier = f" with {len(history) // 2} earlier exchanges of this thread" if history else ""
        completion: Completion | None = None
        for round_ in range(s.max_tool_rounds + 1):
            offer = bool(tools) and round_ < s.max_tool_rounds
            budget = s.max_run_tokens - self.tokens
            if budget <= 0:
                return self._remember(exchanges, message, self._out_of_tokens(completion))
            if round_ == 0:
                await self.ctx.think(f"Asking {s.model}{earlier}.")
            else:
                await self.ctx.think(f"Asking {s.model} again, with the tool results.")
            completion = await self._ask(
                messages,
                tools if offer else None,
                self._tool_choice(round_, offered) if offer else None,
                min(s.max_tokens, budget),
                deadline,
            )
            self.tokens += completion.tokens
            if not (offer and completion.tool_calls):
                return self._remember(exchanges, message, self._output(completion))
            messages.append(
                {
                    "role": "assistant",
                    # "" rather than null: some servers (llama-cpp-python) refuse a null here.
                    "content": completion.content,
                    "tool_calls": [c.as_message_part() for c in completion.tool_calls],
                }
            )
            for call in completion.tool_calls:
                messages.append(await self._run_tool(call, offered))
        raise AssertionError("unreachable: the last round offers no tools")  # pragma: no cover

    async def exchanges(self) -> list[tuple[str, str]]:
        """The thread's latest earlier exchanges (said, answered), oldest first: from the
        thread's state, or — for a thread without ``chat`` state — its latest runs."""
        keep = self.settings.history_runs
        if not keep:
            return []
        saved = self.ctx.state.get(STATE_KEY)
        if isinstance(saved, dict):
            found = [
                (item["user"], item["assistant"])
                for item in saved.get("exchanges", [])
                if isinstance(item, dict)
                and isinstance(item.get("user"), str)
                and isinstance(item.get("assistant"), str)
            ]
            return found[-keep:]
        found = []
        for run in await self.ctx.thread_history(limit=keep):
            if run.get("agent") != "chat" or run.get("status") != "succeeded":
                continue
            given, output = run.get("input"), run.get("output")
            if not (isinstance(given, dict) and isinstance(output, dict)):
                continue
            said, answered = given.get("message"), output.get("answer")
            if isinstance(said, str) and isinstance(answered, str):
                found.append((said, answered))
        return found

    def _remember(
        self, earlier: list[tuple[str, str]], message: str, output: dict[str, Any]
    ) -> dict[str, Any]:
        """Keep this exchange in the thread's state (saved only if the run succeeds): the
        latest ``history_runs`` exchanges, fewer when the state would pass its size limit."""
        keep = self.settings.history_runs
        if not keep:
            return output
        exchanges = [*earlier, (message, str(output["answer"]))][-keep:]
        others = {k: v for k, v in self.ctx.state.items() if k != STATE_KEY}
        while exchanges:
            saved = [{"user": said, "assistant": answered} for said, answered in exchanges]
            try:
                self.ctx.set_state({**others, STATE_KEY: {"exchanges": saved}})
            except ValueError:  # over the state's size limit: forget the oldest exchange
                exchanges = exchanges[1:]
            else:
                break
        return output

    def tool_schemas(self) -> list[dict[str, Any]]:
        """The OpenAI ``tools`` list: the configured tools that the registry has."""
        if self.settings.tool_choice == "none":
            return []
        tools = []
        for name in self.settings.tools:
            try:
                spec = self.registry.get_tool(name)
            except UnknownToolError:
                continue
            tools.append(
                {
                    "type": "function",
                    "function": {
                        "name": spec.name,
                        "description": spec.description,
                        "parameters": spec.parameters_schema(),
                    },
                }
            )
        return tools

    def _tool_choice(self, round_: int, offered: set[str]) -> str | dict[str, Any]:
        choice = self.settings.tool_choice
        if choice in ("auto", "none") or round_ > 0:
            return "auto"  # forcing again after the results would loop until the bound
        if choice == "required":
            return choice
        if choice not in offered:
            raise AgentFailed(
                f"CORRAL_LLM_TOOL_CHOICE names {choice!r}, which is not an offered tool "
                f"(offered: {', '.join(sorted(offered)) or 'none'}); set it to a tool listed in "
                "CORRAL_LLM_TOOLS, or to 'auto'",
                error_type=ERROR_TYPE,
            )
        return {"type": "function", "function": {"name": choice}}

    async def _ask(
        self,
        messages: list[dict[str, Any]],
        tools: list[dict[str, Any]] | None,
        tool_choice: str | dict[str, Any] | None,
        max_tokens: int,
        deadline: float,
    ) -> Completion:
        self.answer.start_response()
        try:
            completion = await self.model.complete(
                messages,
                on_text=self.answer.add,
                tools=tools,
                tool_choice=tool_choice,
                max_tokens=max_tokens,
                deadline=deadline,
                on_retry=self._retrying,
                tracer=self.ctx.tracer,
            )
        except LLMLimitExceeded as exc:
            raise AgentFailed(
                f"{exc.message} of {self.settings.model_time_limit_s:g} s; raise "
                "CORRAL_LLM_MODEL_TIME_LIMIT_S or use a faster model",
                error_type=ERROR_TYPE,
            ) from None
        except LLMError as exc:
            raise AgentFailed(exc.message, error_type=ERROR_TYPE) from None
        await self.answer.flush()
        return completion

    async def _retrying(self, exc: LLMError, wait_s: float, retry: int) -> None:
        if isinstance(exc, LLMRateLimited):
            why = "The model server is busy (HTTP 429)"
        elif isinstance(exc, LLMUnavailable):
            why = "The model server could not be reached or did not answer"
        else:
            why = f"The model server failed (HTTP {exc.status_code or 'error'})"
        await self.ctx.think(
            f"{why}; trying again in {wait_s:.1f} s (retry {retry} of {self.settings.retries})."
        )

    async def _run_tool(self, call: ToolCall, offered: set[str]) -> dict[str, Any]:
        """Run one tool call of the model; the tool message carries the result or the error."""
        result: Any
        try:
            args = json.loads(call.arguments or "{}")
        except ValueError:
            args = ValueError  # marks text that is not JSON (cut off by max_tokens, often)
        if call.name not in offered:
            result = {"error": f"there is no tool named {call.name!r}"}
            await self.ctx.think(f"The model asked for a tool that does not exist: {call.name}.")
        elif not isinstance(args, dict):
            problem = "are not valid JSON" if args is ValueError else "are not a JSON object"
            result = {"error": f"the arguments {problem}"}
            await self.ctx.think(f"The model called {call.name}, but its arguments {problem}.")
        else:
            preview = json.dumps(args, ensure_ascii=False)
            if len(preview) > _ARGS_PREVIEW:
                preview = preview[:_ARGS_PREVIEW] + "…"
            await self.ctx.think(f"Calling {call.name} with {preview}.")
            self.tool_calls += 1
            try:
                result = await self.ctx.tools.call(call.name, **args)
            except ToolCallError as exc:
                result = {"error": exc.message}
                await self.ctx.think(f"{call.name} failed ({exc.message}); telling the model.")
            else:
                await self.ctx.think(f"Reading the result of {call.name}.")
        content = json.dumps(result, ensure_ascii=False, default=str)
        return {"role": "tool", "tool_call_id": call.id, "content": content}

    def _output(self, completion: Completion) -> dict[str, Any]:
        return {
            "answer": self.answer.text,
            "model": completion.model or self.settings.model,
            "finish_reason": completion.finish_reason,
            "tool_calls": self.tool_calls,
            "tokens": self.tokens,
        }

    def _out_of_tokens(self, last: Completion | None) -> dict[str, Any]:
        if last is not None and self.answer.text:
            out = self._output(last)
            out["finish_reason"] = "length"
            return out
        raise AgentFailed(
            f"the run used its limit of {self.settings.max_run_tokens} model tokens before the "
            "model answered; raise CORRAL_LLM_MAX_RUN_TOKENS or lower CORRAL_LLM_MAX_TOOL_ROUNDS",
            error_type=ERROR_TYPE,
        )
