"""The fine-tuned classifier: training, serving, and the versions on disk."""
