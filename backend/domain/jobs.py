"""The jobs' vocabulary, shared by whoever requests, runs or reports them: the kinds of
job (bit flags, so coalesced requests add up) and the lane each kind runs in (one run at a
time per project and lane), and what a workflow needs of the job store to report its
progress. The store itself (SQLite or Redis) and the runners are in backend/jobs/."""

from __future__ import annotations

from typing import Protocol

TRAIN = 1
RESCORE = 2
PRELABEL = 4
LANES = {"prelabel": PRELABEL, "training": TRAIN | RESCORE}


def lane_of(kind: int) -> str:
    return next(lane for lane, bits in LANES.items() if bits & kind)


class StatusStore(Protocol):
    """A lane's status, read and written (JobState and RedisJobState both are one)."""

    def status(self, project: int, lane: str = "training") -> dict: ...

    def set_status(self, project: int, lane: str = "training", **fields: object) -> dict: ...
