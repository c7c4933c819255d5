"""Background jobs: pre-labeling, training and re-scoring, in the embedded or the
distributed mode (see state.py and dispatch.py)."""
