"""All configuration, read from the environment in one place.

Names follow the Label Studio ML-backend conventions (LABEL_STUDIO_URL, MODEL_DIR,
BASIC_AUTH_USER, ...) and the OpenAI ones for the LLM. A wrong value fails at start with
a message that names the variable.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from urllib.parse import urlparse


class ConfigError(ValueError):
    """A setting is missing or malformed; the message names the variable."""


@dataclass(frozen=True)
class Settings:
    model_dir: Path
    label_studio_url: str | None
    label_studio_api_key: str | None
    basic_auth_user: str | None
    basic_auth_pass: str | None
    log_level: str
    port: int
    bind: str
    workers: int
    threads: int
    # Exposure and bounds: what a hostile or careless client can cost.
    allow_unauthenticated: bool  # listen beyond loopback without basic auth
    backend_url: str | None  # how Label Studio reaches this backend (webhook auth goes there)
    read_timeout: float  # seconds a client may stall while sending a request
    max_request_bytes: int
    max_predict_tasks: int
    max_training_runners: int
    # Jobs (pre-labeling, training, re-scoring). No REDIS_URL: the embedded mode, one
    # machine, no server. REDIS_URL: job state, LLM answers and claims live in Redis, and
    # the jobs go through Dramatiq on BROKER_URL (Redis or RabbitMQ, default REDIS_URL)
    # to `takemeter worker` processes on any host.
    redis_url: str | None
    broker_url: str | None
    prelabel_batch: int  # predictions pushed to Label Studio per import call
    reconcile_seconds: float  # how often projects are checked for tasks with no pre-label
    job_retries: int  # attempts of a failing job before it is marked failed
    # The zero-shot LLM (any OpenAI-compatible endpoint).
    llm_base_url: str | None  # None: the embedded llama.cpp server on local_llm_port
    local_llm_port: int
    llm_api_key: str
    llm_model: str
    llm_concurrency: int
    llm_timeout: float
    llm_max_retries: int
    llm_max_chars: int
    llm_max_queued: int  # posts waiting for the LLM per project and worker
    llm_breaker_errors: int  # consecutive failures that open the circuit breaker
    llm_breaker_cooldown: float  # seconds before an open breaker lets one request try
    # How the LLM answers (backend.llm.prompt): "json" ({"label": ...}) or "code" (one letter
    # per label, one token); calibrate: divide out the model's prior over the labels.
    llm_answer_format: str
    llm_calibrate: bool
    llm_cache: Path
    predict_deadline: float
    # The fine-tuned classifier.
    base_model: str
    train_epochs: int
    train_min_steps: int  # the step budget a small set trains to (backend.model.trainer)
    # Each run fits a linear head on the frozen encoder (seconds); from this many training
    # labels on it also fine-tunes the whole encoder, and the judge keeps the better.
    train_finetune_from: int
    train_learning_rate: float
    train_batch_size: int
    train_max_length: int
    train_min_per_label: int
    train_after_annotations: int
    train_debounce: float
    train_seed: int
    holdout_percent: int
    # Held-out tasks and judge posts get an empty prediction, no pre-label (domain.roles).
    blind_labels: bool
    # What labels cost, for `takemeter report` and the model card: the LLM per million
    # prompt and completion tokens, an annotator per hour (any one currency).
    llm_price_input: float | None
    llm_price_output: float | None
    annotation_hourly_rate: float | None

    @property
    def llm_endpoint(self) -> str:
        return self.llm_base_url or f"http://127.0.0.1:{self.local_llm_port}/v1"

    @property
    def basic_auth(self) -> tuple[str, str] | None:
        if self.basic_auth_user and self.basic_auth_pass:
            return self.basic_auth_user, self.basic_auth_pass
        return None

    def exposure_problem(self) -> str | None:
        """Why the server must not start as configured: listening beyond loopback with no
        basic auth, unless ALLOW_UNAUTHENTICATED says so."""
        host = self.bind.rsplit(":", 1)[0].strip("[]") if ":" in self.bind else self.bind
        loopback = host in ("127.0.0.1", "localhost", "::1") or host.startswith("127.")
        if loopback or self.basic_auth is not None or self.allow_unauthenticated:
            return None
        return (
            f"BIND={self.bind} listens beyond this machine without basic auth: set "
            f"BASIC_AUTH_USER and BASIC_AUTH_PASS, bind to 127.0.0.1, or set "
            f"ALLOW_UNAUTHENTICATED=true to accept that anyone who reaches the port can "
            f"read posts and start training"
        )

    def __repr__(self) -> str:  # the dataclass's own would print the secrets
        shown = ", ".join(f"{name}={value!r}" for name, value in self.public().items())
        return f"Settings({shown})"

    def public(self) -> dict[str, object]:
        """Settings safe to log or show: secrets masked."""
        secret = {
            "label_studio_api_key",
            "basic_auth_pass",
            "llm_api_key",
            "redis_url",
            "broker_url",
        }  # URLs may carry passwords
        return {
            f.name: (
                "***" if f.name in secret and getattr(self, f.name) else str(getattr(self, f.name))
            )
            for f in fields(self)
        }


def _str(env: Mapping[str, str], name: str, default: str | None = None) -> str | None:
    value = env.get(name, "").strip()
    return value or default


def _number(env: Mapping[str, str], name: str, default: float, kind: type, minimum: float) -> float:
    raw = _str(env, name)
    if raw is None:
        return default
    try:
        value = kind(raw)
    except ValueError:
        what = "an integer" if kind is int else "a number"
        raise ConfigError(f"{name} must be {what}, got {raw!r}") from None
    if value < minimum:
        raise ConfigError(f"{name} must be at least {minimum}, got {value}")
    return value


def _int(env: Mapping[str, str], name: str, default: int, *, minimum: int = 0) -> int:
    return int(_number(env, name, default, int, minimum))


def _float(env: Mapping[str, str], name: str, default: float, *, minimum: float = 0.0) -> float:
    return float(_number(env, name, default, float, minimum))


def _price(env: Mapping[str, str], name: str) -> float | None:
    """An optional amount of money (unset: unknown, and the figures that need it are left
    out)."""
    return None if _str(env, name) is None else _float(env, name, 0.0)


def _bool(env: Mapping[str, str], name: str, default: bool = False) -> bool:
    raw = (_str(env, name) or "").lower()
    if not raw:
        return default
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name} must be true or false, got {raw!r}")


def _choice(env: Mapping[str, str], name: str, default: str, allowed: tuple[str, ...]) -> str:
    value = (_str(env, name) or default).lower()
    if value not in allowed:
        raise ConfigError(f"{name} must be one of {', '.join(allowed)}, got {value!r}")
    return value


def _url(env: Mapping[str, str], name: str) -> str | None:
    raw = _str(env, name)
    if raw is None:
        return None
    parsed = urlparse(raw)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise ConfigError(f"{name} must be an http(s) URL, got {raw!r}")
    return raw.rstrip("/")


def _service_url(env: Mapping[str, str], name: str, schemes: tuple[str, ...]) -> str | None:
    raw = _str(env, name)
    if raw is None:
        return None
    parsed = urlparse(raw)
    if parsed.scheme not in schemes or not parsed.hostname:
        raise ConfigError(
            f"{name} must be a {' or '.join(s + '://' for s in schemes)} URL, got {raw!r}"
        )
    return raw


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Read and validate every setting; raise ConfigError naming the bad one."""
    env = os.environ if env is None else env
    log_level = (_str(env, "LOG_LEVEL", "INFO") or "INFO").upper()
    if log_level not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
        raise ConfigError(
            f"LOG_LEVEL must be DEBUG, INFO, WARNING, ERROR or CRITICAL, got {log_level!r}"
        )
    user, password = _str(env, "BASIC_AUTH_USER"), _str(env, "BASIC_AUTH_PASS")
    if bool(user) != bool(password):
        raise ConfigError("BASIC_AUTH_USER and BASIC_AUTH_PASS must be set together")
    holdout = _int(env, "HOLDOUT_PERCENT", 20)
    if holdout > 90:
        raise ConfigError(f"HOLDOUT_PERCENT must be between 0 and 90, got {holdout}")
    model_dir = Path(_str(env, "MODEL_DIR", "./model_data") or ".").resolve()
    settings = Settings(
        model_dir=model_dir,
        label_studio_url=_url(env, "LABEL_STUDIO_URL"),
        label_studio_api_key=_str(env, "LABEL_STUDIO_API_KEY"),
        basic_auth_user=user,
        basic_auth_pass=password,
        log_level=log_level,
        port=(port := _int(env, "PORT", 9090, minimum=1)),
        bind=_str(env, "BIND", f"127.0.0.1:{port}") or "",
        workers=_int(env, "WORKERS", 2, minimum=1),
        threads=_int(env, "THREADS", 8, minimum=1),
        allow_unauthenticated=_bool(env, "ALLOW_UNAUTHENTICATED"),
        backend_url=_url(env, "BACKEND_URL"),
        read_timeout=_float(env, "READ_TIMEOUT", 30.0, minimum=0.5),
        max_request_bytes=_int(env, "MAX_REQUEST_BYTES", 64 * 1024 * 1024, minimum=1024),
        max_predict_tasks=_int(env, "MAX_PREDICT_TASKS", 20000, minimum=1),
        max_training_runners=_int(env, "MAX_TRAINING_RUNNERS", 2, minimum=1),
        redis_url=(redis_url := _service_url(env, "REDIS_URL", ("redis", "rediss"))),
        broker_url=_service_url(env, "BROKER_URL", ("redis", "rediss", "amqp", "amqps"))
        or redis_url,
        prelabel_batch=_int(env, "PRELABEL_BATCH", 100, minimum=1),
        reconcile_seconds=_float(env, "RECONCILE_SECONDS", 60.0, minimum=1.0),
        job_retries=_int(env, "JOB_RETRIES", 4, minimum=1),
        llm_base_url=_url(env, "LLM_BASE_URL"),
        local_llm_port=_int(env, "LOCAL_LLM_PORT", 8081, minimum=1),
        llm_api_key=_str(env, "LLM_API_KEY", "not-needed") or "",
        llm_model=_str(env, "LLM_MODEL", "smollm2-135m-instruct") or "",
        # The embedded server has 4 slots: more requests in flight only wait there and
        # time out on a busy machine.
        llm_concurrency=_int(
            env, "LLM_CONCURRENCY", 8 if _str(env, "LLM_BASE_URL") else 4, minimum=1
        ),
        llm_timeout=_float(env, "LLM_TIMEOUT", 30.0, minimum=0.1),
        llm_max_retries=_int(env, "LLM_MAX_RETRIES", 2),
        llm_max_chars=_int(env, "LLM_MAX_CHARS", 4000, minimum=100),
        llm_max_queued=_int(env, "LLM_MAX_QUEUED", 5000, minimum=1),
        llm_breaker_errors=_int(env, "LLM_BREAKER_ERRORS", 5, minimum=1),
        llm_breaker_cooldown=_float(env, "LLM_BREAKER_COOLDOWN", 30.0, minimum=0.1),
        llm_answer_format=_choice(env, "LLM_ANSWER_FORMAT", "json", ("json", "code")),
        llm_calibrate=_bool(env, "LLM_CALIBRATE", False),
        llm_cache=Path(_str(env, "LLM_CACHE") or model_dir / "llm_cache.sqlite").resolve(),
        predict_deadline=_float(env, "PREDICT_DEADLINE", 80.0, minimum=1.0),
        base_model=_str(env, "BASE_MODEL", "distilbert-base-uncased") or "",
        train_epochs=_int(env, "TRAIN_EPOCHS", 4, minimum=1),
        train_min_steps=_int(env, "TRAIN_MIN_STEPS", 150, minimum=1),
        train_finetune_from=_int(env, "TRAIN_FINETUNE_FROM", 100, minimum=1),
        train_learning_rate=_float(env, "TRAIN_LEARNING_RATE", 5e-5, minimum=1e-9),
        train_batch_size=_int(env, "TRAIN_BATCH_SIZE", 16, minimum=1),
        train_max_length=_int(env, "TRAIN_MAX_LENGTH", 256, minimum=8),
        train_min_per_label=_int(env, "TRAIN_MIN_PER_LABEL", 3, minimum=1),
        train_after_annotations=_int(env, "TRAIN_AFTER_ANNOTATIONS", 20, minimum=1),
        train_debounce=_float(env, "TRAIN_DEBOUNCE", 3.0),
        train_seed=_int(env, "TRAIN_SEED", 42),
        holdout_percent=holdout,
        blind_labels=_bool(env, "BLIND_LABELS", True),
        llm_price_input=_price(env, "LLM_PRICE_INPUT"),
        llm_price_output=_price(env, "LLM_PRICE_OUTPUT"),
        annotation_hourly_rate=_price(env, "ANNOTATION_HOURLY_RATE"),
    )
    if settings.broker_url and not settings.redis_url:
        raise ConfigError(
            "BROKER_URL needs REDIS_URL too: the job state, the LLM answer "
            "cache and its claims live in Redis in the distributed mode"
        )
    return settings
