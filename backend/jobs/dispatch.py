"""Getting jobs run, in one of two modes chosen by configuration.

Embedded (no REDIS_URL): a runner process per project and lane on this machine
(`python -m backend.jobs.run`), started by whoever triggers the job. No server needed;
what `make up` and the single-machine tests use. Dramatiq, the queue library of the
distributed mode, has no broker that works without a server, so this mode stays.

Distributed (REDIS_URL, BROKER_URL): a Dramatiq message on the lane's queue, picked up by
a `takemeter worker` on any host. Redis or RabbitMQ keep a message until a worker has
finished it; a killed worker's messages go to another. Training has a queue of its own,
so GPU hosts can take only training (`takemeter worker --queues training`).

Either way the job state (state.py) keeps one run per project and lane at a time.
"""

from __future__ import annotations

import fcntl
import functools
import logging
import os
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

from backend.config import Settings
from backend.domain.jobs import Lane, lane_of
from backend.jobs.state import FileLease, JobStore

log = logging.getLogger(__name__)

QUEUES = {Lane.PRELABEL: "takemeter-prelabel", Lane.TRAINING: "takemeter-training"}
LOCK_FD = "--lock-fd="


class Dispatcher:
    """Record a request and make sure something runs it."""

    def __init__(
        self,
        settings: Settings,
        state: JobStore,
        *,
        start_lane: Callable[[int, str], object] | None = None,
    ) -> None:
        self.settings = settings
        self.state = state
        self.start_lane = start_lane  # replaces the mode's way (the service's tests)

    @property
    def mode(self) -> str:
        return "distributed" if self.settings.broker_url else "embedded"

    def request(self, project: int, reason: str, *, kind: int) -> None:
        """The one way to ask for a job: recorded (coalescing with what is pending), then
        the lane's runner started or its queue message sent."""
        self.state.request(project, reason, kind=kind)
        self.kick(project, lane_of(kind))

    def kick(self, project: int, lane: str) -> bool:
        if self.start_lane is not None:
            self.start_lane(project, lane)
            return True
        if self.settings.broker_url:
            send(self.settings.broker_url, project, lane)
            return True
        return start_runner(self.settings, self.state, project, lane)

    def recover(self) -> list[tuple[int, str]]:
        """Kick every lane with work and no runner: requests that waited for a free
        runner, and runs a dead process left unfinished."""
        kicked = []
        for project, lane, pending, running in self.state.lanes():
            idle = (pending or running) and not self.state.busy(project, lane)
            if idle and self.kick(project, lane):
                kicked.append((project, lane))
        return kicked


def start_runner(settings: Settings, state: JobStore, project: int, lane: str) -> bool:
    """Start a runner process for the project's lane unless one is alive or
    MAX_TRAINING_RUNNERS of the lane are busy (the request then waits: a runner that
    finishes, or the reconcile, starts it). A fresh interpreter (spawn, not fork): CUDA and
    forked gunicorn workers do not mix.

    The lease (an flock) is taken here and handed to the runner (--lock-fd), so a runner
    counts as busy from its start, not seconds later once its imports are done; and one
    start at a time (runners.lock) across processes, so the count is right."""
    with open(settings.model_dir / "runners.lock", "a+") as starting:
        fcntl.flock(starting, fcntl.LOCK_EX)
        if state.busy(project, lane):
            return False
        busy = state.live_runners(lane)
        if busy >= settings.max_training_runners:
            log.info(
                "project %d: %s waits, %d of MAX_TRAINING_RUNNERS=%d runners busy",
                project,
                lane,
                busy,
                settings.max_training_runners,
            )
            return False
        lease = state.acquire(project, lane, wait=0)
        if lease is None:
            return False  # a runner started by hand took it meanwhile
        if not isinstance(lease, FileLease):  # a Redis store means BROKER_URL: workers run
            lease.release()
            raise TypeError("runner processes are started only in the embedded mode")
        try:
            log_dir = settings.model_dir / "logs"
            log_dir.mkdir(parents=True, exist_ok=True)
            fd = lease.handle.fileno()
            with open(log_dir / f"{lane}-{project}.log", "ab") as log_file:
                process = subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "backend.jobs.run",
                        lane,
                        str(project),
                        f"{LOCK_FD}{fd}",
                    ],
                    pass_fds=(fd,),
                    stdout=log_file,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    start_new_session=True,
                    env=os.environ.copy(),
                    cwd=Path(__file__).resolve().parents[2],
                )
        finally:
            # Closing this copy keeps the flock: the runner's copy holds it until done.
            lease.handle.close()
    # Reap it when it ends, so finished runners leave no zombies behind.
    threading.Thread(target=process.wait, daemon=True).start()
    return True


@functools.cache
def broker(broker_url: str):
    """The Dramatiq broker for BROKER_URL, once per process."""
    import dramatiq
    from dramatiq.broker import Broker

    if broker_url.startswith("amqp"):
        from dramatiq.brokers.rabbitmq import RabbitmqBroker

        made: Broker = RabbitmqBroker(url=broker_url)
    else:
        from dramatiq.brokers.redis import MAINTENANCE_SCALE, RedisBroker

        # A worker that stops beating for 15 s is dead: its unfinished messages go back
        # to the queue at the next maintenance, which runs on 1 in 20 fetches.
        made = RedisBroker(
            url=broker_url, heartbeat_timeout=15000, maintenance_chance=MAINTENANCE_SCALE // 20
        )
    dramatiq.set_broker(made)
    return made


def actor_name(lane: str) -> str:
    return f"takemeter_{lane}"


def send(broker_url: str, project: int, lane: str) -> None:
    """A message for the lane's actor. Sent by name: the sender needs no actor body, the
    workers declare the actors (backend.jobs.lane.declare_actors) and run them."""
    import dramatiq

    broker(broker_url).enqueue(
        dramatiq.Message(
            queue_name=QUEUES[Lane(lane)],
            actor_name=actor_name(lane),
            args=(project,),
            kwargs={},
            options={},
        )
    )
