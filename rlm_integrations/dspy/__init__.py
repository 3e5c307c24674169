"""DSPy integration: the RLM as a `dspy.Module` that optimizers can tune.

```python
import dspy
from rlm_integrations.dspy import RLM

dspy.configure(lm=dspy.LM("openai/gpt-5-mini"))
program = RLM("context, question -> answer", max_iterations=10)
program(context=big_text, question="...").answer
```

Test doubles (a scripted `dspy.LM` and reply helpers) live in `rlm_integrations.dspy.testing`.
Needs the `[dspy]` extra: ``pip install "rlm-integrations[dspy]"``.
"""

from __future__ import annotations

try:
    import dspy as _dspy  # noqa: F401
except ImportError as _import_error:
    from rlm_integrations.errors import MissingExtraError

    raise MissingExtraError("dspy", "rlm_integrations.dspy") from _import_error

from rlm_integrations.dspy.bridge import default_status_message
from rlm_integrations.dspy.lm_adapter import DSPyLanguageModel
from rlm_integrations.dspy.module import RLM
from rlm_integrations.dspy.outputs import OutputError
from rlm_integrations.dspy.session import Session

__all__ = ["RLM", "DSPyLanguageModel", "OutputError", "Session", "default_status_message"]
