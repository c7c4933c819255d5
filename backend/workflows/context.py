"""A run's view of its project, made once when the run starts and handed to each step
(calibrate, fit, judge, publish, re-score) instead of each step looking it up again."""

from __future__ import annotations

from dataclasses import dataclass

from backend.domain import calibration
from backend.domain.calibration import Calibrator
from backend.domain.taxonomy import Taxonomy
from backend.inference.predictor import Predictor
from backend.model.registry import Registry


@dataclass(frozen=True)
class ProjectRun:
    project: int
    taxonomy: Taxonomy  # the labels, from the project's label config
    registry: Registry  # its versions, calibrator and review queue on disk

    @classmethod
    def of(cls, predictor: Predictor, project: int, taxonomy: Taxonomy) -> ProjectRun:
        """With the registry the predictor serves from, so both see the same versions."""
        return cls(project, taxonomy, predictor.registry(project))

    def serving(self) -> str | None:
        """The version serving now. Read each time: a run's head may be promoted before
        its fine-tune is judged."""
        return self.registry.serving()

    def calibrator(self) -> Calibrator:
        """The stored score calibrator (the documented prior when there is none)."""
        return calibration.load(self.registry.read_calibration())
