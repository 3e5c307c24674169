"""The RLM engine: loop, prompts, parsing, budgets, events and trajectory. Imports no framework."""
