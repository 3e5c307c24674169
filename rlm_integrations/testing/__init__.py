"""Test helpers that ship with the library: an OpenAI-compatible fake server and an in-process REPL.

`ScriptedLM` (in `rlm_integrations.lm`) fakes a model in-process; `FakeOpenAIServer`
fakes a provider over real HTTP, so the real `LiteLLMModel` (retries, timeouts, usage,
cost) can be exercised offline. `FakeREPL` runs cells in this process, without a worker
or a sandbox, so engine tests start no process (it is NOT safe for untrusted code).
"""

from rlm_integrations.testing.fake_repl import FakeREPL
from rlm_integrations.testing.openai_server import FakeOpenAIServer, Fault, RecordedRequest, ReplySource

__all__ = ["FakeOpenAIServer", "FakeREPL", "Fault", "RecordedRequest", "ReplySource"]
