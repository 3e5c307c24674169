"""`RLMTool`: an RLM as a LangChain tool, for agents."""

from __future__ import annotations

import json
from typing import Any, Literal

from langchain_core.callbacks import AsyncCallbackManagerForToolRun, CallbackManagerForToolRun
from langchain_core.runnables import Runnable
from langchain_core.tools import BaseTool
from pydantic import BaseModel, ConfigDict, Field

from rlm_integrations.core.result import RLMResult
from rlm_integrations.langchain.schema import RLMInput

__all__ = ["RLMTool", "RLMToolInput"]

_DESCRIPTION = (
    "Answers a question over a large text or data set by writing and running code over it, "
    "calling a language model on the pieces it picks. Use it when the data is too large to read directly."
)


class RLMToolInput(BaseModel):
    """The arguments a model passes to `RLMTool`."""

    query: str = Field(description="The question to answer, self-contained.")
    context: str | list[Any] | dict[str, Any] | None = Field(
        default=None,
        description="The text or data to answer from. Leave it out to use the data the tool was given.",
    )


class RLMTool(BaseTool):
    """An RLM as a tool: the agent asks a question, the RLM answers it over the data.

    The data is usually bound to the tool (`context=`) so that it never passes through
    the agent's own window; a `context` argument in the tool call replaces it for that
    call. The tool's output is the answer as text (JSON for structured answers); the
    full `RLMResult` is the tool message's artifact.

    Example:
        ```python
        tool = RLMTool(rlm=RLMRunnable(model=chat_model), context=corpus)
        agent = create_agent(chat_model, tools=[tool])
        ```

    The RLM's run nests under the tool run, so the agent's trace shows every turn.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    name: str = "recursive_language_model"
    description: str = _DESCRIPTION
    args_schema: type[BaseModel] = RLMToolInput
    response_format: Literal["content", "content_and_artifact"] = "content_and_artifact"
    rlm: Runnable[RLMInput, RLMResult]
    """The RLM that answers: an `RLMRunnable`, or one wrapped by `with_retry` / `with_fallbacks` / `with_config`.

    Typed as the `Runnable` it is used as, so that this module does not import
    `RLMRunnable` (whose `as_tool` builds this tool)."""
    context: Any = None
    """Data bound to the tool, used when a call gives no `context`."""

    def _request(self, query: str, context: Any) -> RLMInput:
        return RLMInput(query=query, context=self.context if context is None else context)

    def _run(
        self,
        query: str,
        context: Any = None,
        run_manager: CallbackManagerForToolRun | None = None,
    ) -> tuple[str, RLMResult]:
        callbacks = run_manager.get_child() if run_manager is not None else None
        output = self.rlm.invoke(self._request(query, context), {"callbacks": callbacks})
        return answer_text(output), output

    async def _arun(
        self,
        query: str,
        context: Any = None,
        run_manager: AsyncCallbackManagerForToolRun | None = None,
    ) -> tuple[str, RLMResult]:
        callbacks = run_manager.get_child() if run_manager is not None else None
        output = await self.rlm.ainvoke(self._request(query, context), {"callbacks": callbacks})
        return answer_text(output), output


def answer_text(output: RLMResult) -> str:
    """The answer as text: strings as they are, other values as JSON; an early stop says so."""
    answer = output.answer
    if answer is None:
        text = ""
    elif isinstance(answer, str):
        text = answer
    else:
        try:
            text = json.dumps(answer, ensure_ascii=False)
        except (TypeError, ValueError):
            text = str(answer)
    if output.status != "completed":
        reason = output.error or output.limit or output.status
        text = f"{text}\n\n(The RLM stopped early: {output.status}, {reason}.)".strip()
    return text
