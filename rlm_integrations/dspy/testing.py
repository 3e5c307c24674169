r"""`ScriptedDSPyLM`: a `dspy.LM` that plays back scripted replies, for tests and benchmarks.

DSPy ships `dspy.utils.DummyLM`, which formats dictionaries as adapter output. This fake
is lower level: it returns exactly the text it is given (so it can also answer raw calls
such as `llm_query` or GEPA's reflection prompt), it can route replies with a function of
the messages, it can sleep asynchronously to simulate a provider (so concurrent `acall`s
really overlap), and it reports token usage estimated from the text.

```python
lm = ScriptedDSPyLM([chat_reply(reasoning="look", code="print(len(context))"),
                     chat_reply(reasoning="done", code="FINAL(answer='42')")])
dspy.configure(lm=lm)
```
"""

from __future__ import annotations

import asyncio
import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import dspy
from dspy.lm15 import Message, Request, Response, TextPart, Usage, response_to_events

from rlm_integrations.errors import ConfigError
from rlm_integrations.lm.tokens import estimate_tokens

__all__ = ["ScriptedDSPyLM", "chat_reply", "request_text", "rlm_replies", "signature_reply"]

ScriptedReply = str | BaseException
ReplyFunction = Callable[[list[dict[str, str]]], str]
"""A function of the request's messages (dicts with ``role`` and ``content``) returning the reply text."""


def chat_reply(**fields: Any) -> str:
    """A reply in `dspy.ChatAdapter`'s format: ``[[ ## name ## ]]`` sections, then ``completed``."""
    parts = [f"[[ ## {name} ## ]]\n{value}" for name, value in fields.items()]
    parts.append("[[ ## completed ## ]]")
    return "\n\n".join(parts)


def request_text(messages: Sequence[dict[str, str]]) -> str:
    """Every message's content joined: handy for routing replies on what a request contains."""
    return "\n\n".join(message.get("content", "") for message in messages)


_OUTPUT_NAME = re.compile(r"^\d+\. `(\w+)`", re.MULTILINE)


def signature_reply(text: str | Callable[[str], str]) -> ReplyFunction:
    """A reply function that answers any `dspy.ChatAdapter` request: every output field gets `text`.

    The output fields are read from the request's system message. Handy for the side
    requests of optimizers (MIPROv2's instruction proposer, dataset summaries).

    Args:
        text: the value of every field, or a function of the field's name returning it.
    """

    def reply(messages: list[dict[str, str]]) -> str:
        system = messages[0]["content"] if messages and messages[0]["role"] == "system" else ""
        section = system.split("Your output fields are:", 1)[-1].split("All interactions", 1)[0]
        names = dict.fromkeys(_OUTPUT_NAME.findall(section))
        return chat_reply(**{name: text(name) if callable(text) else text for name in names})

    return reply


_TURN = re.compile(r"\[\[ ## iteration ## \]\]\s*Turn (\d+) of")


def rlm_replies(
    turns: Sequence[str] | Callable[[str, int], str],
    *,
    sub: str | Callable[[str], str] = "sub-model reply",
    extract: str | Callable[[str], str] | None = None,
) -> ReplyFunction:
    """A reply function that plays the parts of an `rlm_integrations.dspy.RLM` run.

    Args:
        turns: the code of each root turn, in order (the last one repeats), or a function
            of (the request's last user message, the turn number) returning the code.
        sub: the reply to sub-calls (`llm_query`, child runs), or a function of the prompt.
        extract: the reply to the `extract` predictor (formatted with `chat_reply`), or a
            function of the request; by default every output gets the text "extracted".

    Requests are told apart by their inputs: `generate_code` requests carry a turn number,
    `extract` requests a REPL history without one, and anything else is a sub-call.
    """

    def reply(messages: list[dict[str, str]]) -> str:
        last = next((m["content"] for m in reversed(messages) if m["role"] == "user"), "")
        match = _TURN.search(last)
        if match:
            number = int(match.group(1))
            code = turns(last, number) if callable(turns) else turns[min(number, len(turns)) - 1]
            return chat_reply(reasoning=f"turn {number}", code=code)
        if "[[ ## repl_history ## ]]" in last:
            if callable(extract):
                return extract(last)
            if extract is not None:
                return extract
            names = re.findall(r"\[\[ ## (\w+) ## \]\]", messages[0]["content"] if messages else "")
            outputs = [n for n in dict.fromkeys(names) if n not in ("variables_info", "repl_history", "completed")]
            return chat_reply(**dict.fromkeys(outputs, "extracted"))
        return sub(last) if callable(sub) else sub

    return reply


class _Script:
    """The replies and the record of calls, shared by the sync and async engines."""

    def __init__(self, replies: Sequence[ScriptedReply] | ReplyFunction, model: str, latency_s: float) -> None:
        self.model = model
        self.latency_s = latency_s
        self.calls: list[list[dict[str, str]]] = []
        self._function: ReplyFunction | None = None
        self._replies: tuple[ScriptedReply, ...] = ()
        if callable(replies):
            self._function = replies
        else:
            if isinstance(replies, str | bytes):
                raise ConfigError("ScriptedDSPyLM replies must be a sequence of strings or a function")
            self._replies = tuple(replies)
        self._next = 0
        self._lock = threading.Lock()

    @property
    def remaining(self) -> int | None:
        return None if self._function is not None else len(self._replies) - self._next

    def reply(self, request: Request) -> Response:
        messages = _messages_of(request)
        with self._lock:
            index = self._next
            self._next += 1
            self.calls.append(messages)
        if self._function is not None:
            text = self._function(messages)
        elif index < len(self._replies):
            item = self._replies[index]
            if isinstance(item, BaseException):
                raise item
            text = item
        else:
            text = f"ScriptedDSPyLM ran out of replies ({len(self._replies)} scripted, this was call {index + 1})"
        prompt_tokens = sum(estimate_tokens(m["content"]) for m in messages)
        usage = Usage(
            input_tokens=prompt_tokens,
            output_tokens=estimate_tokens(text),
            total_tokens=prompt_tokens + estimate_tokens(text),
        )
        return Response(
            id=None, model=self.model, message=Message.assistant([TextPart(text)]), finish_reason="stop", usage=usage
        )


class _SyncEngine:
    def __init__(self, script: _Script) -> None:
        self.script = script

    def complete(self, request: Request) -> Response:
        if self.script.latency_s:
            time.sleep(self.script.latency_s)
        return self.script.reply(request)

    def stream(self, request: Request) -> Iterator[Any]:
        return iter(response_to_events(self.complete(request)))

    def close(self) -> None:
        return None


class _AsyncEngine:
    def __init__(self, script: _Script) -> None:
        self.script = script

    async def complete(self, request: Request) -> Response:
        if self.script.latency_s:
            await asyncio.sleep(self.script.latency_s)
        return self.script.reply(request)

    async def stream(self, request: Request) -> Any:
        for event in response_to_events(await self.complete(request)):
            yield event

    async def aclose(self) -> None:
        return None


class ScriptedDSPyLM(dspy.LM):
    """A `dspy.LM` whose replies are written in advance (no network, no key, no cache).

    Args:
        replies: reply texts in call order (an exception instance is raised in its turn), or
            a function of the request's messages returning the reply text. When a list runs
            out, the reply says so (a run then sees an unparseable reply, not a crash).
        model: the model name reported in usage and history.
        latency_s: seconds each call waits (asynchronously for `acall`) before replying.

    Deep copies share the script, so a program copied by an optimizer keeps consuming the
    same list of replies.

    Attributes:
        calls: every request's messages, in call order.
    """

    def __init__(
        self,
        replies: Sequence[ScriptedReply] | ReplyFunction,
        *,
        model: str = "scripted/dspy",
        latency_s: float = 0.0,
    ) -> None:
        if latency_s < 0:
            raise ConfigError(f"latency_s must be >= 0, got {latency_s}")
        self._script = _Script(replies, model, latency_s)
        super().__init__(
            model,
            engine=_SyncEngine(self._script),
            async_engine=_AsyncEngine(self._script),
            cache=False,
            num_retries=0,
        )

    @property
    def calls(self) -> list[list[dict[str, str]]]:
        """Every request's messages, in call order."""
        return self._script.calls

    @property
    def remaining(self) -> int | None:
        """Scripted replies left (None when replies come from a function)."""
        return self._script.remaining

    def __deepcopy__(self, memo: dict[int, Any]) -> ScriptedDSPyLM:
        return self

    def dump_state(self) -> dict[str, Any]:
        """The class and model name only: a saved program cannot rebuild the script (loading refuses it)."""
        return {"_dspy_lm_class": f"{type(self).__module__}.{type(self).__qualname__}", "model": self.model}


def _messages_of(request: Request) -> list[dict[str, str]]:
    messages: list[dict[str, str]] = []
    if request.system is not None:
        system = request.system if isinstance(request.system, str) else "".join(p.text for p in request.system)
        messages.append({"role": "system", "content": system})
    messages.extend({"role": m.role, "content": m.text or ""} for m in request.messages)
    return messages
