"""Starting the local stack's processes: Label Studio, the local LLM, the backend.

Shared by scripts/local_stack.py and the test fixtures, so both run the stack the same way.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Settings Label Studio reads as LABEL_STUDIO_X, HEARTEX_X, then plain X: stray plain
# ones in the environment would leak in.
LEAKY = ("USERNAME", "PASSWORD", "PORT", "HOST", "DEBUG")

# Label Studio 1.23's own switch (a feature flag read from the environment): prediction
# imports update the imported tasks only, not every task of the project. Off, an import
# into a 20,000-task project costs seconds (benchmarks/bench_prelabel.py measures both).
FAST_PREDICTION_IMPORT = {
    "fflag_fix_back_4620_memory_efficient_predictions_import_08012025_short": "true"
}

# The reserved ranges Label Studio 1.23 refuses to reach (its SSRF check, for ML backends,
# webhooks and every URL a user gives it), as its core/utils/io.py lists them.
RESERVED_SUBNETS = (
    "0.0.0.0/8",
    "10.0.0.0/8",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.0.0.0/24",
    "192.0.2.0/24",
    "192.88.99.0/24",
    "192.168.0.0/16",
    "198.18.0.0/15",
    "198.51.100.0/24",
    "203.0.113.0/24",
    "224.0.0.0/4",
    "233.252.0.0/24",
    "240.0.0.0/4",
    "255.255.255.255/32",
    "::/128",
    "::1/128",
    "::ffff:0:0/96",
    "::ffff:0:0:0/96",
    "64:ff9b::/96",
    "64:ff9b:1::/48",
    "100::/64",
    "2001::/32",
    "2001:20::/28",
    "2001:db8::/32",
    "2002::/16",
    "fc00::/7",
    "fe80::/10",
    "ff00::/8",
)


def banned_subnets_except(allowed: Iterable[str]) -> list[str]:
    """The reserved ranges with the backend's network(s) cut out: what Label Studio bans
    when its defaults are off (USE_DEFAULT_BANNED_SUBNETS=false) so that it reaches the
    backend and nothing else reserved."""
    holes = [ipaddress.ip_network(net) for net in allowed]
    out: list[str] = []
    for reserved in RESERVED_SUBNETS:
        pieces: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = [
            ipaddress.ip_network(reserved)
        ]
        for hole in holes:
            pieces = [rest for piece in pieces for rest in _cut(piece, hole)]
        out += sorted(str(piece) for piece in pieces)
    return out


def _cut(
    net: ipaddress.IPv4Network | ipaddress.IPv6Network,
    hole: ipaddress.IPv4Network | ipaddress.IPv6Network,
) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    """`net` without `hole` (whole when the hole lies outside it)."""
    if net.version != hole.version or not hole.subnet_of(net):  # type: ignore[arg-type]
        return [net]
    return list(net.address_exclude(hole))  # type: ignore[arg-type]


def label_studio_guards(backend_networks: Iterable[str]) -> dict[str, str]:
    """Label Studio's SSRF check on (for ML backends and webhooks too), the backend's
    network(s) alone exempt from it."""
    return {
        "ML_BLOCK_LOCAL_IP": "true",
        "SSRF_PROTECTION_ENABLED": "true",
        "USE_DEFAULT_BANNED_SUBNETS": "false",
        "USER_ADDITIONAL_BANNED_SUBNETS": ",".join(banned_subnets_except(backend_networks)),
    }


@dataclass(frozen=True)
class LabelStudioLogin:
    url: str
    email: str
    password: str = field(repr=False)
    token: str = field(repr=False)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_http(
    url: str,
    *,
    timeout: float,
    process: subprocess.Popen | None = None,
    headers: dict | None = None,
) -> None:
    """Wait until `url` answers 200; fail early if `process` exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"the process for {url} exited with code {process.returncode}")
        try:
            with urllib.request.urlopen(
                urllib.request.Request(url, headers=headers or {}), timeout=2
            ) as response:
                if response.status == 200:
                    return
        except (OSError, urllib.error.HTTPError):
            pass
        time.sleep(0.5)
    raise TimeoutError(f"{url} did not answer within {timeout:.0f} s")


def _await_http(
    process: subprocess.Popen, url: str, *, timeout: float, headers: dict | None = None
) -> subprocess.Popen:
    """wait_http for a process started here; stopped if it never answers, so a failed
    start leaves nothing running."""
    try:
        wait_http(url, timeout=timeout, process=process, headers=headers)
    except BaseException:
        stop(process)
        raise
    return process


def _spawn(
    command: list[str], env: dict[str, str], log_path: Path, wrap: list[str] | None = None
) -> subprocess.Popen:
    """Start `command` in a session of its own (stop() ends the whole group). `wrap` is a
    prefix that execs the command elsewhere, e.g. ["ip", "netns", "exec", "tm-a"]."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log_file:
        return subprocess.Popen(
            [*(wrap or []), *command],
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=ROOT,
            start_new_session=True,
        )


def start_label_studio(
    *,
    data_dir: Path,
    port: int,
    login: LabelStudioLogin,
    log_path: Path,
    ls_bin: Path | None = None,
    timeout: float = 240,
    host: str = "127.0.0.1",
    wrap: list[str] | None = None,
    extra_env: dict[str, str] | None = None,
    backend_networks: tuple[str, ...] = ("127.0.0.0/8",),
) -> subprocess.Popen:
    """A headless Label Studio with a known user and a legacy API token, listening on
    `host`; SQLite unless `extra_env` chooses another database (DJANGO_DB, POSTGRE_*). Its
    SSRF check stays on except for `backend_networks`, where the backend runs."""
    ls_bin = ls_bin or ROOT / ".venv-ls" / "bin" / "label-studio"
    if not ls_bin.exists():
        raise FileNotFoundError(f"{ls_bin} is missing: run `make install`")
    env = {k: v for k, v in os.environ.items() if k not in LEAKY}
    env.update(
        {
            "LABEL_STUDIO_BASE_DATA_DIR": str(data_dir),
            "LABEL_STUDIO_USERNAME": login.email,
            "LABEL_STUDIO_PASSWORD": login.password,
            "LABEL_STUDIO_USER_TOKEN": login.token,
            "LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN": "true",
            "LABEL_STUDIO_DISABLE_SIGNUP_WITHOUT_LINK": "true",
            **label_studio_guards(backend_networks),
            "LATEST_VERSION_CHECK": "false",
            "COLLECT_ANALYTICS": "false",
            **FAST_PREDICTION_IMPORT,
            **(extra_env or {}),
        }
    )
    process = _spawn(
        [str(ls_bin), "start", "--no-browser", "--internal-host", host, "--port", str(port)],
        env,
        log_path,
        wrap,
    )
    return _await_http(process, f"http://{host}:{port}/health", timeout=timeout)


def start_local_llm(*, port: int, log_path: Path, parallel: int = 4) -> subprocess.Popen:
    process = _spawn(
        [
            sys.executable,
            "-m",
            "backend.llm.local_server",
            "--port",
            str(port),
            "--parallel",
            str(parallel),
        ],
        dict(os.environ),
        log_path,
    )
    wait_http(f"http://127.0.0.1:{port}/health", timeout=120, process=process)
    return process


def start_backend(
    *,
    env: dict[str, str],
    port: int,
    log_path: Path,
    timeout: float = 120,
    host: str = "127.0.0.1",
    wrap: list[str] | None = None,
) -> subprocess.Popen:
    """The backend under gunicorn, as in production, listening on `host`."""
    gunicorn = Path(sys.executable).parent / "gunicorn"
    full_env = {**os.environ, **env, "PORT": str(port), "BIND": f"{host}:{port}"}
    process = _spawn(
        [str(gunicorn), "-c", "python:backend.service.gunicorn_conf", "backend.service.wsgi:app"],
        full_env,
        log_path,
        wrap,
    )
    headers = {}
    if env.get("BASIC_AUTH_USER"):
        import base64

        token = base64.b64encode(f"{env['BASIC_AUTH_USER']}:{env['BASIC_AUTH_PASS']}".encode())
        headers["Authorization"] = "Basic " + token.decode()
    return _await_http(process, f"http://{host}:{port}/health", timeout=timeout, headers=headers)


def start_worker(
    *, env: dict[str, str], log_path: Path, queues: str | None = None, wrap: list[str] | None = None
) -> subprocess.Popen:
    """A job worker of the distributed mode (`takemeter worker`); `env` needs REDIS_URL.
    It has no port to wait on: the caller watches its log or the jobs it runs."""
    command = [sys.executable, "-m", "backend.jobs.worker"]
    if queues:
        command += ["--queues", queues]
    return _spawn(command, {**os.environ, **env}, log_path, wrap)


@contextlib.contextmanager
def running() -> Iterator[list[subprocess.Popen]]:
    """A list to put started processes in; all are stopped, newest first, on leaving."""
    started: list[subprocess.Popen] = []
    try:
        yield started
    finally:
        for process in reversed(started):
            stop(process)


def stop(process: subprocess.Popen | None, *, timeout: float = 15) -> None:
    """Stop a process started here, with everything it started."""
    if process is None or process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    except ProcessLookupError:
        pass
