"""`python -m rlm_integrations.cli`."""

from rlm_integrations.cli import run

run()
