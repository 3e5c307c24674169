"""The public surface is frozen here: a change to it must be deliberate."""

import ast
import pathlib
import subprocess
import sys

import rlm_integrations
import rlm_integrations.lm
import rlm_integrations.repl

PACKAGE = pathlib.Path(rlm_integrations.__file__).parent


def test_top_level_exports():
    assert sorted(rlm_integrations.__all__) == [
        "Citation",
        "RLM",
        "RLMConfig",
        "RLMResult",
        "RLMSession",
        "__version__",
    ]
    for name in ("Citation", "RLM", "RLMConfig", "RLMResult", "RLMSession"):
        assert getattr(rlm_integrations, name).__name__ == name


def test_repl_and_lm_exports_resolve():
    for name in ("LocalREPL", "CellResult", "FinalAnswer", "REPL", "prewarm"):
        assert getattr(rlm_integrations.repl, name) is not None
    for name in ("LiteLLMModel", "ScriptedLM", "LanguageModel", "Completion", "TokenUsage"):
        assert getattr(rlm_integrations.lm, name) is not None


def test_core_imports_no_framework():
    banned = {"dspy", "langchain", "langchain_core", "langgraph", "modal"}
    offenders = []
    for path in (PACKAGE / "core").rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            offenders += [(path.name, n) for n in names if n.split(".")[0] in banned]
    assert offenders == []


def test_importing_the_package_is_lazy():
    code = (
        "import sys, rlm_integrations, rlm_integrations.repl, rlm_integrations.lm; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('litellm', 'RestrictedPython')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "litellm" not in out
    assert "RestrictedPython" not in out


def test_worker_modules_use_only_stdlib_and_restrictedpython():
    from rlm_integrations.repl.worker.supervisor import WORKER_MODULES

    # pyseccomp is the worker's one third-party import besides RestrictedPython (its lockdown).
    allowed_roots = set(sys.stdlib_module_names) | {"RestrictedPython", "pyseccomp", "rlm_integrations", "__future__"}
    modules = [name for name in WORKER_MODULES if name.startswith("repl/") and not name.endswith("/__init__.py")]
    assert {"repl/worker/main.py", "repl/worker/policy.py", "repl/worker/lockdown.py"} <= set(modules)
    for name in modules:
        tree = ast.parse((PACKAGE / name).read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module:
                assert node.module.split(".")[0] in allowed_roots, (name, node.module)
                if node.module.startswith("rlm_integrations"):
                    shipped = ("rlm_integrations.repl.wire.", "rlm_integrations.repl.worker.")
                    assert node.module.startswith(shipped), (name, node.module)
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    assert alias.name.split(".")[0] in allowed_roots, (name, alias.name)


def test_huge_final_values_cross_to_the_host_bounded():
    from rlm_integrations.repl.wire.codec import MAX_EXACT_CHARS, decode_value, encode_value

    value, exact = decode_value(encode_value("a" * (MAX_EXACT_CHARS + 10)))
    assert not exact
    assert len(value) < 200_000
    assert "characters cut" in value
    assert decode_value(encode_value(("x", 1, {2}))) == (("x", 1, {2}), True)
