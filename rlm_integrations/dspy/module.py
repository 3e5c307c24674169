r"""`RLM`: a Recursive Language Model as a `dspy.Module`.

```python
import dspy
from rlm_integrations.dspy import RLM

dspy.configure(lm=dspy.LM("openai/gpt-5-mini"))
rlm = RLM("context, question -> answer", max_iterations=10)
pred = rlm(context=big_text, question="Which city is mentioned most?")
pred.answer, pred.status, pred.trajectory
```

The module runs through the core's one entry point (`rlm_integrations.core.run.Run`). The root
run's turns come from the `generate_code` predictor, so optimizers tune it like any other
`dspy.Predict`; `extract` is called only when a run ends without submitting its outputs.
"""

from __future__ import annotations

import copy
import functools
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import dspy
from dspy.signatures.signature import ensure_signature

from rlm_integrations._sync import run_sync
from rlm_integrations.core.config import RLMConfig
from rlm_integrations.core.events import Observer
from rlm_integrations.core.run import REPLFactory, Run, resolve_repl
from rlm_integrations.core.tools import ToolsArg, tool_doc
from rlm_integrations.dspy._support import (
    asked_by_stream_lookup,
    budget_note,
    normalize_tools,
    prediction_for,
    repl_factory,
)
from rlm_integrations.dspy.bridge import DSPyBridge
from rlm_integrations.dspy.children import child_extractor, child_policy_factory
from rlm_integrations.dspy.inputs import describe_variables, to_repl_value
from rlm_integrations.dspy.lm_adapter import DSPyLanguageModel
from rlm_integrations.dspy.orientation import ProbeSubject, prefers_worked_example, probe_subject
from rlm_integrations.dspy.outputs import outputs_from_final
from rlm_integrations.dspy.policy import PredictPolicy
from rlm_integrations.dspy.prestart import prestarted
from rlm_integrations.dspy.signatures import (
    RESERVED_NAMES,
    extract_signature,
    generate_signature,
    instructions_for,
    repl_guide,
)
from rlm_integrations.errors import ConfigError, UsageError

__all__ = ["RLM"]

logger = logging.getLogger("rlm_integrations.dspy")

RESULT_FIELDS = frozenset({"trajectory", "status", "usage", "rlm_result"})
"""Fields every prediction carries next to the outputs; output fields may not use these names."""

_SETTINGS_VERSION = 1
_SUB_PROMPT_CHARS = 100_000
_SETTING_NAMES = ("parse_retries", "history_chars", "demo_chars", "preview_chars")


def _setting(name: str, doc: str) -> Any:
    """A module setting: stored on the module, mirrored into `generate_code`'s saved state.

    Reading it first applies a mirror that was loaded from a file; writing it updates the mirror.
    """
    private = f"_{name}"

    def get(self: RLM) -> Any:
        self._sync_in()
        return self.__dict__[private]

    def set_(self: RLM, value: Any) -> None:
        own = self.__dict__
        live = "generate_code" in own and not own.get("_syncing")
        if live:
            self._sync_in()  # a loaded state first, so this assignment wins over it
        own[private] = value
        if live:
            self._sync_out()

    return property(get, set_, doc=doc)


class StepPredict(dspy.Predict):
    """The `generate_code` predictor: a `dspy.Predict` whose saved state also carries its RLM's settings.

    DSPy saves a program as the state of its predictors, so the RLM's settings (limits,
    bounds, REPL, sub LM) kept here survive `save()` and `load()` of any program that
    contains the RLM, not only of the RLM itself.
    """

    def dump_state(self, json_mode: bool = True) -> dict[str, Any]:
        """`dspy.Predict`'s state plus ``rlm_settings``."""
        state: dict[str, Any] = super().dump_state(json_mode=json_mode)
        settings = getattr(self, "rlm_settings", None)
        if isinstance(settings, dict):
            state["rlm_settings"] = copy.deepcopy(settings)
        return state


class _Hidden:
    """Holds a predictor where `named_predictors()` does not look, so optimizers leave it alone."""

    def __init__(self, predictor: dspy.Predict) -> None:
        self.predictor = predictor


@dataclass
class _Call:
    """What one call needs, resolved where DSPy's settings are live (before any thread hop)."""

    root_lm: dspy.BaseLM
    sub_lm: dspy.BaseLM
    repl_factory: REPLFactory
    context: Any
    variables: dict[str, Any]
    variables_info: str
    bridge: DSPyBridge
    subject: ProbeSubject
    worked_examples: bool


class RLM(dspy.Module):
    """A Recursive Language Model that fits anywhere a `dspy.Predict` or `ChainOfThought` does.

    Every input field is loaded once into a sandboxed REPL as a variable of the same name;
    the root model sees only a bounded description of each. Turn by turn it writes code,
    sees what the code printed, and submits the outputs from code with
    `FINAL(name=value, ...)` (`FINAL(value)` when there is one output). Submitted values
    are checked against the output fields' types; a wrong type goes back to the model as
    an error to fix.

    Args:
        signature: a DSPy signature (string or class), e.g. ``"context, question -> answer"``.
        max_iterations: root turns per call (default: `config`'s).
        max_depth: how deep `rlm_query` may recurse (default: `config`'s).
        sub_lm: the `dspy.BaseLM` behind `llm_query` and child runs' sub-calls (default:
            the root LM, i.e. the module's own LM or `dspy.settings.lm`).
        repl: ``"local"`` (the sandboxed worker, default), ``"modal"``, or a callable that
            takes the `RLMConfig` and returns a fresh `REPL`.
        tools: host functions the code may call by name: a list of callables, `dspy.Tool`s
            or LangChain tools, or a dict of name to any of these. They run in the host
            (never in the sandbox), and each call is a sub-call in `rlm_result.trajectory`.
        config: limits and knobs (`RLMConfig`): budgets, timeouts, output bounds.
        parse_retries: how many times an unparseable reply is asked again (with a
            correction) before the turn counts as one without code.
        history_chars: bound on the REPL history the root model reads each turn (the
            newest turns are kept whole, older ones shortened, then dropped).
        demo_chars: bound on the history kept in DSPy's trace, so bootstrapped demos stay small.
        preview_chars: how much of each input variable the model sees up front.
        worked_examples: show the root model a worked example chosen by the question's
            shape (as `generate_code` demos, only while it has no demos of its own). None
            (the default) asks the root LM (`prefers_worked_example`, true for LMs over
            `LocalModel`); True or False decides.
        optimize_extract: expose `extract` to optimizers. It runs only when a call ends
            without a submission, so by default it is hidden from `named_predictors()`
            and optimizers spend no rounds on it.
        callbacks: DSPy callbacks for this module.
        observers: engine event observers for every call (e.g. an `OpenTelemetryObserver`).

    Returns (from a call): a `dspy.Prediction` with the output fields plus `status`
    (``"completed"``, ``"max_iterations"``, ``"budget_exhausted"`` or ``"timeout"``),
    `trajectory` (one dict per root turn: reasoning, code, output), `usage` (tokens, calls
    and cost per model, sub-calls and child runs included) and `rlm_result` (the full
    `RLMResult`, whose event trajectory `.save()`s as JSON lines). When a limit ends the
    run, the outputs are `extract`'s best effort (None where it found nothing).

    Raises (from a call):
        UsageError: no LM is configured, or a required input is missing.
        ModelError / REPLError: the model or the REPL failed (the original exception
            is raised where there is one, e.g. a `dspy` LM error).
    """

    def __init__(
        self,
        signature: str | type[dspy.Signature],
        max_iterations: int | None = None,
        max_depth: int | None = None,
        sub_lm: dspy.BaseLM | None = None,
        repl: str | REPLFactory = "local",
        tools: ToolsArg | None = None,
        config: RLMConfig | None = None,
        *,
        parse_retries: int = 2,
        history_chars: int = 12_000,
        demo_chars: int = 3_000,
        preview_chars: int = 500,
        optimize_extract: bool = False,
        worked_examples: bool | None = None,
        callbacks: list[Any] | None = None,
        observers: Sequence[Observer] = (),
    ) -> None:
        super().__init__(callbacks=callbacks)
        self.observers = list(observers)
        self.signature = ensure_signature(signature)
        limits = {"max_iterations": max_iterations, "max_depth": max_depth}
        self.config = (config or RLMConfig()).with_overrides(**{k: v for k, v in limits.items() if v is not None})
        self.sub_lm = sub_lm
        self.repl = repl
        resolve_repl(repl)  # fail at construction on a bad value
        self.tools, tool_docs = normalize_tools(tools)
        self.parse_retries = parse_retries
        self.history_chars = history_chars
        self.demo_chars = demo_chars
        self.preview_chars = preview_chars
        self.worked_examples = worked_examples
        self._check_names()
        self._check_settings()
        self.repl_guide = repl_guide(self.signature, sub_prompt_chars=_SUB_PROMPT_CHARS, tools=tool_docs)
        self.generate_code = StepPredict(generate_signature(instructions_for(self.signature)))
        self._extract_holder: _Hidden | None = None
        self._set_extract(dspy.Predict(extract_signature(self.signature)), visible=optimize_extract)
        self._sync_out()

    config: RLMConfig = _setting("config", "Limits and knobs (`RLMConfig`).")
    parse_retries: int = _setting("parse_retries", "Extra attempts when a reply cannot be parsed.")
    history_chars: int = _setting("history_chars", "Bound on the REPL history the model reads each turn.")
    demo_chars: int = _setting("demo_chars", "Bound on the history kept in DSPy's trace (demos).")
    preview_chars: int = _setting("preview_chars", "How much of each input the model sees up front.")
    repl: str | REPLFactory = _setting("repl", "The REPL: 'local', 'modal' or a factory.")
    sub_lm: dspy.BaseLM | None = _setting("sub_lm", "The LM behind `llm_query` (None: the root LM).")
    tools: dict[str, Callable[..., Any]] = _setting("tools", "Host functions the code may call, by name.")
    worked_examples: bool | None = _setting("worked_examples", "Show a worked example (None: as the root LM prefers).")

    # -- the extraction predictor -------------------------------------------------------------
    def named_parameters(self) -> list[tuple[str, Any]]:
        """DSPy's parameters; a hidden `extract` is added only for `dspy.streamify`'s listener lookup.

        `StreamListener(signature_field_name="answer")` finds its predictor among the
        program's named predictors, and `extract` is the one whose outputs are the
        signature's. Optimizers must not see it (see `optimize_extract`), so it is listed
        only while DSPy's `find_predictor_for_stream_listeners` is asking.
        """
        found: list[tuple[str, Any]] = super().named_parameters()
        if not self.optimize_extract and asked_by_stream_lookup():
            found.append(("extract", self.extractor))
        return found

    @property
    def optimize_extract(self) -> bool:
        """Whether `extract` is visible to optimizers (a named predictor)."""
        return "extract" in self.__dict__

    @property
    def extractor(self) -> dspy.Predict:
        """The `extract` predictor, visible to optimizers or not."""
        if "extract" in self.__dict__:
            return self.__dict__["extract"]
        assert self._extract_holder is not None
        return self._extract_holder.predictor

    def _set_extract(self, predictor: dspy.Predict, *, visible: bool) -> None:
        self.__dict__.pop("extract", None)
        self._extract_holder = None
        if visible:
            self.extract = predictor
        else:
            self._extract_holder = _Hidden(predictor)
        if "generate_code" in self.__dict__:
            self._sync_out()

    # -- calls ----------------------------------------------------------------------------------
    def forward(self, **kwargs: Any) -> dspy.Prediction:
        """Run the RLM on the inputs (blocking; also works inside a running event loop)."""
        call = self._prepare(kwargs)
        return run_sync(self._run(call))

    async def aforward(self, **kwargs: Any) -> dspy.Prediction:
        """Run the RLM on the inputs without blocking the event loop.

        Code runs in the worker process and every model call is awaited, so concurrent
        `acall`s overlap.
        """
        call = self._prepare(kwargs)
        return await self._run(call)

    def _prepare(self, kwargs: dict[str, Any]) -> _Call:
        self._sync_in()
        root_lm = self.generate_code.lm or dspy.settings.lm
        if root_lm is None:
            raise UsageError(
                "no language model is configured: call dspy.configure(lm=dspy.LM(...)), use dspy.context(lm=...), "
                "or set this module's LM with rlm.set_lm(...)"
            )
        fields = self.signature.input_fields
        unknown = sorted(set(kwargs) - set(fields))
        if unknown:
            logger.warning("ignoring inputs not in the signature: %s (inputs: %s)", unknown, list(fields))
        values: dict[str, Any] = {}
        missing: list[str] = []
        for name, field in fields.items():
            if name in kwargs:
                values[name] = to_repl_value(kwargs[name])
            elif not field.is_required():
                values[name] = to_repl_value(field.get_default(call_default_factory=True))
            elif type(None) in getattr(field.annotation, "__args__", ()):
                values[name] = None
            else:
                missing.append(name)
        if missing:
            raise UsageError(f"missing input(s) {', '.join(missing)}; this module's inputs are {', '.join(fields)}")
        subject = probe_subject(values, fields)  # the question, and the input it is probed against
        context = values.pop("context", None)
        shown = {"context": context, **values} if "context" in fields else values
        callbacks = [*dspy.settings.get("callbacks", []), *self.callbacks]
        return _Call(
            root_lm=root_lm,
            sub_lm=self.sub_lm or root_lm,
            repl_factory=prestarted(repl_factory(self.repl)),
            context=context,
            variables=values,
            variables_info=describe_variables(shown, fields, self.preview_chars),
            bridge=DSPyBridge(self, callbacks, self.config.max_iterations, extract=self.extractor),
            subject=subject,
            worked_examples=prefers_worked_example(root_lm) if self.worked_examples is None else self.worked_examples,
        )

    async def _run(self, call: _Call) -> dspy.Prediction:
        config = self.config
        run: Run

        def note() -> str:
            return budget_note(run.budget, config)

        run = Run(
            model=DSPyLanguageModel(call.root_lm),
            sub_model=DSPyLanguageModel(call.sub_lm),
            repl=call.repl_factory,
            config=config,
            tools=self.tools,
            observers=[call.bridge, *getattr(self, "observers", ())],
            cache_scope=self,  # sub-calls only, and only where DSPy's cache is off
            policy=child_policy_factory(  # child runs (`rlm_query`) step through `generate_code` too
                generate=self.generate_code,
                extract=child_extractor(),
                root_lm=call.root_lm,
                config=config,
                tool_docs={name: tool_doc(function) for name, function in self.tools.items()},
                sub_prompt_chars=_SUB_PROMPT_CHARS,
                budget_note=note,
                history_chars=self.history_chars,
                demo_chars=self.demo_chars,
                parse_retries=self.parse_retries,
                worked_examples=call.worked_examples,
            ),
        )
        output_fields = self.signature.output_fields
        query = self.signature.instructions or str(self.signature.signature)
        policy = PredictPolicy(
            generate=self.generate_code,
            extract=self.extractor,
            root_lm=call.root_lm,
            query=query,
            repl_guide=self.repl_guide,
            variables_info=call.variables_info,
            output_fields=output_fields,
            max_iterations=config.max_iterations,
            budget_note=note,
            history_chars=self.history_chars,
            demo_chars=self.demo_chars,
            parse_retries=self.parse_retries,
            subject=call.subject,
            worked_examples=call.worked_examples,
        )
        result = await run.execute(
            query,
            call.context,
            variables=call.variables,
            policy=policy,
            check_answer=functools.partial(outputs_from_final, output_fields),
            citations=False,
        )
        return prediction_for(result, policy, call.bridge)

    # -- save / load ----------------------------------------------------------------------------
    # The settings live on the module and are mirrored into `generate_code` (a `StepPredict`),
    # whose state DSPy saves and loads. A mirror that is not the one this module last wrote
    # was loaded from a file (or set by hand): it is applied before the next use.
    def dump_state(self, json_mode: bool = True) -> dict[str, Any]:
        """The predictors' state; `generate_code`'s includes this module's settings."""
        self._sync_in()
        state: dict[str, Any] = super().dump_state(json_mode=json_mode)
        return state

    def load_state(self, state: dict[str, Any], *, allow_unsafe_lm_state: bool = False) -> RLM:
        """Restore what `dump_state` saved, this module's settings included."""
        saved = (state.get("generate_code") or {}).get("rlm_settings")
        if isinstance(saved, dict) and "optimize_extract" in saved:
            self._set_extract(self.extractor, visible=bool(saved["optimize_extract"]))
        super().load_state(state, allow_unsafe_lm_state=allow_unsafe_lm_state)
        self._sync_in(allow_unsafe_lm_state=allow_unsafe_lm_state)
        return self

    def _settings_state(self) -> dict[str, Any]:
        return {
            "version": _SETTINGS_VERSION,
            "config": self.config.model_dump(mode="json"),
            **{name: getattr(self, name) for name in _SETTING_NAMES},
            "optimize_extract": self.optimize_extract,
            "worked_examples": self.worked_examples,
            "repl": self.repl if isinstance(self.repl, str) else None,
            "tools": sorted(self.tools),
            "sub_lm": self.sub_lm.dump_state() if self.sub_lm is not None else None,
        }

    def _sync_out(self) -> None:
        own = self.__dict__
        syncing, own["_syncing"] = own.get("_syncing"), True
        try:
            settings = self._settings_state()
        finally:
            own["_syncing"] = syncing
        own["_synced_settings"] = settings
        own["generate_code"].rlm_settings = settings

    def _sync_in(self, *, allow_unsafe_lm_state: bool = False) -> None:
        own = self.__dict__
        if "generate_code" not in own:
            return
        mirror = getattr(own["generate_code"], "rlm_settings", None)
        if not isinstance(mirror, dict) or mirror is own.get("_synced_settings") or own.get("_syncing"):
            return
        own["_syncing"] = True
        try:
            self._apply_settings(mirror, allow_unsafe_lm_state=allow_unsafe_lm_state)
            self._sync_out()
        finally:
            own["_syncing"] = False

    def _apply_settings(self, saved: dict[str, Any], *, allow_unsafe_lm_state: bool) -> None:
        if "config" in saved:
            self.config = RLMConfig.model_validate(saved["config"])
        for name in _SETTING_NAMES:
            if name in saved:
                setattr(self, name, int(saved[name]))
        self._check_settings()
        if "optimize_extract" in saved and bool(saved["optimize_extract"]) != self.optimize_extract:
            self._set_extract(self.extractor, visible=bool(saved["optimize_extract"]))
        if "worked_examples" in saved and isinstance(saved["worked_examples"], bool | None):
            self.worked_examples = saved["worked_examples"]
        if isinstance(saved.get("repl"), str):
            self.repl = saved["repl"]
        missing_tools = sorted(set(saved.get("tools") or ()) - set(self.tools))
        if missing_tools:
            logger.warning("the saved program used tools this module lacks (pass them to RLM(...)): %s", missing_tools)
        lm_state = saved.get("sub_lm")
        if lm_state and (self.sub_lm is None or self.sub_lm.dump_state() != lm_state):
            self._load_sub_lm(lm_state, allow_unsafe_lm_state=allow_unsafe_lm_state)

    def _load_sub_lm(self, lm_state: dict[str, Any], *, allow_unsafe_lm_state: bool) -> None:
        from dspy.predict.predict import _sanitize_lm_state

        try:
            clean = _sanitize_lm_state(lm_state, allow_unsafe_lm_state)
            self.sub_lm = dspy.BaseLM.load_state(clean, allow_custom_lm_class=allow_unsafe_lm_state)
        except (ValueError, TypeError, ImportError) as error:
            logger.warning("kept this module's sub_lm: the saved one cannot be loaded (%s)", error)

    # -- checks ---------------------------------------------------------------------------------
    def _check_names(self) -> None:
        inputs, outputs = self.signature.input_fields, self.signature.output_fields
        if not outputs:
            raise ConfigError("the signature needs at least one output field")
        for name in inputs:
            if name in RESERVED_NAMES or name.startswith("_"):
                raise ConfigError(f"input field {name!r} clashes with a name the REPL defines; rename it")
        clashes = sorted(set(inputs) & set(self.tools))
        if clashes:
            raise ConfigError(f"input field(s) and tool(s) share names: {', '.join(clashes)}")
        taken = sorted(set(outputs) & RESULT_FIELDS)
        if taken:
            raise ConfigError(f"output field(s) {', '.join(taken)} clash with the prediction's own fields")

    def _check_settings(self) -> None:
        if self.parse_retries < 0:
            raise ConfigError(f"parse_retries must be >= 0, got {self.parse_retries}")
        for name, low in (("history_chars", 500), ("demo_chars", 200), ("preview_chars", 0)):
            if getattr(self, name) < low:
                raise ConfigError(f"{name} must be at least {low}, got {getattr(self, name)}")
