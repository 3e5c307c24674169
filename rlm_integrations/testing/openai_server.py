"""`FakeOpenAIServer`: an OpenAI-compatible chat server on 127.0.0.1 for tests and benchmarks.

It speaks enough of the OpenAI HTTP API for LiteLLM (`openai/<alias>` with `api_base`)
and the OpenAI SDK to talk to it: `POST /v1/chat/completions` answers with scripted
replies and `usage` fields, `GET /v1/models` lists one model. Faults are injected per
request: a 429 with `Retry-After`, a 5xx, any other error status, a slow reply, a
malformed body, a dropped connection.

```python
with FakeOpenAIServer(["first reply", "second reply"], latency_s=0.05) as server:
    server.inject(Fault.rate_limit(retry_after=0.01))   # the next request gets a 429
    model = LiteLLMModel("openai/fake", api_base=server.api_base, api_key="unused")
    model.complete([{"role": "user", "content": "hi"}]).text   # "first reply", after one retry
    server.requests                                            # what was received
```

The server runs on its own event loop in a daemon thread, so synchronous tests, async
tests and benchmarks all use it the same way (`with` or `async with`). It listens with a
large backlog (1024 by default), so bursts of concurrent connections do not stall.
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
import json
import socket
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Literal

from aiohttp import web

from rlm_integrations.lm.tokens import estimate_messages_tokens, estimate_tokens

__all__ = ["FakeOpenAIServer", "Fault", "RecordedRequest", "ReplySource"]

FaultKind = Literal["error", "slow", "malformed", "disconnect"]


@dataclass(frozen=True)
class Fault:
    """A misbehaviour the server performs instead of (or before) a normal reply.

    Build faults with the class methods; pass them to `FakeOpenAIServer.inject`, put them
    in the scripted reply list, or return them from a reply function.

    Attributes:
        kind: `"error"` (an HTTP error status with an OpenAI-style error body), `"slow"`
            (wait `delay_s`, then answer normally), `"malformed"` (HTTP 200 with `body`
            as is), or `"disconnect"` (close the connection without answering).
        status: the HTTP status of an `"error"` or `"malformed"` fault.
        message: the error message of an `"error"` fault.
        code: the OpenAI error `code` field, if any.
        error_type: the OpenAI error `type` field.
        headers: extra response headers (e.g. `Retry-After`).
        delay_s: the delay of a `"slow"` fault, in seconds.
        body: the raw body of a `"malformed"` fault.
    """

    kind: FaultKind
    status: int = 200
    message: str = ""
    code: str | None = None
    error_type: str = "server_error"
    headers: Mapping[str, str] = field(default_factory=dict)
    delay_s: float = 0.0
    body: str = ""

    @classmethod
    def rate_limit(cls, retry_after: float | None = 0.0) -> Fault:
        """HTTP 429, with a `Retry-After` header in seconds unless `retry_after` is None."""
        headers = {} if retry_after is None else {"Retry-After": f"{retry_after:g}"}
        return cls(
            "error",
            status=429,
            message="Rate limit reached (injected by FakeOpenAIServer)",
            code="rate_limit_exceeded",
            error_type="requests",
            headers=headers,
        )

    @classmethod
    def server_error(cls, status: int = 500, message: str = "Internal server error (injected)") -> Fault:
        """An HTTP 5xx error."""
        return cls("error", status=status, message=message, error_type="server_error")

    @classmethod
    def error(
        cls,
        status: int,
        message: str,
        *,
        code: str | None = None,
        error_type: str = "invalid_request_error",
        headers: Mapping[str, str] | None = None,
    ) -> Fault:
        """Any HTTP error status with an OpenAI-style error body."""
        return cls("error", status=status, message=message, code=code, error_type=error_type, headers=headers or {})

    @classmethod
    def context_length_exceeded(cls, max_tokens: int = 8192, prompt_tokens: int = 9000) -> Fault:
        """The HTTP 400 OpenAI sends for a prompt larger than the model's window."""
        message = (
            f"This model's maximum context length is {max_tokens} tokens. However, your messages resulted "
            f"in {prompt_tokens} tokens. Please reduce the length of the messages."
        )
        return cls.error(400, message, code="context_length_exceeded")

    @classmethod
    def slow(cls, delay_s: float) -> Fault:
        """Wait `delay_s` seconds, then answer normally (with the next scripted reply)."""
        return cls("slow", delay_s=delay_s)

    @classmethod
    def malformed(cls, body: str = '{"id": "chatcmpl-broken", "choices": [', status: int = 200) -> Fault:
        """Answer with `body` verbatim as `application/json` (by default, truncated JSON)."""
        return cls("malformed", status=status, body=body)

    @classmethod
    def disconnect(cls) -> Fault:
        """Close the connection without sending a response."""
        return cls("disconnect")


_SHUTDOWN_SWEEP_S = 5.0
"""The longest `stop` waits for the server's last connections and tasks to end."""


async def _shut_down(runner: web.AppRunner, listener: socket.socket) -> None:
    """Stop `runner` and close every connection it accepted, so none outlives the server's loop.

    Two races would otherwise leave an accepted socket open after the loop closes (the
    garbage collector then reports it inside some later test), typically when a client
    connects and hangs up just before `stop`:

    - asyncio accepts a connection in one loop turn and builds its transport in a task a
      turn later; closing the asyncio server in between makes that task fail and drop the
      socket unclosed (CPython gh-109564, open). So the listening socket is unwatched
      first, and the accepts already under way get their turn before the server closes.
    - `AppRunner.cleanup` closes the connections registered when it runs; one accepted
      just before registers a turn or two later. So afterwards every connection still
      listed is force-closed, until no task but this one is left on the loop.
    """
    loop = asyncio.get_running_loop()
    loop.remove_reader(listener)  # no new accepts; a pending accept callback is cancelled too
    await asyncio.sleep(0)  # accept tasks already created build (and register) their transports
    server = runner.server  # aiohttp's connection manager; `cleanup` drops the runner's reference
    await runner.cleanup()
    if server is None:
        return
    this = asyncio.current_task()
    try:
        async with asyncio.timeout(_SHUTDOWN_SWEEP_S):
            while True:
                for handler in server.connections:
                    handler.force_close()
                others = asyncio.all_tasks() - {this}
                if not others:
                    break
                await asyncio.wait(others, timeout=0.05)
    except TimeoutError:  # a reply function that ignores cancellation: `stop` still stops the loop
        pass
    await asyncio.sleep(0)  # a closed transport releases its socket on the loop's next turn


ReplySource = Sequence[str | Fault] | Callable[[dict[str, Any]], str | Fault | Awaitable[str | Fault]]
"""Scripted replies in order, or a function of the request's JSON body."""


@dataclass
class RecordedRequest:
    """One request the server received.

    Attributes:
        method: the HTTP method.
        path: the request path, e.g. `/v1/chat/completions`.
        headers: the request headers.
        body: the parsed JSON body (None if it was not JSON).
        received_at: `time.monotonic()` when the request arrived.
        status: the HTTP status sent back (None while in flight or if never answered).
        fault: the fault applied to this request, if any.
        reply: the reply text sent, if any.
        usage: the `usage` object sent, if any.
    """

    method: str
    path: str
    headers: dict[str, str]
    body: Any
    received_at: float
    status: int | None = None
    fault: Fault | None = None
    reply: str | None = None
    usage: dict[str, int] | None = None


def _echo(body: dict[str, Any]) -> str:
    messages = body.get("messages") or [{}]
    content = messages[-1].get("content", "") if isinstance(messages[-1], dict) else ""
    return f"echo: {_text_of(content)}"


def _text_of(content: Any) -> str:
    """The text of a message `content` (a string, or OpenAI's list of parts)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(part.get("text", "") for part in content if isinstance(part, dict))
    return ""


class FakeOpenAIServer:
    """An OpenAI-compatible HTTP server on 127.0.0.1 with scripted replies and faults.

    Attributes:
        latency_s: seconds every chat request waits before it is answered.
        model: the model name to report, or None to echo the request's `model`.
        max_body_bytes: the largest request body accepted (HTTP 413 beyond it).
    """

    def __init__(
        self,
        replies: ReplySource | None = None,
        *,
        latency_s: float = 0.0,
        model: str | None = None,
        host: str = "127.0.0.1",
        backlog: int = 1024,
        max_body_bytes: int = 256 * 1024 * 1024,
    ) -> None:
        """Configure the server (nothing starts until `start()` or `with`).

        Args:
            replies: reply texts (or `Fault`s) consumed one per chat request, in order; or a
                function of the request's JSON body returning the reply text or a `Fault`
                (sync or async; it runs on the server's thread). None echoes the last
                message back (`"echo: <content>"`). A request after the list runs out is
                answered with HTTP 400 saying so.
            latency_s: delay added to every chat request, in seconds.
            model: the model name to put in responses; None echoes the requested model.
            host: the interface to listen on.
            backlog: the listen backlog (pending connections the kernel queues).
            max_body_bytes: the largest request body accepted (256 MiB by default, so
                tests can send the prompts a long run builds); larger ones get HTTP 413.
        """
        if latency_s < 0:
            raise ValueError(f"latency_s must be >= 0, got {latency_s}")
        if max_body_bytes < 1:
            raise ValueError(f"max_body_bytes must be positive, got {max_body_bytes}")
        self.max_body_bytes = max_body_bytes
        self.latency_s = latency_s
        self.model = model
        self._host = host
        self._backlog = backlog
        self._function: Callable[[dict[str, Any]], Any] | None = None
        self._replies: deque[str | Fault] = deque()
        self._scripted_count = 0
        if replies is None:
            self._function = _echo
        elif callable(replies):
            self._function = replies
        else:
            if isinstance(replies, str):
                raise TypeError("replies must be a sequence of strings, not a single string")
            self._replies.extend(replies)
            self._scripted_count = len(self._replies)
        self._faults: deque[Fault] = deque()
        self._requests: list[RecordedRequest] = []
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._port: int | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._listener: socket.socket | None = None

    # -- lifecycle ---------------------------------------------------------------------

    def start(self) -> FakeOpenAIServer:
        """Start serving in a background thread (idempotent); returns the server."""
        if self._thread is not None:
            return self
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self._host, 0))
            sock.listen(self._backlog)
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        self._port = sock.getsockname()[1]
        self._listener = sock
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, name=f"fake-openai-{self._port}", daemon=True)
        thread.start()
        self._loop, self._thread = loop, thread
        try:
            asyncio.run_coroutine_threadsafe(self._serve(sock), loop).result(timeout=30)
        except BaseException:
            sock.close()
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop serving and join the thread (idempotent). Requests in flight are cut off."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        try:
            if self._runner is not None and self._listener is not None and loop.is_running():
                asyncio.run_coroutine_threadsafe(_shut_down(self._runner, self._listener), loop).result(timeout=30)
        finally:
            self._runner = self._listener = None
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=30)
            loop.close()
            self._loop = self._thread = None

    async def _serve(self, sock: socket.socket) -> None:
        app = web.Application(client_max_size=self.max_body_bytes)
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_post("/chat/completions", self._chat)
        app.router.add_get("/v1/models", self._models)
        runner = web.AppRunner(app, access_log=None, handler_cancellation=True, shutdown_timeout=0.5)
        await runner.setup()
        await web.SockSite(runner, sock, backlog=self._backlog).start()
        self._runner = runner

    def __enter__(self) -> FakeOpenAIServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    async def __aenter__(self) -> FakeOpenAIServer:
        return await asyncio.to_thread(self.start)

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await asyncio.to_thread(self.stop)

    # -- what tests read and set -------------------------------------------------------

    @property
    def port(self) -> int:
        """The port the server listens on (only once started)."""
        if self._port is None:
            raise RuntimeError("FakeOpenAIServer is not started")
        return self._port

    @property
    def url(self) -> str:
        """The server's root URL, e.g. `http://127.0.0.1:54321`."""
        return f"http://{self._host}:{self.port}"

    @property
    def api_base(self) -> str:
        """The OpenAI-style base URL (`<url>/v1`) to pass as `api_base`."""
        return f"{self.url}/v1"

    @property
    def requests(self) -> list[RecordedRequest]:
        """A snapshot of the chat requests received so far, in arrival order."""
        with self._lock:
            return list(self._requests)

    def inject(self, *faults: Fault) -> None:
        """Queue faults: each of the next chat requests gets the next fault, in order."""
        with self._lock:
            self._faults.extend(faults)

    def add_replies(self, *replies: str | Fault) -> None:
        """Append to the scripted reply list."""
        if self._function is not None:
            raise TypeError("this server answers with a reply function; it has no reply list")
        with self._lock:
            self._replies.extend(replies)
            self._scripted_count += len(replies)

    # -- handlers ----------------------------------------------------------------------

    async def _models(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": self.model or "fake", "object": "model"}]})

    async def _next_scripted(self, body: dict[str, Any]) -> str | Fault:
        if self._function is not None:
            outcome = self._function(body)
            if inspect.isawaitable(outcome):
                outcome = await outcome
            if not isinstance(outcome, str | Fault):
                return Fault.server_error(message=f"reply function returned {type(outcome).__name__}")
            return outcome
        with self._lock:
            if self._replies:
                return self._replies.popleft()
        return Fault.error(
            400,
            f"FakeOpenAIServer ran out of scripted replies ({self._scripted_count} were scripted)",
            code="scripted_replies_exhausted",
        )

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        try:
            body: Any = json.loads(raw)
        except ValueError:
            body = None
        record = RecordedRequest(
            method=request.method,
            path=request.path,
            headers=dict(request.headers),
            body=body,
            received_at=time.monotonic(),
        )
        with self._lock:
            self._requests.append(record)
            action: str | Fault | None = self._faults.popleft() if self._faults else None
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
            return self._finish(
                record, self._error_response(Fault.error(400, "body must be a JSON object with messages"))
            )
        if body.get("stream"):
            return self._finish(record, self._error_response(Fault.error(400, "FakeOpenAIServer does not stream")))
        if self.latency_s:
            await asyncio.sleep(self.latency_s)
        if action is None:
            action = await self._next_scripted(body)
        while isinstance(action, Fault) and action.kind == "slow":
            record.fault = action
            await asyncio.sleep(action.delay_s)
            action = await self._next_scripted(body)
        if isinstance(action, Fault):
            record.fault = action
            if action.kind == "disconnect":
                if request.transport is not None:
                    request.transport.close()
                return web.Response(status=499)
            if action.kind == "malformed":
                response = web.Response(status=action.status, text=action.body, content_type="application/json")
                return self._finish(record, response)
            return self._finish(record, self._error_response(action))
        return self._finish(record, self._reply(body, action, record))

    def _reply(self, body: dict[str, Any], text: str, record: RecordedRequest) -> web.Response:
        prompt_tokens = estimate_messages_tokens(
            {"content": _text_of(m.get("content"))} for m in body["messages"] if isinstance(m, dict)
        )
        completion_tokens = estimate_tokens(text)
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        }
        record.reply, record.usage = text, usage
        payload = {
            "id": f"chatcmpl-fake-{next(self._ids)}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": self.model or str(body.get("model", "fake")),
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "logprobs": None,
                    "finish_reason": "stop",
                }
            ],
            "usage": usage,
        }
        return web.json_response(payload)

    @staticmethod
    def _error_response(fault: Fault) -> web.Response:
        error = {"message": fault.message, "type": fault.error_type, "param": None, "code": fault.code}
        return web.json_response({"error": error}, status=fault.status, headers=dict(fault.headers))

    @staticmethod
    def _finish(record: RecordedRequest, response: web.Response) -> web.Response:
        record.status = response.status
        return response

    def __repr__(self) -> str:
        where = self.url if self._port is not None and self._thread is not None else "not started"
        return f"FakeOpenAIServer({where}, requests={len(self._requests)})"
