"""Which model the CLI uses: an explicit argument, then the environment, then the embedded local model."""

from __future__ import annotations

import os

from rlm_integrations.lm.protocol import LanguageModel
from rlm_integrations.lm.registry import resolve_model

__all__ = ["PROVIDER_DEFAULTS", "choose_model", "choose_sub_model"]

PROVIDER_DEFAULTS: tuple[tuple[str, str], ...] = (
    ("OPENAI_API_KEY", "openai/gpt-4o-mini"),
    ("ANTHROPIC_API_KEY", "anthropic/claude-3-5-haiku-20241022"),
    ("GEMINI_API_KEY", "gemini/gemini-2.0-flash"),
)
"""Provider keys the CLI looks for, in order, and the model it then uses."""


def choose_model(spec: str | None) -> tuple[LanguageModel, str]:
    """Resolve a model argument to a `LanguageModel` and a sentence that says which one it is.

    `spec` may be any model string `rlm_integrations.lm.resolve_model` knows (a LiteLLM model
    string, ``"openai-compatible/<name>"``, ``"local"`` or ``"local:qwen2.5-coder-1.5b"``, or a
    prefix registered with `register_provider`), a path to a ``.gguf`` file, or
    ``"scripted-demo"`` (the demo's offline scripted model). With no `spec`, ``RLM_MODEL``
    is used, then the first provider key found in the environment, then the local model.
    """
    if spec:
        return _from_spec(spec, "from --model")
    from_environment = os.environ.get("RLM_MODEL")
    if from_environment:
        return _from_spec(from_environment, "from RLM_MODEL")
    for variable, model in PROVIDER_DEFAULTS:
        if os.environ.get(variable):
            return _from_spec(model, f"because {variable} is set")
    return _from_spec("local", "no model given and no provider key found")


def choose_sub_model(spec: str | None, root: LanguageModel) -> LanguageModel:
    """The model behind `llm_query`: `spec` if given, else the root model.

    The scripted demo model is the exception: its replies are a script for the root, so
    sub-calls get their own scripted model instead of consuming the root's script.
    """
    if spec:
        return choose_model(spec)[0]
    if root.name == "scripted-demo":
        from rlm_integrations.demo import scripted_sub_model

        return scripted_sub_model()
    return root


def _from_spec(spec: str, reason: str) -> tuple[LanguageModel, str]:
    if spec == "scripted-demo":
        from rlm_integrations.demo import scripted_demo_model

        return scripted_demo_model(), f"the scripted demo model ({reason}; it replays a fixed search strategy)"
    if spec.endswith(".gguf"):
        from rlm_integrations.lm.local import LocalModel

        model: LanguageModel = LocalModel(spec)
    else:
        model = resolve_model(spec)
    return model, f"{_served_by(model, spec)} ({reason})"


def _served_by(model: LanguageModel, spec: str) -> str:
    """How the chosen model is reached, in words: the adapter the registry picked."""
    kind = type(model).__name__
    if kind == "LocalModel":
        return f"{model.name}, local on the CPU through llama.cpp"
    if kind == "LiteLLMModel":
        return f"{spec} through LiteLLM"
    if kind == "OpenAICompatibleModel":
        endpoint = getattr(model, "base_url", None) or "OpenAI's endpoint"
        return f"{spec} through the OpenAI SDK at {endpoint}"
    return f"{model.name} through {kind}"
