"""The `takemeter` command: project setup, export, evaluation, the local stack."""

import os

# Loading and saving models must not bury the tools' own output and progress bars.
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
