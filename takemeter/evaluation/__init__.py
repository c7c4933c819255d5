"""Held-out evaluation: fine-tuned classifier and zero-shot LLM against human labels.

Labels are plain strings. A prediction of ``None`` means the system gave no answer: it
counts as wrong everywhere and shows up as coverage below 100%.

Every interval is chosen to hold on small held-out sets: exact Clopper-Pearson for the
shares (accuracy, coverage; Wilson alongside), BCa bootstrap for F1 (which is no share),
with an exact Clopper-Pearson bound where BCa is undefined. Two systems are compared on
the same posts (McNemar, paired bootstrap of the difference), never by overlapping
intervals. Agreement among annotators: Cohen's kappa for two, Fleiss' kappa or
Krippendorff's alpha for more. The prediction score, P(the shown pre-label is right), is
measured by its Brier score, expected calibration error and a reliability diagram.

Three modules, one concern each; every public name is importable from this package:

- :mod:`~takemeter.evaluation.statistics`: pure functions of labels and predictions
  (metrics, intervals, paired tests, agreement, confusion, top confusions);
- :mod:`~takemeter.evaluation.report`: the report dict built from them (per system,
  pairs, findings, warnings, score calibration);
- :mod:`~takemeter.evaluation.render`: the report as text, markdown with PNGs, JSON.
"""

from takemeter.evaluation import render, report, statistics
from takemeter.evaluation.render import *  # noqa: F403
from takemeter.evaluation.report import *  # noqa: F403
from takemeter.evaluation.statistics import *  # noqa: F403

# Each module's own list of public names, and only those, is this package's.
__all__ = []
__all__ += statistics.__all__
__all__ += report.__all__
__all__ += render.__all__
