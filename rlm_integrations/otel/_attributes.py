"""Attribute names and small helpers for the OpenTelemetry observer (no OpenTelemetry import here).

The `gen_ai.*` names follow the OpenTelemetry GenAI semantic conventions (model spans
and agent spans); the `rlm.*` names are this library's own.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from rlm_integrations.lm.protocol import TokenUsage

__all__ = [
    "SPAN_CELL",
    "SPAN_ITERATION",
    "SPAN_RUN",
    "SPAN_SUB_CALL",
    "chat_span_name",
    "input_messages",
    "output_messages",
    "provider_of",
    "tool_span_name",
    "truncate",
    "usage_attributes",
]

# -- GenAI semantic conventions ---------------------------------------------------------------
OPERATION = "gen_ai.operation.name"
PROVIDER = "gen_ai.provider.name"
SYSTEM = "gen_ai.system"  # the older name of gen_ai.provider.name; many backends still read it
REQUEST_MODEL = "gen_ai.request.model"
RESPONSE_MODEL = "gen_ai.response.model"
INPUT_TOKENS = "gen_ai.usage.input_tokens"
OUTPUT_TOKENS = "gen_ai.usage.output_tokens"
AGENT_NAME = "gen_ai.agent.name"
AGENT_ID = "gen_ai.agent.id"
INPUT_MESSAGES = "gen_ai.input.messages"
OUTPUT_MESSAGES = "gen_ai.output.messages"
ERROR_TYPE = "error.type"
TOOL_NAME = "gen_ai.tool.name"
TOOL_TYPE = "gen_ai.tool.type"
TOOL_ARGUMENTS = "gen_ai.tool.call.arguments"
TOOL_RESULT = "gen_ai.tool.call.result"

# -- this library's own ----------------------------------------------------------------------
CACHE_HIT = "rlm.cache_hit"
"""On a model-call span: True when the call cache replayed the reply (no request, nothing spent)."""

# -- span names ------------------------------------------------------------------------------
SPAN_RUN = "invoke_agent rlm"
SPAN_ITERATION = "rlm.iteration"
SPAN_CELL = "rlm.cell"
SPAN_SUB_CALL = "rlm_query"
"""An `rlm_query` sub-call; `llm_query` sub-calls are model calls named like every model call."""

_PROVIDERS = {
    "openai": "openai",
    "anthropic": "anthropic",
    "bedrock": "aws.bedrock",
    "azure": "azure.ai.openai",
    "gemini": "gcp.gemini",
    "vertex_ai": "gcp.vertex_ai",
    "groq": "groq",
    "mistral": "mistral_ai",
    "cohere": "cohere",
    "deepseek": "deepseek",
    "perplexity": "perplexity",
    "xai": "x_ai",
    "watsonx": "ibm.watsonx.ai",
}
"""LiteLLM model-string prefixes and the provider names the conventions give them."""


def chat_span_name(model: str) -> str:
    """The conventional name of a model-call span: ``chat {model}``."""
    return f"chat {model}"


def tool_span_name(tool: str) -> str:
    """The conventional name of a tool-call span: ``execute_tool {tool}``."""
    return f"execute_tool {tool}"


def provider_of(model: str) -> str | None:
    """The provider of a LiteLLM-style model string (``"openai/gpt-5-mini"`` -> ``"openai"``), if it names one."""
    prefix, slash, _ = model.partition("/")
    if not slash or not prefix:
        return None
    return _PROVIDERS.get(prefix, prefix)


def model_attributes(model: str) -> dict[str, Any]:
    """`gen_ai.request.model` and, where the model string names it, the provider (both attribute names)."""
    attributes: dict[str, Any] = {REQUEST_MODEL: model}
    provider = provider_of(model)
    if provider is not None:
        attributes[PROVIDER] = provider
        attributes[SYSTEM] = provider
    return attributes


def usage_attributes(usage: TokenUsage | None) -> dict[str, Any]:
    """Token counts (convention names) and the cost in USD (ours; absent when the price is unknown)."""
    if usage is None:
        return {}
    attributes: dict[str, Any] = {INPUT_TOKENS: usage.prompt_tokens, OUTPUT_TOKENS: usage.completion_tokens}
    if usage.cost_usd is not None:
        attributes["rlm.cost_usd"] = usage.cost_usd
    return attributes


def truncate(text: str, limit: int) -> str:
    """`text` cut to `limit` characters, with a marker saying how much was cut."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... [{len(text) - limit} more characters]"


def input_messages(messages: Sequence[dict[str, str]], limit: int) -> str:
    """Chat messages as the conventions' ``gen_ai.input.messages`` JSON, each content truncated."""
    shaped = [
        {"role": m.get("role", "user"), "parts": [{"type": "text", "content": truncate(m.get("content", ""), limit)}]}
        for m in messages
    ]
    return json.dumps(shaped, ensure_ascii=False)


def output_messages(text: str, limit: int) -> str:
    """A reply as the conventions' ``gen_ai.output.messages`` JSON, truncated."""
    shaped = [{"role": "assistant", "parts": [{"type": "text", "content": truncate(text, limit)}]}]
    return json.dumps(shaped, ensure_ascii=False)
