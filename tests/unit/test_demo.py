"""The README's main job, run as a user would (offline: the scripted demo model)."""

import subprocess
import sys

from rlm_integrations.demo import build_haystack


def test_haystack_hides_exactly_one_fact():
    text, secret = build_haystack(200_000, seed=3)
    assert len(text) >= 200_000
    assert text.count("secret code") == 1
    assert f"The secret code is {secret}." in text


def test_demo_answers_and_names_its_model():
    env = {"PATH": "/usr/bin:/bin"}
    run = subprocess.run(
        [sys.executable, "-m", "rlm_integrations.demo"], capture_output=True, text=True, env=env, timeout=120
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "Model: the built-in scripted demo model" in run.stdout
    assert "correct" in run.stdout and "WRONG" not in run.stdout
    assert "Status: completed" in run.stdout
