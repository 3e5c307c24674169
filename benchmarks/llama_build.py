"""How fast the llama.cpp build this Python imports reads prompts and generates, with LocalModel's settings.

Run it once per build to compare them, e.g. the portable AVX2 wheel against the one built for
this machine's CPU (the Makefile's default, ``-march=native``):

    .venv/bin/python benchmarks/llama_build.py
    /tmp/venv-portable/bin/python benchmarks/llama_build.py   # built with CMAKE_ARGS=-DGGML_NATIVE=OFF

It needs only ``llama-cpp-python`` and the embedded model file (``rlm fetch-model``), so a second
virtual environment with another build of the wheel can run it.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Any

DEFAULT_MODEL = Path.home() / ".cache/rlm-integrations/models/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"
_PROSE = "the river bent north past the old mill where carts and mules waited for the morning ferry "
_QUESTION = "Is the writer unhappy with the product or the service? Answer yes or no.\n\nText: "


def _prompt_speed(llm: Any, tokens: int) -> float:
    """Tokens per second for reading a fresh prompt of `tokens` tokens in one batch."""
    ids = llm.tokenize((_PROSE * (tokens // 10 + 10)).encode())[:tokens]
    llm.reset()
    started = time.perf_counter()
    llm.eval(ids)
    return len(ids) / (time.perf_counter() - started)


def _generation_speed(llm: Any, tokens: int) -> float:
    """Tokens per second for a greedy reply of up to `tokens` tokens (its short prompt included)."""
    llm.reset()
    started = time.perf_counter()
    out = llm.create_completion("Write a long story about a river:", max_tokens=tokens, temperature=0)
    return int(out["usage"]["completion_tokens"]) / (time.perf_counter() - started)


def _classification_ms(llm: Any, calls: int) -> float:
    """Milliseconds per short yes/no chat call with a shared instruction prefix (a reading sub-call)."""
    started = time.perf_counter()
    for index in range(calls):
        text = f"Message {index}: the parcel from store {index} came late and the box was torn, I want a refund."
        llm.create_chat_completion(
            messages=[{"role": "user", "content": _QUESTION + text}], max_tokens=2, temperature=0
        )
    return 1000 * (time.perf_counter() - started) / calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-path", type=Path, default=DEFAULT_MODEL)
    parser.add_argument("--calls", type=int, default=30, help="short classification calls to time")
    args = parser.parse_args()

    import llama_cpp

    threads = len(os.sched_getaffinity(0))
    llm = llama_cpp.Llama(
        model_path=str(args.model_path),
        n_ctx=8192,
        n_threads=threads,
        n_threads_batch=threads,
        n_batch=512,
        verbose=False,
    )
    flags = [
        part.split("=")[0].split(":")[-1].strip()
        for part in llama_cpp.llama_print_system_info().decode().split("|")
        if part.strip().endswith("= 1")
    ]
    print(f"llama-cpp-python {llama_cpp.__version__}, {threads} threads, CPU features: {' '.join(flags)}")
    for tokens in (50, 400, 1500):
        print(f"prompt reading, {tokens:>5} tokens: {_prompt_speed(llm, tokens):7.1f} tokens/s")
    print(f"generation, 96 tokens:         {_generation_speed(llm, 96):7.1f} tokens/s")
    print(f"short yes/no chat calls:       {_classification_ms(llm, args.calls):7.0f} ms/call ({args.calls} calls)")


if __name__ == "__main__":
    main()
