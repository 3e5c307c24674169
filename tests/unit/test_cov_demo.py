"""`python -m rlm_integrations.demo` in this process, so its module and the CLI's demo command are measured.

`test_demo.py` runs the same demo as a user would, in a child process, which coverage does not
follow; these tests run it in the test process instead (scripted demo model, a real worker REPL).
"""

from __future__ import annotations

import runpy
import sys

import pytest

from rlm_integrations.demo import build_haystack
from rlm_integrations.demo.__main__ import main


def test_module_main_runs_rlm_demo_with_its_arguments(capfd: pytest.CaptureFixture[str]) -> None:
    text, secret = build_haystack(20_000, seed=3)

    code = main(["--model", "scripted-demo", "--size", "20000", "--seed", "3"])

    err = capfd.readouterr().err
    assert code == 0, err
    assert "Model: the scripted demo model" in err
    assert f"Context: {len(text):,} characters" in err  # --size and --seed reached the demo
    assert f"expected '{secret}'" in err and "correct" in err and "WRONG" not in err
    assert "re.finditer" in err  # the cells the REPL ran are shown


def test_module_main_passes_usage_errors_through(capfd: pytest.CaptureFixture[str]) -> None:
    assert main(["--model", "scripted-demo", "--size", "999"]) == 2  # below the demo's minimum size
    err = capfd.readouterr().err
    assert "Invalid value for '--size'" in err
    assert "Model:" not in err  # refused before anything ran


def test_running_the_module_exits_with_the_demo_code(
    monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delitem(sys.modules, "rlm_integrations.demo.__main__", raising=False)  # runpy runs it afresh
    monkeypatch.setattr(sys, "argv", ["rlm_integrations.demo", "--model", "scripted-demo", "--size", "999"])
    with pytest.raises(SystemExit) as exited:
        runpy.run_module("rlm_integrations.demo", run_name="__main__")
    assert exited.value.code == 2
    err = capfd.readouterr().err
    assert "Invalid value for '--size'" in err and "rlm demo" in err  # sys.argv went to `rlm demo`
