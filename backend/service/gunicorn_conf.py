"""gunicorn settings: `gunicorn -c python:backend.service.gunicorn_conf backend.service.wsgi:app`.

Reads the same Settings as the app, so a wrong setting stops the start with its name.
When no LLM_BASE_URL is set, the master starts the embedded llama.cpp server
(backend.llm.local_server, a process of its own) before the workers fork, and the workers (and
the training runners they start) use it.
"""

from __future__ import annotations

import logging
import sys

from backend.config import ConfigError, load_settings

try:
    _settings = load_settings()
except ConfigError as _exc:
    sys.stderr.write(f"configuration error: {_exc}\n")
    sys.exit(2)
if (_problem := _settings.exposure_problem()) is not None:
    sys.stderr.write(f"configuration error: {_problem}\n")
    sys.exit(2)

bind = _settings.bind
workers = _settings.workers
threads = _settings.threads
worker_class = "backend.service.worker.ReadTimeoutWorker"  # gthread with a read timeout
limit_request_line = 8190
limit_request_fields = 100
# A bulk /predict answers by PREDICT_DEADLINE; leave room beyond it.
timeout = int(_settings.predict_deadline) + 60
graceful_timeout = 10
loglevel = _settings.log_level.lower()
accesslog = "-"
logconfig_dict = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s [%(process)d] %(name)s: %(message)s"}
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": "plain",
            "stream": "ext://sys.stderr",
        }
    },
    "root": {"level": _settings.log_level, "handlers": ["console"]},
    "loggers": {"httpx": {"level": "WARNING"}, "openai": {"level": "WARNING"}},
}


def on_starting(server) -> None:
    if _settings.allow_unauthenticated and _settings.basic_auth is None:
        logging.getLogger("gunicorn.error").warning(
            "ALLOW_UNAUTHENTICATED is set: %s answers anyone without credentials", _settings.bind
        )
    if _settings.llm_base_url:
        return
    import subprocess

    from backend.llm import local_server as local_llm

    # Its own process, not the master: forked workers must not inherit llama.cpp's threads.
    # Workers and training runners find it at settings.llm_endpoint.
    port = _settings.local_llm_port
    server.local_llm = subprocess.Popen(
        [sys.executable, "-m", "backend.llm.local_server", "--port", str(port)],
        stdin=subprocess.DEVNULL,
    )
    local_llm.wait_ready(f"http://127.0.0.1:{port}", timeout=120)
    logging.getLogger("gunicorn.error").warning(
        "LLM_BASE_URL is not set: serving the embedded %s on port %d. It is a tiny model "
        "for trying the tool; set LLM_BASE_URL, LLM_API_KEY and LLM_MODEL for real "
        "pre-labels.",
        local_llm.MODEL_NAME,
        port,
    )


def when_ready(server) -> None:
    check_label_studio(logging.getLogger("gunicorn.error"))
    if _settings.label_studio_url and _settings.label_studio_api_key and not _settings.broker_url:
        import subprocess

        # Embedded mode: the reconcile runs beside the master (the distributed mode's
        # workers run it there), in a process of its own: a thread here would be forked
        # into the workers.
        server.reconciler = subprocess.Popen(
            [sys.executable, "-m", "backend.jobs.reconcile"], stdin=subprocess.DEVNULL
        )


def check_label_studio(log: logging.Logger) -> None:
    """One cheap call at start, one line in the log: a refused LABEL_STUDIO_API_KEY (wrong,
    expired, or a legacy token while legacy tokens are disabled) is an error, an
    unreachable LABEL_STUDIO_URL a warning. The server starts either way: pre-labels from
    the LLM need no Label Studio, and Label Studio may come up later."""
    if not (_settings.label_studio_url and _settings.label_studio_api_key):
        return
    from backend.labelstudio import client as ls_client

    try:
        problem = ls_client.check_access(_settings, timeout=10)
    except Exception as exc:  # the check must never stop the start
        log.warning(
            "could not check LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY: %s",
            ls_client.describe_error(exc),
        )
        return
    if problem is None:
        kind = (
            "a personal access token"
            if _settings.label_studio_api_key.count(".") == 2
            else "a legacy token"
        )
        log.info(
            "Label Studio at %s accepts LABEL_STUDIO_API_KEY (%s)", _settings.label_studio_url, kind
        )
    elif problem.setting == "LABEL_STUDIO_API_KEY":
        log.error(
            "%s; serving pre-labels anyway, but training and Label Studio updates "
            "will fail until it is fixed",
            problem.message,
        )
    else:
        log.warning(
            "%s (at start; pre-labels are served meanwhile, Label Studio is asked "
            "again when needed)",
            problem.message,
        )


def on_exit(server) -> None:
    for name in ("reconciler", "local_llm"):
        _stop(getattr(server, name, None))


def _stop(process) -> None:
    if process is not None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except Exception:
            process.kill()
