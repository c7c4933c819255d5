"""Background training: triggers, coalescing, status, and the runner."""
