"""Core events as nested LangChain runs: the run tree LangSmith shows, built with callbacks only.

For one `RLMRunnable` call the tree is:

```
RLM                         chain  (the runnable's own run)
├── rlm_iteration           chain  one per turn; tags rlm:iteration
│   ├── <root chat model>   llm    the root model's turn; tags rlm:root
│   └── repl                tool   one per code cell: input the code, output its stdout (or the error)
│       ├── <sub model>     llm    each llm_query made by the cell; tags rlm:sub
│       └── rlm_query       chain  a child RLM started by the cell; its turns nest the same way
└── <root chat model>       llm    the closing request, when a limit ended the run
```

The LLM runs are opened by the chat models themselves (through `RunnableLM`, which asks
`RunTreeTracer.parent_for` where to nest each call); the tracer opens and closes the
chain and tool runs and dispatches custom events (``rlm_iteration_start``,
``rlm_cell_end``, ``rlm_sub_call_start``, ...) that `astream_events(version="v2")`
carries.

The structure (which run a cell belongs to, which cell started a child run, a turn's
reply) is read from core's `RunTree`, fed the same events; the tracer keeps only the
LangChain run it opened for each node of that tree.

Observers are called synchronously by the engine, while LangChain's async callbacks must
be awaited in order (a child run must start after its parent). The tracer therefore
queues callback work and drains it in order on the event loop; a model call first
drains the queue, so its parent run has always started.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, assert_never
from uuid import UUID

from langchain_core.callbacks import AsyncCallbackManager
from langchain_core.callbacks.base import BaseCallbackManager
from langchain_core.callbacks.manager import BaseRunManager
from langchain_core.utils.uuid import uuid7

from rlm_integrations.core.calls import ModelCall
from rlm_integrations.core.events import (
    CellFinished,
    CellStarted,
    CitationsFound,
    Event,
    IterationFinished,
    IterationStarted,
    LMCallFinished,
    LMCallStarted,
    RunFinished,
    RunStarted,
    SubCallFinished,
    SubCallStarted,
)
from rlm_integrations.core.run_tree import CellNode, IterationNode, RunNode, RunTree

__all__ = ["CellError", "RunTreeTracer"]

logger = logging.getLogger("rlm_integrations.langchain")

_Op = Callable[[], Awaitable[None]]


class CellError(Exception):
    """The error of a code cell, reported as its tool run's error (never raised)."""


@dataclass
class _Node:
    """One run of the LangChain tree: its id, the manager children nest under, its own manager once started."""

    run_id: UUID
    child: AsyncCallbackManager
    depth: int = 0
    manager: Any = None
    open: bool = True
    kind: str = "chain"


_Traced = RunNode | IterationNode | CellNode
"""The nodes of core's run tree that get a LangChain run of their own."""


def child_manager(parent: BaseCallbackManager | BaseRunManager, parent_run_id: UUID) -> AsyncCallbackManager:
    """The manager for runs nested under run `parent_run_id` (what `run_manager.get_child()` builds)."""
    manager = AsyncCallbackManager(handlers=[], parent_run_id=parent_run_id)
    manager.set_handlers(list(parent.inheritable_handlers))
    manager.add_tags(list(parent.inheritable_tags))
    manager.add_metadata(dict(parent.inheritable_metadata))
    return manager


class RunTreeTracer:
    """An event observer that mirrors one RLM call's run tree as LangChain runs.

    Args:
        run_manager: the run manager of the runnable's own chain run (sync or async).
        custom_events: also dispatch each event as a LangChain custom event.

    One tracer serves one call; it holds that call's state and nothing else.
    """

    def __init__(self, run_manager: BaseRunManager, run_id: UUID, *, custom_events: bool = True) -> None:
        self.custom_events = custom_events
        self._outer = _Node(run_id=run_id, child=child_manager(run_manager, run_id), open=False)
        self._tree = RunTree()
        self._nodes: dict[_Traced, _Node] = {}  # the LangChain run of each traced node, in start order
        self._queue: collections.deque[_Op] = collections.deque()
        self._lock: asyncio.Lock | None = None
        self._drain: asyncio.Task[None] | None = None

    # -- the observer ---------------------------------------------------------------------------
    def __call__(self, event: Event) -> None:
        """Turn one core event into callback work, queued in order."""
        self._tree(event)
        match event:
            case RunStarted():
                self._run_started(event)
            case RunFinished():
                self._run_finished(event)
            case IterationStarted():
                self._iteration_started(event)
            case IterationFinished():
                self._iteration_finished(event)
            case LMCallStarted() | LMCallFinished():
                pass  # the chat model opens and closes its own LLM run (see `parent_for`)
            case CellStarted():
                self._cell_started(event)
            case CellFinished():
                self._cell_finished(event)
            case SubCallStarted() | SubCallFinished():
                self._custom(event)
            case CitationsFound():
                pass  # found after the run: on the output's `citations`
            case _:
                assert_never(event)
        self._schedule()

    def _run(self, run_id: str) -> RunNode:
        return self._tree.runs[run_id]  # the tree has just been fed an event of this run

    def _node(self, traced: _Traced | None) -> _Node | None:
        return self._nodes.get(traced) if traced is not None else None

    def _run_started(self, event: RunStarted) -> None:
        run = self._run(event.run_id)
        if event.parent_id is None or not any(isinstance(traced, RunNode) for traced in self._nodes):
            self._outer.depth = event.depth
            self._nodes[run] = self._outer
            self._custom(event)
            return
        parent = self._node(run.parent_cell) or self._node(run.parent) or self._outer
        context = event.context.model_dump(exclude={"sha256"}) if event.context is not None else None
        node = self._start(
            parent,
            kind="chain",
            name="rlm_query",
            inputs={"query": event.query, "context": context},
            tags=["rlm:child"],
            metadata={"rlm_role": "child", "rlm_depth": event.depth, "rlm_run_id": event.run_id},
            depth=event.depth,
        )
        self._nodes[run] = node
        self._custom(event)

    def _run_finished(self, event: RunFinished) -> None:
        self._custom(event)
        node = self._node(self._run(event.run_id))
        if node is None or node is self._outer:
            return
        outputs = {"answer": event.answer, "status": event.status, "limit": event.limit, "iterations": event.iterations}
        self._end(node, outputs)

    def _iteration_started(self, event: IterationStarted) -> None:
        run = self._run(event.run_id)
        parent = self._node(run) or self._outer
        node = self._start(
            parent,
            kind="chain",
            name="rlm_iteration",
            inputs={"iteration": event.iteration},
            tags=["rlm:iteration"],
            metadata={
                "rlm_role": "iteration",
                "rlm_depth": parent.depth,
                "rlm_iteration": event.iteration,
                "rlm_run_id": event.run_id,
            },
            depth=parent.depth,
        )
        self._nodes[run.iterations[event.iteration]] = node
        self._custom(event)

    def _iteration_finished(self, event: IterationFinished) -> None:
        self._custom(event)
        turn = self._run(event.run_id).iterations[event.iteration]
        node = self._node(turn)
        if node is not None and event.interrupted:  # cut short (a failure, a time limit, a cancellation)
            self._end(node, None, error=RuntimeError("the RLM run ended before this step finished"))
        elif node is not None:
            self._end(node, {"reply": turn.reply, "duration": round(event.duration, 6)})

    def _cell_started(self, event: CellStarted) -> None:
        core_run = self._run(event.run_id)
        run = self._node(core_run) or self._outer
        parent = self._node(core_run.iterations.get(event.iteration)) or run
        node = self._start(
            parent,
            kind="tool",
            name="repl",
            inputs={"code": event.code},
            tags=["rlm:cell"],
            metadata={
                "rlm_role": "cell",
                "rlm_depth": run.depth,
                "rlm_iteration": event.iteration,
                "rlm_run_id": event.run_id,
                "rlm_cell_id": event.cell_id,
            },
            depth=run.depth,
        )
        self._nodes[core_run.cells[event.cell_id]] = node
        self._custom(event)

    def _cell_finished(self, event: CellFinished) -> None:
        self._custom(event)
        node = self._node(self._run(event.run_id).cells[event.cell_id])
        if node is None:
            return
        if event.error is not None:
            self._end(node, None, error=CellError(event.error), kind="tool")
            return
        output = event.stdout
        if event.value is not None:
            output = f"{output}{'' if not output or output.endswith(chr(10)) else chr(10)}{event.value}"
        self._end(node, output, kind="tool")

    # -- where model calls nest ----------------------------------------------------------------
    async def parent_for(self, call: ModelCall | None) -> AsyncCallbackManager:
        """The manager a model call's LLM run nests under, once every queued run start is delivered."""
        await self.flush()
        core_run = self._tree.runs.get(call.run_id) if call is not None else None
        if call is None or core_run is None:
            return self._outer.child
        node: _Node | None = None
        if call.role == "sub" and call.cell_id is not None:
            node = self._node(core_run.cells.get(call.cell_id))
        elif call.purpose == "step":
            node = self._node(core_run.iterations.get(call.iteration))
        return (node or self._node(core_run) or self._outer).child

    # -- queued callback work -----------------------------------------------------------------
    def _start(
        self,
        parent: _Node,
        *,
        kind: str,
        name: str,
        inputs: dict[str, Any],
        tags: list[str],
        metadata: dict[str, Any],
        depth: int,
    ) -> _Node:
        run_id = uuid7()
        node = _Node(run_id=run_id, child=child_manager(parent.child, run_id), depth=depth, kind=kind)
        starter = child_manager(parent.child, parent.run_id)
        starter.add_tags(tags, inherit=False)
        starter.add_metadata(metadata, inherit=False)

        async def start() -> None:
            if kind == "tool":
                node.manager = await starter.on_tool_start(
                    {"name": name}, str(inputs.get("code", "")), run_id=run_id, name=name, inputs=inputs
                )
            else:
                node.manager = await starter.on_chain_start(None, inputs, run_id=run_id, name=name)

        self._queue.append(start)
        return node

    def _end(self, node: _Node, output: Any, *, error: BaseException | None = None, kind: str = "chain") -> None:
        node.open = False

        async def end() -> None:
            manager = node.manager
            if manager is None:
                return
            if kind == "tool":
                if error is not None:
                    await manager.on_tool_error(error)
                else:
                    await manager.on_tool_end(output)
            elif error is not None:
                await manager.on_chain_error(error)
            else:
                await manager.on_chain_end(output)

        self._queue.append(end)

    def _custom(self, event: Event) -> None:
        owner = self._node(self._tree.runs.get(event.run_id)) or self._outer
        if not self.custom_events or not owner.child.handlers:
            return
        data = event.model_dump(mode="json")
        data["depth"] = owner.depth
        name = f"rlm_{event.kind}"

        async def dispatch() -> None:
            await owner.child.on_custom_event(name, data, run_id=owner.run_id)

        self._queue.append(dispatch)

    def _schedule(self) -> None:
        # One drain task at a time: a pending one picks up everything queued before it finishes
        # (it re-checks the queue after every await, and finishing does not yield).
        if not self._queue or (self._drain is not None and not self._drain.done()):
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop: the next flush() delivers the work
            return
        self._drain = loop.create_task(self.flush())

    async def flush(self) -> None:
        """Deliver every queued callback, in order."""
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            while self._queue:
                op = self._queue.popleft()
                try:
                    await op()
                except Exception:  # a failing handler must not break the run
                    logger.exception("LangChain callback failed")

    async def aclose(self, error: BaseException | None = None) -> None:
        """Deliver what is queued, and end every run still open (innermost first) with an error.

        Runs stay open when the call was cancelled or failed (`error`), or when the loop
        stopped mid-turn (a model failure ends the run without ending its turn).
        """
        reason = error or RuntimeError("the RLM run ended before this step finished")
        still_open = [node for node in reversed(self._nodes.values()) if node.open and node is not self._outer]
        for node in still_open:  # the latest started first: children before their parents
            self._end(node, None, error=reason, kind=node.kind)
        await self.flush()
        if self._drain is not None:
            await asyncio.gather(self._drain, return_exceptions=True)
