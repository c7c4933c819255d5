"""Predictions for tasks, and refreshing them in Label Studio after a promotion."""
