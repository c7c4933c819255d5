"""Background jobs: the workflows (backend/workflows/) run as jobs, in the embedded or the
distributed mode (see state.py and dispatch.py)."""
