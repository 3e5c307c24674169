"""The REPL backend registry: `RLM(repl="name")` resolves names through it; core names no backend."""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import rlm_integrations
from rlm_integrations import RLM, RLMConfig
from rlm_integrations.errors import ConfigError, UsageError
from rlm_integrations.lm import ScriptedLM
from rlm_integrations.repl import (
    LocalREPL,
    ModalREPL,
    UnknownBackendError,
    backend_names,
    register_backend,
    resolve_backend,
    unregister_backend,
)
from rlm_integrations.repl.protocol import REPL
from rlm_integrations.testing import FakeREPL

PACKAGE = Path(rlm_integrations.__file__).parent


@pytest.fixture
def fake_backend() -> Iterator[list[FakeREPL]]:
    """Register FakeREPL as "fake" for one test; the REPLs it built are listed."""
    built: list[FakeREPL] = []

    def factory(config: RLMConfig) -> REPL:
        repl = FakeREPL(max_output_chars=config.max_output_chars)
        built.append(repl)
        return repl

    register_backend("fake", factory, replace=True)
    yield built
    unregister_backend("fake")


def test_local_and_modal_are_registered() -> None:
    assert {"local", "modal"} <= set(backend_names())
    config = RLMConfig(cell_timeout_s=7.0, max_output_chars=1234, memory_limit_mb=256)
    local = resolve_backend("local")(config)
    assert isinstance(local, LocalREPL)
    assert (local.cell_timeout_s, local.max_output_chars, local.memory_limit_mb) == (7.0, 1234, 256)
    modal = resolve_backend("modal")(config)
    assert isinstance(modal, ModalREPL)
    assert (modal.cell_timeout_s, modal.max_output_chars, modal.memory_limit_mb) == (7.0, 1234, 256)


def test_registering_and_resolving_modal_imports_neither_modal_nor_the_worker() -> None:
    code = (
        "import sys\n"
        "from rlm_integrations import RLM\n"
        "from rlm_integrations.lm import ScriptedLM\n"
        "from rlm_integrations.repl import backend_names, resolve_backend\n"
        "assert 'modal' in backend_names()\n"
        "resolve_backend('modal')\n"
        "RLM(ScriptedLM(['x']), repl='modal')\n"
        "names = ('modal', 'rlm_integrations.repl.modal', 'rlm_integrations.repl.local')\n"
        "heavy = [m for m in names if m in sys.modules]\n"
        "print(heavy)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_rlm_runs_on_a_registered_backend(fake_backend: list[FakeREPL]) -> None:
    model = ScriptedLM(["```repl\nwords = context.split()\nFINAL(len(words))\n```"])
    rlm = RLM(model, repl="fake", config=RLMConfig(max_output_chars=500))
    result = rlm.completion("How many words?", context="one two three")
    assert result.answer == 3
    assert len(fake_backend) == 1 and fake_backend[0].max_output_chars == 500


def test_unknown_name_is_a_typed_error_listing_the_registered_names(fake_backend: list[FakeREPL]) -> None:
    with pytest.raises(UnknownBackendError) as caught:
        RLM(ScriptedLM(["x"]), repl="lokal")
    error = caught.value
    assert isinstance(error, ConfigError)
    assert error.name == "lokal" and {"local", "modal", "fake"} <= set(error.known)
    assert "'lokal'" in str(error) and "fake, local, modal" in str(error) and "register_backend" in str(error)
    with pytest.raises(UnknownBackendError):
        resolve_backend(None)  # type: ignore[arg-type]


def test_a_callable_is_still_accepted() -> None:
    built: list[FakeREPL] = []

    def factory(config: RLMConfig) -> REPL:
        built.append(FakeREPL())
        return built[-1]

    result = RLM(ScriptedLM(["```repl\nFINAL(context * 2)\n```"]), repl=factory).completion("q", context="ab")
    assert result.answer == "abab" and len(built) == 1


def test_registration_is_checked(fake_backend: list[FakeREPL]) -> None:
    with pytest.raises(UsageError, match="already registered"):
        register_backend("fake", lambda config: FakeREPL())
    with pytest.raises(UsageError, match="callable"):
        register_backend("other", "not a factory")  # type: ignore[arg-type]
    for bad in ("", " spaced ", 3):
        with pytest.raises(UsageError, match="backend name"):
            register_backend(bad, lambda config: FakeREPL())  # type: ignore[arg-type]
    assert "other" not in backend_names()


def test_replace_swaps_a_backend_and_unregister_removes_it(fake_backend: list[FakeREPL]) -> None:
    def second(config: RLMConfig) -> REPL:
        return FakeREPL(max_output_chars=999)

    register_backend("fake", second, replace=True)
    assert resolve_backend("fake") is second
    unregister_backend("fake")
    assert "fake" not in backend_names()
    unregister_backend("fake")  # unknown names are ignored


def test_core_names_no_concrete_backend() -> None:
    """Core reaches REPLs only through the protocol and the registry."""
    offenders = []
    for path in sorted((PACKAGE / "core").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module in {
                "rlm_integrations.repl.local",
                "rlm_integrations.repl.modal",
            }:
                offenders.append(f"{path.name}: {node.module}")
    assert offenders == []
