"""The jobs' vocabulary, shared by whoever requests, runs or reports them: the kinds of
job (bit flags, so coalesced requests add up), the lane each kind runs in (one run at a
time per project and lane), a lane's status as a typed record, the retry policy, and what
a workflow needs of the job store to report its progress. The store itself (SQLite or
Redis) and the runners are in backend/jobs/."""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntFlag, StrEnum
from typing import Protocol, TypedDict, Unpack

from backend.config import Settings


class Kind(IntFlag):
    """What a request asks for; bit flags, so coalesced requests add up."""

    TRAIN = 1
    RESCORE = 2
    PRELABEL = 4


class Lane(StrEnum):
    """One run at a time per project and lane."""

    PRELABEL = "prelabel"
    TRAINING = "training"


class RunState(StrEnum):
    """A lane's `state` in its status."""

    IDLE = "idle"
    QUEUED = "queued"
    RUNNING = "running"
    RETRYING = "retrying"
    FINISHED = "finished"
    FAILED = "failed"
    INTERRUPTED = "interrupted"  # its runner died with the work still pending
    SKIPPED = "skipped"  # a training run with too few labels to train on


LANES = {Lane.PRELABEL: Kind.PRELABEL, Lane.TRAINING: Kind.TRAIN | Kind.RESCORE}


def lane_of(kind: int) -> Lane:
    return next(lane for lane, bits in LANES.items() if bits & kind)


class StatusFields(TypedDict, total=False):
    """What a run records of itself on its lane (GET /training, GET /jobs and the model's
    card read it); every writer goes through StatusStore.set_status, whose keywords are
    these fields, so a misspelt or mistyped field is a type error, not a silent new key."""

    # Every lane
    state: RunState
    phase: str | None  # the step under way, None when not running
    reason: str | None  # why it failed, was skipped, kept a version, or is retried
    requested_by: str  # the latest request's reason ("Start Training", "tasks imported")
    requested_at: float
    started: float
    finished: float
    updated: float
    attempts: int  # failed attempts of the current work (the retry policy)
    retry_at: float
    version: str | None  # the version the run made, or pre-labels with
    # Training
    promoted: bool | None
    n_examples: int
    held_out_tasks: int
    prelabels: str  # what pre-labels did so far (domain.labelings.headline)
    questions: str  # what the run did for each other question of the config, "; "-joined
    seconds: float  # from the run's start to its version serving
    epoch: int | None  # the fine-tune's progress (backend.model.trainer's events)
    epochs: int
    step: int
    steps: int
    loss: float
    val_accuracy: float
    val_macro_f1: float
    # Pre-labeling: tasks seen, to ask, pushed, failed (retried), answered off the list
    tasks: int
    to_label: int
    done: int
    failed: int
    unusable: int
    batches: int


class JobStatus(StatusFields, total=False):
    """A lane's status as shown: what runs recorded, and what the store adds."""

    pending: bool  # a request waits for the lane's runner
    annotations_since_last_run: int  # the training lane only


@dataclass(frozen=True)
class RetryPolicy:
    """How a job's failure that may pass is tried again, in both modes: the lane loop
    (backend/jobs/lane.py) and the queue's own redelivery of a message that failed before
    the loop began (Dramatiq's retries, backend/jobs/dispatch.py) follow the same one."""

    attempts: int  # JOB_RETRIES
    first_delay: float = 5.0  # seconds before the second attempt; doubled each time
    max_delay: float = 300.0

    @classmethod
    def from_settings(cls, settings: Settings) -> RetryPolicy:
        return cls(attempts=settings.job_retries)

    def delay(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number `attempt` (1, 2, ...)."""
        return min(self.max_delay, self.first_delay * 2 ** (attempt - 1))


class RequestJob(Protocol):
    """Ask for a job (backend.jobs.dispatch.Dispatcher.request is the one)."""

    def __call__(self, project: int, reason: str, *, kind: int) -> None: ...


class AnnotationCounter(Protocol):
    def count_annotation(self, project: int, threshold: int) -> bool:
        """Count a new, changed or deleted annotation; True when it reaches `threshold`
        (the count starts again at every request for a run)."""
        ...


class StatusStore(Protocol):
    """A lane's status, read and written (JobState and RedisJobState both are one)."""

    def status(self, project: int, lane: str = Lane.TRAINING) -> JobStatus: ...

    def set_status(
        self, project: int, lane: str = Lane.TRAINING, **fields: Unpack[StatusFields]
    ) -> JobStatus: ...
