"""`LocalModel`: the embedded default, a small GGUF model run by llama.cpp on the CPU.

Needs the ``[local]`` extra (``llama-cpp-python``). With no `model_path`, the verified
Qwen2.5-Coder-0.5B-Instruct file (or, with ``model="qwen2.5-coder-1.5b"``, the 1.5B one) is
fetched into the cache on first use (see `rlm_integrations.lm.model_store`). The chat
template comes from the GGUF file itself.

Cancellation: a call whose caller is cancelled (a run's `timeout_s`, a cancelled task) stops
inside llama.cpp at its next step through the abort callback, instead of finishing a long
prompt in a thread nobody waits for (which also held the model, and `asyncio.run`'s exit,
for up to minutes).

Prefix caching: llama.cpp keeps the evaluated tokens of the previous prompt and only
processes the new suffix, so a growing conversation is not re-read every turn. A
sub-call on the same model replaces that state; `cache_bytes` can keep saved states to
restore by longest prefix, but it is off by default (see its note on memory).
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rlm_integrations._sync import run_sync
from rlm_integrations.errors import ConfigError, ContextWindowExceededError, MissingExtraError, ModelError
from rlm_integrations.lm.model_store import DEFAULT_MODEL, ensure_model, model_spec
from rlm_integrations.lm.protocol import Completion, Message, TokenUsage
from rlm_integrations.lm.tokens import estimate_tokens

__all__ = ["LocalModel"]

_EXACT_COUNT_LIMIT_CHARS = 200_000


def _import_llama() -> Any:
    try:
        import llama_cpp
    except ImportError as error:
        raise MissingExtraError("local", "LocalModel (llama.cpp on the CPU)") from error
    return llama_cpp


def _usable_cpus() -> int:
    """The CPUs this process may use: its affinity mask, capped by a cgroup CPU quota (containers)."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    quota = _cgroup_cpu_quota()
    return max(1, min(cpus, quota) if quota else cpus)


def _cgroup_cpu_quota(path: Path = Path("/sys/fs/cgroup/cpu.max")) -> int | None:
    """The cgroup v2 CPU quota in whole CPUs (``docker --cpus=2`` gives 2), None when unlimited or unknown."""
    try:
        quota, period = path.read_text().split()[:2]
    except (OSError, ValueError):
        return None
    if quota == "max" or not quota.isdigit() or not period.isdigit() or int(period) == 0:
        return None
    return max(1, -(-int(quota) // int(period)))


class _AbortSwitch:
    """Stops a running llama.cpp call from another thread (llama.cpp's abort callback).

    The callback is installed only while a cancelled call runs: llama.cpp calls it after
    every graph node (about a thousand times a token), each time taking the GIL.
    It holds no reference to the model, so the model is freed as soon as it is dropped.
    """

    def __init__(self, llama_cpp: Any, ctx: Any) -> None:
        self._llama_cpp = llama_cpp
        self._ctx = ctx
        self.running: threading.Event | None = None
        """The cancel flag of the call that holds the model now (None between calls)."""
        self._installed = False

        def should_abort(_data: Any) -> bool:
            flag = self.running
            return flag is not None and flag.is_set()

        self._callback = llama_cpp.ggml_abort_callback(should_abort)  # kept alive: C holds a pointer to it
        self._no_callback = llama_cpp.ggml_abort_callback()  # a NULL function pointer

    def stop(self, cancelled: threading.Event) -> None:
        """Abort the running call if it is the one whose flag is `cancelled` (from any thread)."""
        if self.running is cancelled and not self._installed:
            self._installed = True
            self._llama_cpp.llama_set_abort_callback(self._ctx, self._callback, ctypes.c_void_p(0))

    def done(self) -> None:
        """The call ended: remove the callback if it was installed."""
        self.running = None
        if self._installed:
            self._installed = False
            self._llama_cpp.llama_set_abort_callback(self._ctx, self._no_callback, ctypes.c_void_p(0))


class LocalModel:
    """A GGUF chat model on the CPU through llama.cpp; the no-API-key default.

    Args:
        model_path: a GGUF file; None fetches and verifies a known model into the cache.
        model: which known model to fetch when `model_path` is None:
            ``"qwen2.5-coder-0.5b"`` (the default, 491 MB) or ``"qwen2.5-coder-1.5b"``
            (1.1 GB, slower, better at following the REPL format).
        n_ctx: the context window in tokens (the default model supports 32,768).
        n_threads: CPU threads for prompt reading and generation (default: every CPU this
            process may use; llama.cpp's own default of half the cores makes generation about
            1.7x slower on a 2-core machine). Lower it when other work shares the CPUs.
        max_tokens: default cap on generated tokens per call.
        temperature: sampling temperature (0 is greedy and repeatable).
        seed: sampling seed.
        cache_bytes: memory for saved prompt states restored by longest prefix (0, the
            default, disables them). llama-cpp-python's saved states also hold the logits
            of every prompt token (about 0.6 MB per token for this vocabulary), which its
            cache does not count against this capacity, so a long-lived process grows
            without bound: enable only for short sessions.
        name: the model's name in usage reports.
        stop: strings that end a reply. The default stops where a small model starts to
            invent the output of the code it just wrote (the REPL supplies the real one).

    Raises:
        ConfigError: `model` is not a known model, or both `model` and `model_path` were given.
        MissingExtraError: llama-cpp-python is not installed (`pip install "rlm-integrations[local]"`).
        ModelFetchError: the model could not be fetched or did not verify.
    """

    prefers_worked_example = True
    """Small models follow the REPL format only after a demonstrated exchange (see `ChatPolicy`)."""

    def __init__(
        self,
        model_path: str | Path | None = None,
        *,
        model: str | None = None,
        n_ctx: int = 32_768,
        n_threads: int | None = None,
        max_tokens: int = 768,
        temperature: float = 0.0,
        seed: int = 0,
        cache_bytes: int = 0,
        name: str | None = None,
        stop: tuple[str, ...] = ("\nOutput:", "\nOutput (", "\n```\nOutput"),
    ) -> None:
        if model is not None and model_path is not None:
            raise ConfigError("give LocalModel either model= (a known model's name) or model_path= (a GGUF file)")
        spec = model_spec(model or DEFAULT_MODEL) if model_path is None else None
        llama_cpp = _import_llama()
        path = Path(model_path) if model_path is not None else ensure_model(spec) if spec else None
        if path is None or not path.is_file():
            raise FileNotFoundError(f"no GGUF model file at {path}")
        self.path = path
        self.name = name or (spec.name if spec is not None else path.stem)
        self.context_window: int | None = n_ctx
        self.max_tokens = max_tokens
        self.temperature = temperature
        self.stop = tuple(stop)
        self._lock = threading.Lock()
        """Held for a whole completion: one llama.cpp context serves one call at a time."""
        self._tokenize_lock = threading.Lock()
        """Counting tokens reads only the vocabulary, so it does not wait for a completion in progress
        (the engine counts a sub-prompt on its event loop: waiting there stalled every run's clock)."""
        threads = n_threads or _usable_cpus()
        self._llama = llama_cpp.Llama(
            model_path=str(path),
            n_ctx=n_ctx,
            n_threads=threads,
            n_threads_batch=threads,
            n_batch=512,
            seed=seed,
            verbose=False,
        )
        if cache_bytes > 0:
            self._llama.set_cache(llama_cpp.LlamaRAMCache(capacity_bytes=cache_bytes))
        self._abort = _AbortSwitch(llama_cpp, self._llama.ctx)

    def count_tokens(self, text: str) -> int:
        """Exact token count for texts up to 200K characters, an estimate beyond."""
        if len(text) > _EXACT_COUNT_LIMIT_CHARS:
            return estimate_tokens(text)
        with self._tokenize_lock:
            return len(self._llama.tokenize(text.encode("utf-8", "ignore"), add_bos=False, special=False))

    async def acomplete(self, messages: Sequence[Message], **params: Any) -> Completion:
        """Generate a reply (in a thread, so the event loop stays free); cancelling stops it inside llama.cpp."""
        cancelled = threading.Event()
        try:
            return await asyncio.to_thread(self._complete_blocking, list(messages), params, cancelled)
        except asyncio.CancelledError:
            cancelled.set()  # a call still waiting for the model never starts
            self._abort.stop(cancelled)  # a running one stops at llama.cpp's next step
            raise

    def complete(self, messages: Sequence[Message], **params: Any) -> Completion:
        """Blocking form of `acomplete`."""
        return run_sync(self.acomplete(messages, **params))

    def _complete_blocking(
        self, messages: list[Message], params: dict[str, Any], cancelled: threading.Event
    ) -> Completion:
        max_tokens = int(params.pop("max_tokens", None) or self.max_tokens)
        params.setdefault("stop", list(self.stop))
        temperature = float(params.pop("temperature", self.temperature))
        params.pop("timeout", None)
        window = self.context_window or 0
        with self._lock:
            if cancelled.is_set():
                raise ModelError(f"{self.name}: the call was cancelled before it started", model=self.name)
            self._abort.running = cancelled
            try:
                response = self._llama.create_chat_completion(
                    messages=[dict(m) for m in messages],
                    max_tokens=max_tokens,
                    temperature=temperature,
                    **params,
                )
            except ValueError as error:
                if "context window" in str(error).lower() or "exceed" in str(error).lower():
                    raise ContextWindowExceededError(
                        f"{self.name}: the prompt does not fit the {window:,}-token window ({error})",
                        model=self.name,
                        prompt_tokens=0,
                        max_tokens=window,
                    ) from error
                raise ModelError(f"{self.name} failed: {error}", model=self.name) from error
            except RuntimeError as error:
                if cancelled.is_set():
                    raise ModelError(f"{self.name}: the call was cancelled", model=self.name) from error
                raise ModelError(f"{self.name} failed: {error}", model=self.name) from error
            finally:
                self._abort.done()
        choice = response["choices"][0]
        text = choice["message"].get("content") or ""
        usage = response.get("usage") or {}
        return Completion(
            text=text,
            usage=TokenUsage(
                prompt_tokens=int(usage.get("prompt_tokens", 0)),
                completion_tokens=int(usage.get("completion_tokens", 0)),
                cost_usd=0.0,
                calls=1,
            ),
            model=self.name,
        )
