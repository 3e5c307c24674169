"""Test helpers that ship with the library: an OpenAI-compatible fake server.

`ScriptedLM` (in `rlm_integrations.lm`) fakes a model in-process; `FakeOpenAIServer`
fakes a provider over real HTTP, so the real `LiteLLMModel` (retries, timeouts, usage,
cost) can be exercised offline.
"""

from rlm_integrations.testing.openai_server import FakeOpenAIServer, Fault, RecordedRequest, ReplySource

__all__ = ["FakeOpenAIServer", "Fault", "RecordedRequest", "ReplySource"]
