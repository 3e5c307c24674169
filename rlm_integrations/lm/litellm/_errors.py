"""LiteLLM's side of errors: sorting its exceptions, and refusing a model or key before any call."""

from __future__ import annotations

from types import ModuleType

from rlm_integrations.errors import MissingAPIKeyError, UnknownModelError
from rlm_integrations.lm._errors import ErrorKind, causes, classify

__all__ = ["AMBIENT_CREDENTIAL_PROVIDERS", "check_environment", "classify_litellm", "route"]

AMBIENT_CREDENTIAL_PROVIDERS = frozenset({"azure", "bedrock", "sagemaker", "sagemaker_chat", "vertex_ai"})
"""Providers whose credentials usually come from somewhere other than an `*_API_KEY`
variable (cloud credential chains, Azure AD tokens), so a missing variable proves nothing."""

_MALFORMED_MARKERS = ("no 'choices'", "Empty or invalid response", "Invalid response object")


def classify_litellm(litellm: ModuleType, error: BaseException) -> ErrorKind:
    """Sort a LiteLLM exception into what to do with it."""
    if isinstance(error, litellm.ContextWindowExceededError):
        return "context_window"
    if any(marker in str(cause) for cause in causes(error) for marker in _MALFORMED_MARKERS):
        return "malformed"
    if isinstance(error, litellm.Timeout):
        return "timeout"
    transient_types = (
        litellm.RateLimitError,
        litellm.APIConnectionError,
        litellm.InternalServerError,
        litellm.ServiceUnavailableError,
        litellm.BadGatewayError,
    )
    kind = classify(error)
    if kind != "malformed" and isinstance(error, transient_types):
        return "transient"
    return kind


def route(litellm: ModuleType, model: str, api_base: str | None) -> tuple[str, str]:
    """The bare model name and the provider LiteLLM sends `model` to.

    Raises:
        UnknownModelError: LiteLLM cannot route `model`; the message says how to prefix it.
    """
    try:
        bare_model, provider, _, _ = litellm.get_llm_provider(model, api_base=api_base)
    except Exception as error:
        raise UnknownModelError(
            f"LiteLLM cannot route the model {model!r}. Prefix it with its provider, e.g. "
            f"'openai/{model}' or 'anthropic/{model}' (see https://docs.litellm.ai/docs/providers); "
            f"for an OpenAI-compatible server use 'openai/<name>' with api_base='http://host:port/v1'.",
            model=model,
        ) from error
    return str(bare_model), str(provider)


def check_environment(litellm: ModuleType, model: str) -> None:
    """Raise `MissingAPIKeyError` when the provider's `*_API_KEY` variable is unset."""
    try:
        report = litellm.validate_environment(model=model)
    except Exception:  # an unusual provider LiteLLM cannot check: let the call decide
        return
    missing = [name for name in report.get("missing_keys", []) if name.endswith("_API_KEY")]
    if report.get("keys_in_environment") or not missing:
        return
    names = " or ".join(missing)
    raise MissingAPIKeyError(
        f"{model} needs an API key: set {names} in the environment or pass api_key=... "
        "(a local OpenAI-compatible server needs none: pass api_base=...)",
        model=model,
        env_vars=missing,
    )
