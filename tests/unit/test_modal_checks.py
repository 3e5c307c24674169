"""ModalREPL's checks before any network call: options, the extra, credentials; and how it calls Modal."""

from __future__ import annotations

import importlib.util
import inspect
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from rlm_integrations.errors import ConfigError, MissingExtraError
from rlm_integrations.repl import REPL
from rlm_integrations.repl.modal import ModalREPL, SandboxPool, StandInBackend
from rlm_integrations.repl.sandbox.backends import MODAL_WORKER_ROOT, ModalBackend, SandboxSpec, _ModalProcess

HAS_MODAL = importlib.util.find_spec("modal") is not None
needs_modal = pytest.mark.skipif(not HAS_MODAL, reason="the [modal] extra is not installed")


def hermetic_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """This environment without any Modal setting, with a HOME and config path that hold no token."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODAL_")}
    env.update(HOME=str(tmp_path), MODAL_CONFIG_PATH=str(tmp_path / "absent.toml"), **extra)
    return env


def run_python(code: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, env=env, timeout=60, check=False
    )


# -- options --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"cpu": 0}, "cpu"),
        ({"cpu": 100}, "cpu"),
        ({"memory_mb": 64}, "memory_mb"),
        ({"memory_mb": 1.5}, "memory_mb"),
        ({"timeout_s": 5}, "timeout_s"),
        ({"timeout_s": 90_000}, "timeout_s"),
        ({"idle_timeout_s": 5}, "idle_timeout_s"),
        ({"idle_timeout_s": 7200, "timeout_s": 3600}, "idle_timeout_s"),
        ({"app_name": ""}, "app_name"),
        ({"app_name": "has space"}, "app_name"),
        ({"python_version": "3.9"}, "python_version"),
        ({"python_version": "python3"}, "python_version"),
        ({"packages": ["numpy"]}, "policy='unrestricted'"),
        ({"packages": "numpy", "policy": "unrestricted"}, "list"),
        ({"packages": [""], "policy": "unrestricted"}, "packages"),
        ({"region": ""}, "region"),
        ({"region": []}, "region"),
        ({"policy": "open"}, "policy"),
        ({"cell_timeout_s": 0}, "cell_timeout_s"),
        ({"cell_timeout_s": 4000, "timeout_s": 3600}, "shorter than timeout_s"),
        ({"timeout_grace_s": 0}, "timeout_grace_s"),
        ({"start_timeout_s": -1}, "start_timeout_s"),
        ({"sandbox_id": ""}, "sandbox_id"),
        ({"max_output_chars": 10}, "max_output_chars"),
    ],
)
def test_bad_options_are_config_errors(options, message) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        ModalREPL(backend=StandInBackend(), **options)


def test_good_options_are_kept() -> None:
    repl = ModalREPL(
        backend=StandInBackend(),
        policy="unrestricted",
        packages=["numpy==2.1.0"],
        cpu=0.5,
        memory_mb=1024,
        timeout_s=600,
        idle_timeout_s=60,
        region=["us-east", "us-west"],
        python_version="3.12",
        app_name="my-app",
    )
    spec = repl.spec
    assert (spec.cpu, spec.memory_mb, spec.timeout_s, spec.idle_timeout_s) == (0.5, 1024, 600, 60)
    assert spec.region == ("us-east", "us-west")
    assert spec.packages == ("numpy==2.1.0",)
    assert spec.python_version == "3.12"
    assert isinstance(repl, REPL)


@pytest.mark.parametrize(
    ("options", "message"),
    [({"max_sandboxes": 0}, "max_sandboxes"), ({"keep_idle": 5, "max_sandboxes": 2}, "keep_idle")],
)
def test_bad_pool_options(options, message) -> None:
    with pytest.raises(ConfigError, match=message):
        SandboxPool(**options)


# -- the extra and the import ------------------------------------------------------------------------


def test_importing_the_module_does_not_import_modal(tmp_path) -> None:
    result = run_python(
        """
        import sys
        import rlm_integrations.repl.modal as m
        from rlm_integrations.repl import ModalREPL
        repl = ModalREPL(backend=m.StandInBackend())
        print(sorted(n for n in sys.modules if n == "modal" or n.startswith("modal.")))
        """,
        hermetic_env(tmp_path),
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_missing_modal_is_a_missing_extra_error(monkeypatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "modal" else real(name, *a))
    with pytest.raises(MissingExtraError, match=r'pip install "rlm-integrations\[modal\]"') as caught:
        ModalREPL()
    assert caught.value.extra == "modal"
    assert isinstance(caught.value, ImportError)


def test_rlm_repl_modal_without_the_extra(monkeypatch) -> None:
    from rlm_integrations import RLM, RLMConfig
    from rlm_integrations.lm import ScriptedLM

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "modal" else real(name, *a))
    rlm = RLM(ScriptedLM(["FINAL(1)"]), repl="modal")
    with pytest.raises(MissingExtraError):
        rlm.repl_factory(RLMConfig())


# -- credentials ---------------------------------------------------------------------------------------

_NO_NETWORK = """
import socket

def refuse(*args, **kwargs):
    raise AssertionError("network call attempted")

socket.socket.connect = refuse
socket.socket.connect_ex = refuse
socket.create_connection = refuse
socket.getaddrinfo = refuse
"""


@needs_modal
def test_missing_credentials_fail_before_any_network_call(tmp_path) -> None:
    result = run_python(
        _NO_NETWORK
        + """
import modal
modal.App.lookup = refuse
modal.Sandbox.create = refuse
from rlm_integrations.errors import MissingAPIKeyError
from rlm_integrations.repl.modal import ModalREPL
repl = ModalREPL()
try:
    repl.start_sync()
except MissingAPIKeyError as error:
    print("RAISED", error.env_vars)
    print(error)
""",
        hermetic_env(tmp_path),
    )
    assert result.returncode == 0, result.stderr
    assert "RAISED ['MODAL_TOKEN_ID', 'MODAL_TOKEN_SECRET']" in result.stdout
    assert "modal token set" in result.stdout
    assert "MODAL_TOKEN_ID" in result.stdout


@needs_modal
def test_rlm_with_repl_modal_reports_missing_credentials(tmp_path) -> None:
    result = run_python(
        _NO_NETWORK
        + """
from rlm_integrations import RLM
from rlm_integrations.errors import MissingAPIKeyError
from rlm_integrations.lm import ScriptedLM
rlm = RLM(ScriptedLM(["```repl\\nFINAL(1)\\n```"]), repl="modal")
try:
    rlm.completion("q", context="c")
except MissingAPIKeyError as error:
    print("RAISED", error)
""",
        hermetic_env(tmp_path),
    )
    assert result.returncode == 0, result.stderr
    assert "RAISED" in result.stdout and "modal token set" in result.stdout


@needs_modal
def test_credentials_from_the_environment_pass_the_check(tmp_path) -> None:
    result = run_python(
        _NO_NETWORK
        + """
from rlm_integrations.repl.modal import check_credentials
check_credentials()
print("OK")
""",
        hermetic_env(tmp_path, MODAL_TOKEN_ID="ak-test", MODAL_TOKEN_SECRET="as-test"),
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "OK"


@needs_modal
def test_half_a_token_is_not_enough(tmp_path) -> None:
    result = run_python(
        """
from rlm_integrations.errors import MissingAPIKeyError
from rlm_integrations.repl.modal import check_credentials
try:
    check_credentials()
except MissingAPIKeyError:
    print("RAISED")
""",
        hermetic_env(tmp_path, MODAL_TOKEN_ID="ak-test"),
    )
    assert result.stdout.strip() == "RAISED", result.stderr


# -- how the Modal backend calls Modal (no network: Modal's entry points are replaced) ----------------


class _Recorder:
    def __init__(self, result=None) -> None:
        self.calls: list[tuple[tuple[Any, ...], dict[str, Any]]] = []
        self.result = result

    def __call__(self, *args, **kwargs):
        self.calls.append((args, kwargs))
        return self.result


class _FakeSandbox:
    object_id = "sb-fake"

    def __init__(self) -> None:
        self.exec_calls: list[tuple[tuple[Any, ...], dict[str, Any]]] = []

    def exec(self, *args, **kwargs):
        self.exec_calls.append((args, kwargs))
        return object()


@needs_modal
def test_modal_backend_creates_a_locked_down_sandbox(monkeypatch) -> None:
    import modal

    sandbox = _FakeSandbox()
    lookup = _Recorder(result="the-app")
    create = _Recorder(result=sandbox)
    monkeypatch.setattr(modal.App, "lookup", lookup)
    monkeypatch.setattr(modal.Sandbox, "create", create)
    spec = ModalREPL(cpu=2.0, memory_mb=4096, timeout_s=900, idle_timeout_s=120, region="us-east").spec
    backend = ModalBackend()
    handle = backend.create(spec)
    backend.create(spec)

    assert lookup.calls == [(("rlm-integrations",), {"create_if_missing": True, "environment_name": None})]
    _args, kwargs = create.calls[0]
    assert kwargs["app"] == "the-app"
    assert kwargs["block_network"] is True
    assert kwargs["cpu"] == (2.0, 2.0) and kwargs["memory"] == (4096, 4096)
    assert kwargs["timeout"] == 900 and kwargs["idle_timeout"] == 120
    assert kwargs["region"] == "us-east"
    assert isinstance(kwargs["image"], modal.Image)
    # The arguments fit the installed Modal's signatures.
    inspect.signature(modal.Sandbox.create).bind(**kwargs)
    inspect.signature(modal.App.lookup).bind("rlm-integrations", create_if_missing=True, environment_name=None)
    # The image is built once per spec and reused.
    assert create.calls[1][1]["image"] is kwargs["image"]

    assert handle.id == "sb-fake"
    assert handle.worker_root == MODAL_WORKER_ROOT
    handle.exec("python", "-c", "pass")
    assert sandbox.exec_calls == [(("python", "-c", "pass"), {"text": False})]
    inspect.signature(modal.Sandbox.exec).bind(None, "python", "-c", "pass", text=False)


@needs_modal
def test_modal_image_pins_restricted_python_and_the_worker() -> None:
    import modal

    spec = ModalREPL(policy="unrestricted", packages=["numpy"]).spec
    image = ModalBackend().image(spec)
    assert isinstance(image, modal.Image)  # built lazily: no network until a sandbox uses it


class _FakeStdin:
    def __init__(self) -> None:
        self.buffered = 0
        self.drained: list[int] = []

    def write(self, data: bytes) -> None:
        assert self.buffered + len(data) <= 2 * 1024 * 1024, "Modal refuses more than 2 MiB undrained"
        self.buffered += len(data)

    def drain(self) -> None:
        self.drained.append(self.buffered)
        self.buffered = 0


class _FakeProcess:
    def __init__(self) -> None:
        self.stdin = _FakeStdin()


def test_modal_stdin_writes_are_drained_in_pieces() -> None:
    fake = _FakeProcess()
    process = _ModalProcess(fake)
    process.write(b"x" * (5 * 1024 * 1024 + 3))
    assert sum(fake.stdin.drained) == 5 * 1024 * 1024 + 3
    assert max(fake.stdin.drained) <= 1024 * 1024


def test_modal_errors_on_write_are_broken_pipes() -> None:
    class Gone:
        def write(self, data: bytes) -> None:
            raise RuntimeError("sandbox terminated")

    fake = _FakeProcess()
    fake.stdin = Gone()  # type: ignore[assignment]
    with pytest.raises(BrokenPipeError, match="sandbox terminated"):
        _ModalProcess(fake).write(b"x\n")


def test_spec_is_hashable_for_pooling() -> None:
    spec = ModalREPL(backend=StandInBackend()).spec
    assert isinstance(spec, SandboxSpec)
    assert hash(spec) == hash(ModalREPL(backend=StandInBackend()).spec)
    assert spec != ModalREPL(backend=StandInBackend(), cpu=2.0).spec


def test_the_image_holds_every_module_the_worker_imports() -> None:
    """The worker tree shipped to the sandbox is closed under imports (stdlib and RestrictedPython aside)."""
    import ast

    import rlm_integrations
    from rlm_integrations.repl.worker.supervisor import WORKER_MODULES

    package = Path(rlm_integrations.__file__).parent
    shipped = {name.removesuffix(".py").replace("/", ".").removesuffix(".__init__") for name in WORKER_MODULES}
    shipped = {f"rlm_integrations.{name}" if name != "__init__" else "rlm_integrations" for name in shipped}
    allowed = set(sys.stdlib_module_names) | {"RestrictedPython", "__future__"}
    for name in WORKER_MODULES:
        tree = ast.parse((package / name).read_text())
        for block in ast.walk(tree):  # imports only for type checkers never run
            if isinstance(block, ast.If) and isinstance(block.test, ast.Name) and block.test.id == "TYPE_CHECKING":
                block.body = []
        for node in ast.walk(tree):
            modules = []
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                modules = [node.module]
            elif isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            for module in modules:
                if module.startswith("rlm_integrations"):
                    assert module in shipped, (name, module)
                else:
                    assert module.split(".")[0] in allowed, (name, module)
