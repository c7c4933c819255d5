"""The jobs' vocabulary, shared by whoever requests, runs or reports them: the kinds of
job (bit flags, so coalesced requests add up) and the lane each kind runs in (one run at a
time per project and lane), and what a workflow needs of the job store to report its
progress. The store itself (SQLite or Redis) and the runners are in backend/jobs/."""

from __future__ import annotations

from enum import IntFlag, StrEnum
from typing import Protocol


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


LANES = {Lane.PRELABEL: Kind.PRELABEL, Lane.TRAINING: Kind.TRAIN | Kind.RESCORE}


def lane_of(kind: int) -> Lane:
    return next(lane for lane, bits in LANES.items() if bits & kind)


class StatusStore(Protocol):
    """A lane's status, read and written (JobState and RedisJobState both are one)."""

    def status(self, project: int, lane: str = Lane.TRAINING) -> dict: ...

    def set_status(self, project: int, lane: str = Lane.TRAINING, **fields: object) -> dict: ...
