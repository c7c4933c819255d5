"""Job progress on Label Studio's ML backend card (project Settings > Model).

Label Studio 1.23 gives no training feedback of its own ("Start Training" answers
"Request Sent! Response: {}"), and its backend card shows the connection's title, state,
URL and age, not its description. So the jobs' status goes into the title, after the title
the user gave the connection ("TakeMeter · training: epoch 2 of 4, loss 0.531 ·
pre-labels accepted 64% (32 of 50), 6.5 s saved a task (9 blind, 50 timed) ·
pre-labeling: 1,200 of 20,000 tasks"), and the same text into the description, where
the API shows it.

`status_text` (training) and `prelabel_text` are pure functions of the status dicts the
jobs record (GET /jobs); `Card` finds this backend's connections to a project and updates
them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable

from backend.domain.jobs import JobStatus, Lane, RunState
from backend.labelstudio import client as ls_client

log = logging.getLogger(__name__)

SEPARATOR = " · "  # between the user's title and the status; the status never holds it
MAX_CHARS = 300
EVERY_SECONDS = 15.0  # at most one update per this while a phase ticks (epochs)
RETRY_SECONDS = 60.0  # after a failure, the next try waits this long
# A card is not worth stalling a training run for: short, no retries.
REQUEST = {"timeout_in_seconds": 10, "max_retries": 0}
DEFAULT_TITLE = "TakeMeter"


def _count(n: object, one: str, many: str | None = None) -> str:
    return f"{n} {one if n == 1 else (many or one + 's')}"


def _held_out(status: JobStatus) -> str:
    held = status.get("held_out_tasks")
    if not isinstance(held, int):
        return ""
    return f"; {_count(held, 'task')} held out for evaluation"


def _running(status: JobStatus) -> str:
    phase = status.get("phase") or "starting"
    version = status.get("version")
    kind = phase.partition(" (")[2].rstrip(")")  # "training (head)": a run's candidates
    if phase == "training (head)":
        examples = status.get("n_examples")
        on = f" on {_count(examples, 'training annotation')}" if examples else ""
        return f"fitting the fast head{on}"
    if phase.startswith("training"):
        epoch, epochs, loss = status.get("epoch"), status.get("epochs"), status.get("loss")
        examples = status.get("n_examples")
        on = f" on {_count(examples, 'training annotation')}" if examples else ""
        what = "fine-tuning" if kind == "fine-tune" else "training"
        if epoch is None:
            return f"{what}{on}: starting"
        text = f"{what}: epoch {epoch} of {epochs}" if epochs else f"{what}: epoch {epoch}"
        if isinstance(loss, (int, float)):
            text += f", loss {loss:.3f}"
        accuracy = status.get("val_accuracy")
        if isinstance(accuracy, (int, float)):
            text += f", validation accuracy {accuracy:.0%}"
        return text + (f" ({_count(examples, 'training annotation')})" if examples else "")
    if phase.startswith("validating"):
        what = {"head": "the head", "fine-tune": "the fine-tune"}.get(kind, "the new version")
        return f"judging {what} against the serving version and the LLM"
    if phase.startswith("re-scoring") and version:
        return f"{phase} with {version}"
    return f"training: {phase}"


def status_text(status: JobStatus) -> str:
    """One line for the card: queued, running (epoch, loss), promoted with its figures,
    kept and why, skipped and why (with the held-out count), failed and why. Empty for
    a status with nothing to show (no run yet)."""
    state = status.get("state")
    version = status.get("version")
    reason = status.get("reason")
    if state == RunState.QUEUED:
        by = status.get("requested_by")
        text = f"queued ({by})" if by else "queued"
    elif state == RunState.RUNNING:
        text = _running(status)
    elif state == RunState.FINISHED and status.get("promoted") and version:
        if reason:
            text = f"promoted {version}: {reason}"
        else:  # a re-score after a promotion by hand records no verdict
            text = f"serving {version}; unlabeled tasks re-scored"
        seconds = status.get("seconds")
        if isinstance(seconds, (int, float)):
            text += f" ({seconds:.0f} s)"
    elif state == RunState.FINISHED and version:
        text = f"{version} {reason}" if reason else f"{version} kept, not promoted"
    elif state == "skipped":
        text = f"skipped: {reason or 'nothing to train on'}{_held_out(status)}"
    elif state in (RunState.FAILED, RunState.INTERRUPTED):
        text = f"{state}: {reason}" if reason else state
    elif state == RunState.RETRYING:
        attempts = status.get("attempts")
        text = f"retrying after attempt {attempts}: {reason}" if attempts else "retrying"
    else:
        return ""
    return _one_line(text)


def prelabel_text(status: JobStatus) -> str:
    """One line for the pre-labeling job: queued, running (done of to label), retrying
    and why, failed and why, or what the last run labeled. Empty when a run found nothing
    to label, or before any run."""
    state, reason = status.get("state"), status.get("reason")
    done, todo = status.get("done") or 0, status.get("to_label")
    trouble = [
        _count(n, one, many)
        for n, one, many in (
            (status.get("failed"), "LLM failure", None),
            (status.get("unusable"), "answer off the list", "answers off the list"),
        )
        if isinstance(n, int) and n
    ]
    if state == RunState.QUEUED:
        text = "pre-labeling queued"
    elif state == RunState.RUNNING and todo == 0:
        return ""  # a run that finds nothing new is not worth a line
    elif state == RunState.RUNNING and isinstance(todo, int):
        text = f"pre-labeling: {done:,} of {todo:,} tasks"
    elif state == RunState.RUNNING:
        text = "pre-labeling: listing tasks"
    elif state == RunState.RETRYING:
        text = f"pre-labeling: retrying after attempt {status.get('attempts')}: {reason}"
    elif state == RunState.FAILED:
        text = f"pre-labeling failed: {reason}"
    elif state == RunState.FINISHED and todo:
        text = f"pre-labeled {_count(done, 'task')}"
    else:
        return ""
    return _one_line(text + (f" ({', '.join(trouble)})" if trouble else ""))


def card_text(training: JobStatus, prelabel: JobStatus) -> str:
    """The card's status: the training job's, its other questions' versions (a config of
    several), what pre-labels did so far (the last run counted it), then the pre-labeling
    job's."""
    others = [
        p
        for p in (
            _one_line(training.get("questions") or ""),
            _one_line(training.get("prelabels") or ""),
            prelabel_text(prelabel),
        )
        if p
    ]
    # A long reason is cut, not the short parts after it.
    room = max(MAX_CHARS // 3, MAX_CHARS - sum(len(p) + len(SEPARATOR) for p in others))
    parts = [_one_line(status_text(training), limit=room), *others]
    return _one_line(SEPARATOR.join(p for p in parts if p), joined=True)


def _one_line(text: str, *, joined: bool = False, limit: int = MAX_CHARS) -> str:
    """Bounded, on one line, without the separator (unless it joins the parts)."""
    if not joined:
        text = text.replace(SEPARATOR.strip(), "-")
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def base_title(title: str | None) -> str:
    """The title the user gave the connection, without a status written earlier."""
    base = (title or "").split(SEPARATOR, 1)[0].strip()
    return base or DEFAULT_TITLE


class Card:
    """Writes the jobs' status onto this backend's ML connections of a project. A backend
    is this one when its URL is `backend_url` (BACKEND_URL); without it, when the model
    version Label Studio last got from it is one of `own_versions(project)`, or when it is
    the project's only connection. The other lane's status comes from `lane_status` (the
    job state: each lane runs in its own process). Same-phase updates (epochs, batches)
    are throttled; a Label Studio that fails is logged once and never raises."""

    def __init__(
        self,
        client,
        *,
        backend_url: str | None = None,
        own_versions: Callable[[int], Iterable[str]] | None = None,
        lane_status: Callable[[int, str], JobStatus] | None = None,
        every: float = EVERY_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client = client
        self.backend_url = backend_url.rstrip("/") if backend_url else None
        self.own_versions = own_versions
        self.lane_status = lane_status
        self.every = every
        self.clock = clock
        self._shown: dict[int, tuple[str, tuple, float]] = {}  # project: text, phase, when
        self._failed_at: float | None = None

    def connections(self, project: int) -> list:
        backends = list(self.client.ml.list(project=project, request_options=REQUEST))
        if self.backend_url:
            return [b for b in backends if (b.url or "").rstrip("/") == self.backend_url]
        own = set(self.own_versions(project)) if self.own_versions else set()
        mine = [b for b in backends if b.model_version and b.model_version in own]
        return mine or (backends if len(backends) == 1 else [])

    def show(self, project: int, status: JobStatus, lane: str = Lane.TRAINING) -> bool:
        """Write a lane's status (with the other lane's) onto the card unless it is
        unchanged or throttled; True when Label Studio took it."""
        other = Lane.PRELABEL if lane == Lane.TRAINING else Lane.TRAINING
        none: JobStatus = {}
        statuses = {
            lane: status,
            other: self.lane_status(project, other) if self.lane_status else none,
        }
        text = card_text(statuses[Lane.TRAINING], statuses[Lane.PRELABEL])
        phase = (lane, status.get("state"), status.get("phase"))
        now = self.clock()
        last = self._shown.get(project)
        if not text and not last:
            return False  # nothing to show, nothing shown to take back
        # Progress (epochs, batches) is throttled; an outcome, or what is added to it
        # afterwards (what pre-labels did), goes at once.
        progress = phase[1] == RunState.RUNNING
        if last and (
            last[0] == text or (progress and last[1] == phase and now - last[2] < self.every)
        ):
            return False
        failed_at = self._failed_at
        if (
            failed_at is not None
            and now - failed_at < RETRY_SECONDS
            and phase[1] == RunState.RUNNING
        ):
            return False  # Label Studio failed lately: only an outcome is worth a try
        try:
            for backend in self.connections(project):
                self._write(project, backend, text)
        except Exception as exc:
            if failed_at is None:
                log.warning(
                    "could not show the job status on project %d's model card "
                    "in Label Studio (further failures are not logged): %s",
                    project,
                    ls_client.describe_error(exc),
                )
            self._failed_at = now
            return False
        self._shown[project] = (text, phase, now)
        return True

    def _write(self, project: int, backend, text: str) -> None:
        # PATCH /api/ml/<id> re-validates the connection from the fields it is sent: it
        # needs url and project (else 500), and for basic auth the method and user (the
        # stored password is kept when an empty one is sent).
        auth = {}
        if str(getattr(backend.auth_method, "value", backend.auth_method)) == "BASIC_AUTH":
            auth = {
                "auth_method": "BASIC_AUTH",
                "basic_auth_user": backend.basic_auth_user,
                "basic_auth_pass": "",
            }
        title = base_title(backend.title) + (f"{SEPARATOR}{text}" if text else "")
        self.client.ml.update(
            id=backend.id,
            url=backend.url,
            project=project,
            title=title,
            description=text,
            request_options=REQUEST,
            **auth,
        )


def for_backend(client, settings, state, predictor) -> Card:
    """This backend's card in a project: found by BACKEND_URL, or by the versions the
    predictor serves; the other lane's status read from the job state."""
    return Card(
        client,
        backend_url=settings.backend_url,
        lane_status=state.status,
        own_versions=lambda p: [predictor.llm_version(), *predictor.registry(p).names()],
    )
