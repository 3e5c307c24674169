"""OpenTelemetry integration: every run, turn, model call, cell and sub-call as a span.

```python
from rlm_integrations import RLM
from rlm_integrations.otel import OpenTelemetryObserver

rlm = RLM("openai/gpt-5-mini", observers=[OpenTelemetryObserver()])   # the global tracer provider
```

Spans carry the OpenTelemetry GenAI semantic-convention attributes (`gen_ai.operation.name`,
`gen_ai.request.model`, `gen_ai.usage.input_tokens`, ...) and this library's `rlm.*` ones,
so Phoenix, Langfuse, Jaeger, Datadog or MLflow show the run tree through any OTLP exporter.
Needs the `[otel]` extra: ``pip install "rlm-integrations[otel]"``.
"""

from __future__ import annotations

try:
    import opentelemetry.sdk.trace as _sdk  # noqa: F401
    import opentelemetry.trace as _api  # noqa: F401
except ImportError as _import_error:
    from rlm_integrations.errors import MissingExtraError

    raise MissingExtraError("otel", "rlm_integrations.otel") from _import_error

from rlm_integrations.otel._observer import (
    HANDLED_EVENTS,
    CellFailed,
    ModelCallFailed,
    OpenTelemetryObserver,
    RunFailed,
    StepInterrupted,
    SubCallFailed,
)

__all__ = [
    "HANDLED_EVENTS",
    "CellFailed",
    "ModelCallFailed",
    "OpenTelemetryObserver",
    "RunFailed",
    "StepInterrupted",
    "SubCallFailed",
]
