"""Working through a project's lane, in both modes: `work` inside the embedded mode's
runner process (run.py), run_message inside a `takemeter worker` in the distributed one
(whose actors declare_actors sets up).

Both work through the lane's pending bits with the same loop: a failure that may pass
(Label Studio or the LLM endpoint away, a refused request, Redis gone for a moment) is
tried again with back-off, up to JOB_RETRIES attempts, and GET /jobs says why meanwhile;
other failures are reported at once. The served model is never touched by a failure.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from typing import Unpack

from backend.config import ConfigError, Settings, load_settings
from backend.domain.jobs import Kind, Lane, RetryPolicy, RunState, StatusFields
from backend.inference.predictor import Predictor
from backend.jobs.compose import Parts
from backend.jobs.dispatch import QUEUES, actor_name
from backend.jobs.state import JobStore, Lease, LeaseLost
from backend.labelstudio import client as ls_client
from backend.labelstudio.card import for_backend as card_for_backend
from backend.workflows.prelabel import PrelabelFailures, prelabel_project
from backend.workflows.training import Runner
from backend.workflows.triggers import CLICKED

log = logging.getLogger(__name__)

DAY_MS = 24 * 3600 * 1000  # Dramatiq's time limit for one message: a long training run


def retryable(exc: Exception) -> bool:
    """Worth another attempt: the other side may be back or willing later."""
    import httpx
    import openai
    import redis
    from label_studio_sdk.core.api_error import ApiError

    if isinstance(exc, ApiError):
        return exc.status_code not in (400, 404)  # a bad request or a deleted project stays so
    return isinstance(
        exc,
        (
            PrelabelFailures,
            httpx.HTTPError,
            ConnectionError,
            TimeoutError,
            redis.RedisError,
            openai.APIConnectionError,
        ),
    )


def work(
    settings: Settings,
    state: JobStore,
    lease: Lease,
    *,
    predictor: Predictor,
    client=None,
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    """Run the lane's pending work until none is left; the lease is given up then."""
    project, lane = lease.project, lease.lane

    def report(**fields: Unpack[StatusFields]) -> None:
        state.set_status(project, lane, **fields)

    try:
        client = client or ls_client.connect(settings)
    except ConfigError as exc:
        while state.take_pending(lease):
            report(state=RunState.FAILED, phase=None, reason=str(exc), finished=time.time())
        return
    card = card_for_backend(client, settings, state, predictor)
    if lane == Lane.TRAINING:
        runner = Runner(settings, state, client=client, predictor=predictor, card=card)

        def report(**fields: Unpack[StatusFields]) -> None:  # failures reach the card too
            runner.report(project, **fields)

        def execute(bits: int) -> None:
            runner.train(project) if bits & Kind.TRAIN else runner.rescore(project)
    else:

        def report(**fields: Unpack[StatusFields]) -> None:
            card.show(project, state.set_status(project, lane, **fields), lane)

        def execute(bits: int) -> None:
            counts = prelabel_project(client, predictor, settings, project, report)
            report(state=RunState.FINISHED, phase=None, attempts=0, finished=time.time(), **counts)

    policy = RetryPolicy.from_settings(settings)
    attempts = 0
    while True:
        if lane == Lane.TRAINING:
            sleep(settle_time(state, project, settings.train_debounce))
        bits = state.take_pending(lease)
        if not bits:
            return
        try:
            execute(bits)
            attempts = 0
        except Exception as exc:
            attempts += 1
            reason = ls_client.describe_error(exc)
            if attempts >= policy.attempts or not retryable(exc):
                log.exception("project %d: %s failed", project, lane)
                report(
                    state=RunState.FAILED,
                    phase=None,
                    reason=reason,
                    attempts=attempts,
                    finished=time.time(),
                )
                attempts = 0
                continue
            delay = policy.delay(attempts)
            log.warning(
                "project %d: %s attempt %d of %d failed (%s); again in %.0f s",
                project,
                lane,
                attempts,
                policy.attempts,
                reason,
                delay,
            )
            report(
                state=RunState.RETRYING,
                phase=None,
                reason=reason,
                attempts=attempts,
                retry_at=time.time() + delay,
            )
            sleep(delay)
            state.request(project, f"attempt {attempts + 1} of {policy.attempts}", kind=bits)


def settle_time(state: JobStore, project: int, debounce: float) -> float:
    """How long to wait for a burst of annotations to settle: until `debounce` seconds
    after the latest request (a runner that took that long to start waits no more; a skewed
    clock on another host makes it wait at most `debounce`). A click is no burst: the run
    starts at once."""
    status = state.status(project, Lane.TRAINING)
    if status.get("requested_by") == CLICKED:
        return 0.0
    requested = status.get("requested_at")
    if not isinstance(requested, (int, float)):
        return debounce
    return min(debounce, max(0.0, debounce - (time.time() - requested)))


@functools.cache
def _worker_parts() -> Parts:
    """One set of parts per worker process: its models and LLM pool serve every job."""
    return Parts(load_settings())


def run_message(project: int, lane: str) -> None:
    """A Dramatiq message: run the lane unless another runner holds its lease (that
    runner sees the pending request; a lapsed lease is recovered by the reconcile)."""
    parts = _worker_parts()
    state = parts.jobs
    lease = state.acquire(project, lane)
    if lease is None:
        return
    try:
        work(parts.settings, state, lease, predictor=parts.predictor)
    except LeaseLost as exc:
        log.error("%s; stopping here, the new holder goes on", exc)
    finally:
        lease.release()


def declare_actors(broker, retry: RetryPolicy) -> None:
    """A worker's actors, one per lane, on `broker`. A message whose run fails before the
    loop above takes over (Redis away when the lease is taken, say) is redelivered on the
    same retry policy as the loop's own attempts."""
    import dramatiq

    for lane, queue in QUEUES.items():

        def run_lane_job(project: int, _lane: str = lane) -> None:
            run_message(project, _lane)

        run_lane_job.__name__ = actor_name(lane)
        dramatiq.actor(
            actor_name=actor_name(lane),
            queue_name=queue,
            broker=broker,
            max_retries=retry.attempts - 1,
            min_backoff=int(retry.first_delay * 1000),
            max_backoff=int(retry.max_delay * 1000),
            time_limit=DAY_MS,
        )(run_lane_job)
