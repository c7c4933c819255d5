"""Predictions for tasks: both opinions (the serving model and the LLM) -> a pre-label."""
