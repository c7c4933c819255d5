"""The distributed job mode across hosts. Network namespaces stand in for the
hosts, all on one bridge (10.231.N.0/24, N picked per run):

    root namespace  10.231.N.1   this test; Label Studio on PostgreSQL (PostgreSQL
                                 listens on this namespace's loopback only, so Label
                                 Studio stays here); the scripted LLM double
    tm<tag>-redis   10.231.N.10  Redis: job state, LLM answers and claims, Dramatiq queues
    tm<tag>-a       10.231.N.11  backend replica A (gunicorn), the one Label Studio calls
    tm<tag>-b       10.231.N.12  backend replica B (gunicorn), sharing only Redis and disk
    tm<tag>-w1      10.231.N.21  `takemeter worker` 1
    tm<tag>-w2      10.231.N.22  `takemeter worker` 2

The replicas only answer HTTP and enqueue; the workers pre-label and train; versions live
in one MODEL_DIR (a shared disk, the same path everywhere). Importing posts is all it takes
for pre-labels. Then worker 1 is SIGKILLed in the middle of a training run: worker 2
finishes it while both replicas keep serving. Worker 2 is frozen (SIGSTOP) only while
Start Training is pressed, so that the run lands on worker 1.

Needs root (ip netns), redis-server, and a PostgreSQL trusting the user postgres at
TEST_POSTGRES_HOST:TEST_POSTGRES_PORT (127.0.0.1:5432); skipped without them, failed
under CI=true.
"""

from __future__ import annotations

import contextlib
import os
import random
import re
import shutil
import signal
import subprocess
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from backend.domain.taxonomy import parse_taxonomy
from backend.jobs.state import RedisJobState
from backend.labelstudio import client as ls_client
from backend.model.registry import HEAD_FILE, JUDGE_HEAD_FILE, Registry, kind_of
from backend.workflows.prelabel import tasks_to_label
from takemeter import stack
from tests.conftest import BACKEND_AUTH, ROOT, Backend, need_service, wait_for
from tests.doubles.llm_endpoint import MisbehavingLLM

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

LABEL_CONFIG = (ROOT / "label_config.xml").read_text()
LABELS = ("seeking_support", "health_claim", "personal_experience")
N_POSTS = 300
PER_LABEL = 20  # annotations per label for the training run
HOSTS = {"redis": 10, "a": 11, "b": 12, "w1": 21, "w2": 22}  # role -> last address byte
REPLICA_PORT = 9090  # each replica has a host of its own
REDIS_PORT = 6380
# A PostgreSQL that trusts the user postgres (a database per run is made and dropped).
POSTGRES = (
    os.environ.get("TEST_POSTGRES_HOST", "127.0.0.1"),
    os.environ.get("TEST_POSTGRES_PORT", "5432"),
)

FOODS = (
    "oatmeal",
    "pasta",
    "rice",
    "a banana",
    "toast",
    "lentil soup",
    "pizza",
    "yogurt",
    "an apple",
    "curry",
    "sushi",
)
WHEN = (
    "this morning",
    "after lunch",
    "before bed",
    "after my walk",
    "at 3 am",
    "after dinner",
    "at work",
)


def synthetic_posts(n: int) -> list[dict]:
    """n distinct posts whose label follows from the keywords scripted_answer looks for."""
    posts = []
    for i in range(n):
        food, when, label = FOODS[i % len(FOODS)], WHEN[i % len(WHEN)], LABELS[i % 3]
        text = {
            "seeking_support": f"Post {i}: my sugar went to {120 + i} {when} after {food}. "
            "Has anyone else had this, what should I do?",
            "health_claim": f"Post {i}: {food} is a cure for type 2, it lowers anyone's A1c "
            f"by {i % 9 + 1} points.",
            "personal_experience": f"Post {i}: I had {food} {when} and my meter read "
            f"{80 + i}. Felt fine all day.",
        }[label]
        posts.append({"text": text, "ref_id": f"post-{i}", "label": label})
    return posts


def scripted_answer(prompt: str) -> str:
    if "?" in prompt:
        return "seeking_support"
    return "health_claim" if "cure" in prompt else "personal_experience"


# ------------------------------------------------------------------------- hosts


def sh(*args: str, timeout: float = 60) -> str:
    env = {**os.environ, "PGCONNECT_TIMEOUT": "5"}
    done = subprocess.run(args, capture_output=True, text=True, timeout=timeout, env=env)
    if done.returncode:
        raise RuntimeError(f"`{' '.join(args)}` failed ({done.returncode}): {done.stderr.strip()}")
    return done.stdout


def psql(sql: str) -> None:
    sh(
        "psql",
        "-h",
        POSTGRES[0],
        "-p",
        POSTGRES[1],
        "-U",
        "postgres",
        "-v",
        "ON_ERROR_STOP=1",
        "-Atc",
        sql,
    )


@dataclass(frozen=True)
class Host:
    netns: str | None  # None: the root namespace
    address: str

    @property
    def wrap(self) -> list[str]:
        return ["ip", "netns", "exec", self.netns] if self.netns else []


class Network:
    """A bridge in the root namespace (the test reaches every host through it) and a
    namespace per host on a veth pair, its own `lo` up. Everything made is undone by
    `cleanup`, the processes inside first."""

    def __init__(self, cleanup: contextlib.ExitStack) -> None:
        self.tag = uuid.uuid4().hex[:4]
        self.cleanup = cleanup
        used = sh("ip", "-4", "-o", "addr", "show")
        self.prefix = "10.231.{}".format(
            random.choice([n for n in range(1, 255) if f" 10.231.{n}." not in used])
        )
        self.bridge = f"tm{self.tag}br"
        sh("ip", "link", "add", self.bridge, "type", "bridge")
        cleanup.callback(self._remove_link, self.bridge)
        sh("ip", "addr", "add", f"{self.prefix}.1/24", "dev", self.bridge)
        sh("ip", "link", "set", self.bridge, "up")
        self.root = Host(None, f"{self.prefix}.1")

    def add_host(self, role: str, octet: int) -> Host:
        netns, outside = f"tm{self.tag}-{role}", f"tm{self.tag}{role}"
        sh("ip", "netns", "add", netns)
        self.cleanup.callback(self._remove_netns, netns)
        sh("ip", "link", "add", outside, "type", "veth", "peer", "name", "eth0", "netns", netns)
        self.cleanup.callback(self._remove_link, outside)
        sh("ip", "link", "set", outside, "master", self.bridge)
        sh("ip", "link", "set", outside, "up")
        inside = ("ip", "netns", "exec", netns, "ip")
        sh(*inside, "addr", "add", f"{self.prefix}.{octet}/24", "dev", "eth0")
        sh(*inside, "link", "set", "eth0", "up")
        sh(*inside, "link", "set", "lo", "up")
        return Host(netns, f"{self.prefix}.{octet}")

    @staticmethod
    def _remove_netns(netns: str) -> None:
        # Whatever still runs in it was started by this test: nothing else enters it.
        with contextlib.suppress(RuntimeError):
            for pid in sh("ip", "netns", "pids", netns).split():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid), signal.SIGKILL)
        with contextlib.suppress(RuntimeError):
            sh("ip", "netns", "del", netns)

    @staticmethod
    def _remove_link(name: str) -> None:
        with contextlib.suppress(RuntimeError):  # a veth goes with its namespace
            sh("ip", "link", "del", name)


def check_namespaces() -> None:
    """Raise when this process may not make network namespaces (not root, a container
    without CAP_SYS_ADMIN, no iproute2)."""
    if shutil.which("ip") is None:
        raise FileNotFoundError("ip (iproute2) is not on PATH")
    probe = f"tm{uuid.uuid4().hex[:6]}-probe"
    sh("ip", "netns", "add", probe)
    sh("ip", "netns", "del", probe)


def start_redis(host: Host, log_path: Path) -> subprocess.Popen:
    import redis

    # Protected mode would refuse the other hosts: only this test's namespaces reach it.
    with open(log_path, "ab") as log_file:
        process = subprocess.Popen(
            [
                *host.wrap,
                "redis-server",
                "--port",
                str(REDIS_PORT),
                "--bind",
                host.address,
                "--protected-mode",
                "no",
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    client = redis.Redis(host=host.address, port=REDIS_PORT, socket_connect_timeout=1)
    last: list[Exception] = []

    def up() -> bool:
        if process.poll() is not None:
            raise RuntimeError(f"redis-server exited; see {log_path}")
        try:
            return bool(client.ping())
        except redis.RedisError as exc:
            last[:] = [exc]
            return False

    try:
        wait_for(up, timeout=30, what=f"redis-server on {host.address}")
    except BaseException as exc:
        stack.stop(process)
        if isinstance(exc, TimeoutError) and last:
            raise TimeoutError(f"{exc}; last answer: {last[0]!r}") from None
        raise
    return process


def wait_worker_up(process: subprocess.Popen, log_path: Path) -> None:
    def up() -> bool:
        if process.poll() is not None:
            raise RuntimeError(f"a worker exited at start; see {log_path}")
        return "worker up" in log_path.read_text(errors="replace")

    wait_for(up, timeout=120, what=f"a worker to start ({log_path})")


def stop_all(processes: list[subprocess.Popen]) -> None:
    """stack.stop for each at once (each may take seconds to shut down), also for a
    process left frozen by SIGSTOP, which would not see SIGTERM."""

    def resume_and_stop(process: subprocess.Popen) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGCONT)
        stack.stop(process)

    with ThreadPoolExecutor(max(1, len(processes))) as pool:
        list(pool.map(resume_and_stop, processes))


@dataclass
class Cluster:
    ls_url: str
    token: str
    redis_url: str
    model_dir: Path
    base_model: Path
    llm: MisbehavingLLM
    replicas: dict[str, Backend]
    workers: dict[str, subprocess.Popen]
    worker_logs: dict[str, Path]


@pytest.fixture
def cluster(tmp_path: Path, logs: Path, tiny_model: Path) -> Iterator[Cluster]:
    try:
        check_namespaces()
    except (RuntimeError, OSError) as exc:
        need_service("network namespaces (ip netns, as root)", exc)
    for tool in ("psql", "redis-server"):
        if shutil.which(tool) is None:
            need_service(tool, FileNotFoundError(f"{tool} is not on PATH"))
    database = f"takemeter_dist_{uuid.uuid4().hex[:8]}"
    with contextlib.ExitStack() as cleanup:  # undone newest first, also on failure
        try:
            psql(f'CREATE DATABASE "{database}"')
        except (RuntimeError, subprocess.TimeoutExpired) as exc:
            need_service(f"PostgreSQL at {':'.join(POSTGRES)}", exc)
        cleanup.callback(psql, f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        net = Network(cleanup)
        hosts = {role: net.add_host(role, octet) for role, octet in HOSTS.items()}
        log_dir = logs / f"distributed-{net.tag}"
        log_dir.mkdir()
        print(f"logs: {log_dir}; bridge {net.bridge}, {net.prefix}.0/24")

        llm = cleanup.enter_context(
            MisbehavingLLM("scripted", answer=scripted_answer, host=net.root.address)
        )
        cleanup.callback(stack.stop, start_redis(hosts["redis"], log_dir / "redis.log"))
        processes: list[subprocess.Popen] = []  # stopped before Redis and the namespaces
        cleanup.callback(stop_all, processes)
        redis_url = f"redis://{hosts['redis'].address}:{REDIS_PORT}/0"
        ls_port = stack.free_port()
        ls_url = f"http://{net.root.address}:{ls_port}"
        login = stack.LabelStudioLogin(
            url=ls_url,
            email="dist@example.com",
            password="test-password-1",
            token="dist-token-12345",
        )
        model_dir = tmp_path / "model-dir"  # the shared disk
        common = {
            "MODEL_DIR": str(model_dir),
            "REDIS_URL": redis_url,
            "BROKER_URL": redis_url,
            "LABEL_STUDIO_URL": ls_url,
            "LABEL_STUDIO_API_KEY": login.token,
            "LLM_BASE_URL": llm.url,
            "LLM_MODEL": "hosted",
            "LLM_MAX_RETRIES": "0",
            "LLM_TIMEOUT": "30",
            "LLM_CONCURRENCY": "8",
            "BLIND_LABELS": "false",  # every task's pre-label is checked against the truth
            "BASE_MODEL": str(tiny_model),
            # Each run fits the head, then fine-tunes (TRAIN_FINETUNE_FROM=1): the kill
            # comes within a second of the fine-tune's start, which takes several seconds
            # even for the tiny model (early stopping ends it sooner).
            "TRAIN_EPOCHS": "6",
            "TRAIN_MIN_STEPS": "60",
            "TRAIN_FINETUNE_FROM": "1",
            "TRAIN_MIN_PER_LABEL": "3",
            "TRAIN_BATCH_SIZE": "4",
            "TRAIN_MAX_LENGTH": "128",
            "TRAIN_LEARNING_RATE": "1e-3",
            "TRAIN_AFTER_ANNOTATIONS": "100000",  # only the button starts a run
            "TRAIN_DEBOUNCE": "0.5",
            "RECONCILE_SECONDS": "5",
            "LOG_LEVEL": "INFO",
        }

        # Label Studio's first start (migrations) is the slowest part: the rest starts
        # meanwhile.
        with ThreadPoolExecutor(3) as pool:
            starting: dict[str, Future] = {
                "ls": pool.submit(
                    stack.start_label_studio,
                    data_dir=tmp_path / "label-studio",
                    port=ls_port,
                    login=login,
                    log_path=log_dir / "label-studio.log",
                    host=net.root.address,
                    timeout=300,
                    # Its SSRF check on, as the compose file runs it: the bridge alone exempt.
                    backend_networks=(f"{net.prefix}.0/24",),
                    extra_env={
                        "DJANGO_DB": "default",
                        "POSTGRE_NAME": database,
                        "POSTGRE_USER": "postgres",
                        "POSTGRE_PASSWORD": "",
                        "POSTGRE_HOST": POSTGRES[0],
                        "POSTGRE_PORT": POSTGRES[1],
                        # A team's Label Studio at its defaults: every import updates every
                        # task of the project (the other tests run the faster import).
                        **{flag: "false" for flag in stack.FAST_PREDICTION_IMPORT},
                    },
                )
            }
            replicas = {}
            for name in ("a", "b"):
                url = f"http://{hosts[name].address}:{REPLICA_PORT}"
                env = {
                    **common,
                    "WORKERS": "2",
                    "THREADS": "4",
                    "BACKEND_URL": url,
                    "BASIC_AUTH_USER": BACKEND_AUTH[0],
                    "BASIC_AUTH_PASS": BACKEND_AUTH[1],
                }
                log_path = log_dir / f"replica-{name}.log"
                replicas[name] = Backend(url, model_dir, BACKEND_AUTH, log_path)
                starting[name] = pool.submit(
                    stack.start_backend,
                    env=env,
                    port=REPLICA_PORT,
                    log_path=log_path,
                    host=hosts[name].address,
                    wrap=hosts[name].wrap,
                )
            workers, worker_logs = {}, {}
            for name in ("w1", "w2"):
                worker_logs[name] = log_dir / f"worker-{name.removeprefix('w')}.log"
                workers[name] = stack.start_worker(
                    env=common, log_path=worker_logs[name], wrap=hosts[name].wrap
                )
                processes.append(workers[name])
            try:
                for name, process in workers.items():
                    wait_worker_up(process, worker_logs[name])
            finally:
                failures = []
                for future in starting.values():
                    try:
                        processes.append(future.result())
                    except Exception as exc:
                        failures.append(exc)
            if failures:
                raise failures[0]

        yield Cluster(
            ls_url,
            login.token,
            redis_url,
            model_dir,
            tiny_model,
            llm,
            replicas,
            workers,
            worker_logs,
        )


# ------------------------------------------------------------------------- checks


def predictions_by_task(ls, project: int) -> dict[int, list]:
    by_task: dict[int, list] = {}
    for prediction in ls.predictions.list(project=project):
        by_task.setdefault(prediction.task, []).append(prediction)
    return by_task


class ServingProbe:
    """Asks both replicas /health and /predict (a post whose answer is cached) in a loop,
    as Label Studio and a load balancer's health check would, and records the answers."""

    def __init__(self, replicas: dict[str, Backend], project: int, text: str) -> None:
        self.replicas = replicas
        self.payload = {
            "tasks": [{"id": 1, "data": {"text": text}}],
            "label_config": LABEL_CONFIG,
            "project": f"{project}.0",
        }
        self.seen: list[tuple[float, str, str]] = []  # (time, replica, model_version)
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> ServingProbe:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=150)

    def _loop(self) -> None:
        while not self._stop.is_set():
            for name, replica in self.replicas.items():
                self._probe(name, replica)
            self._stop.wait(0.3)

    def _probe(self, name: str, replica: Backend) -> None:
        try:
            health = replica.get("/health")
            if health.status_code != 200 or health.json().get("status") != "UP":
                self.errors.append(f"{name} /health: {health.status_code} {health.text[:200]}")
            answer = replica.post("/predict", json=self.payload)
            body = answer.json()
            result = body["results"][0]
            if (
                answer.status_code != 200
                or not result
                or not result["result"]
                or (result["model_version"] != body["model_version"])
            ):
                self.errors.append(f"{name} /predict: {answer.status_code} {answer.text[:300]}")
            else:
                self.seen.append((time.time(), name, body["model_version"]))
        except (requests.RequestException, ValueError, KeyError, IndexError) as exc:
            self.errors.append(f"{name}: {type(exc).__name__}: {exc}")

    def versions(self, name: str, start: float, end: float) -> list[str]:
        return [v for t, n, v in list(self.seen) if n == name and start <= t <= end]


def prelabel_finished(replica: Backend, project: int) -> dict | None:
    status = replica.get(f"/jobs?project={project}").json()["prelabel"]
    return status if status["state"] == "finished" and not status["pending"] else None


def status_is(
    replica: Backend, project: int, check: Callable[[dict], bool]
) -> Callable[[], dict | None]:
    def poll() -> dict | None:
        status = replica.get(f"/training?project={project}").json()
        return status if check(status) else None

    return poll


def test_a_worker_killed_mid_training_loses_nothing_across_hosts(cluster: Cluster) -> None:
    from label_studio_sdk import LabelStudio

    started = time.monotonic()
    ls = LabelStudio(base_url=cluster.ls_url, api_key=cluster.token, timeout=120)
    replica_a, replica_b = cluster.replicas["a"], cluster.replicas["b"]
    taxonomy = parse_taxonomy(LABEL_CONFIG)
    posts = synthetic_posts(N_POSTS)
    truth = {p["text"]: p["label"] for p in posts}

    # 1. Replica A connected, 300 posts imported: pre-labels with no click.
    project = ls_client.ensure_project(ls, title="distributed", label_config=LABEL_CONFIG).id
    ml_id = ls_client.connect_backend(
        ls, project, url=replica_a.url, title="takemeter", auth=BACKEND_AUTH
    )
    schema = {"project": f"{project}.0", "schema": LABEL_CONFIG}
    zero_shot = replica_a.post("/setup", json=schema).json()["model_version"]
    ids = ls_client.import_posts(
        ls, project, [{"text": p["text"], "ref_id": p["ref_id"]} for p in posts]
    )
    assert len(ids) == N_POSTS
    wait_for(
        lambda: len(predictions_by_task(ls, project)) == N_POSTS,
        timeout=240,
        what=f"a pre-label on each of the {N_POSTS} tasks, pushed by a worker",
    )
    prelabel = wait_for(
        lambda: prelabel_finished(replica_a, project),
        timeout=60,
        what="the pre-labeling job to report finished on replica A",
    )
    assert (prelabel["tasks"], prelabel["failed"], prelabel["unusable"]) == (N_POSTS, 0, 0), (
        prelabel
    )
    # Requested by TASKS_CREATED, or by the reconcile when that webhook came before the
    # backend had put its basic auth on it: either way nobody clicked.
    print(f"pre-labeling requested by: {prelabel['requested_by']}")
    texts = {t["id"]: t["data"]["text"] for t in ls_client.all_tasks(ls, project)}
    by_task = predictions_by_task(ls, project)
    assert sorted(by_task) == sorted(ids)
    several = {task: len(found) for task, found in by_task.items() if len(found) != 1}
    assert not several, f"tasks with more than one pre-label: {several}"
    for task, (prediction,) in by_task.items():
        assert prediction.model_version == zero_shot
        assert taxonomy.label_of(prediction.result) == truth[texts[task]], task
    # The job reads PostgreSQL's form of the versions column: a run now finds nothing.
    listed = [t for page in ls_client.task_pages(ls, project) for t in page]
    assert {frozenset(t["model_versions"]) for t in listed} == {frozenset({zero_shot})}
    assert not tasks_to_label(listed, taxonomy.text_field, zero_shot)
    # Each distinct post paid for once, whichever worker or replica asked.
    assert cluster.llm.requests == N_POSTS
    # Replica B knows what replica A knows: the state lives in Redis, not in a replica.
    jobs = wait_for(
        lambda: (
            (a := replica_a.get(f"/jobs?project={project}").json())
            == (replica_b.get(f"/jobs?project={project}").json())
            and a
        ),
        timeout=30,
        what="replica B to show the same jobs as replica A",
    )
    assert jobs["mode"] == "distributed" and jobs["prelabel"]["tasks"] == N_POSTS, jobs
    assert replica_b.metrics()["llm_calls"] == N_POSTS
    prelabeled = time.monotonic()

    # 2. Enough annotations for a run, made through the SDK as annotators would.
    chosen: list[tuple[int, str]] = []
    per_label: Counter[str] = Counter()
    for task, text in sorted(texts.items()):
        if per_label[truth[text]] < PER_LABEL:
            per_label[truth[text]] += 1
            chosen.append((task, truth[text]))
    with ThreadPoolExecutor(4) as pool:
        list(
            pool.map(
                lambda pick: ls.annotations.create(id=pick[0], result=taxonomy.result(pick[1])),
                chosen,
            )
        )
    assert replica_a.post("/setup", json=schema).json()["model_version"] == zero_shot

    # 3. Start Training; worker 1 is killed mid-fit; worker 2 finishes the run.
    worker1, worker2 = cluster.workers["w1"], cluster.workers["w2"]
    registry = Registry(cluster.model_dir, project)
    with ServingProbe(cluster.replicas, project, posts[0]["text"]) as probe:
        since = time.time()
        # Host 2 frozen while the button is pressed, so the run lands on worker 1.
        os.killpg(worker2.pid, signal.SIGSTOP)
        try:
            ls.ml.train(id=ml_id)
            wait_for(
                status_is(
                    replica_b,
                    project,
                    lambda s: s["state"] == "running" and s.get("started", 0) > since,
                ),
                timeout=120,
                what="worker 1 to start the training run",
            )
        finally:
            os.killpg(worker2.pid, signal.SIGCONT)
        wait_for(
            status_is(replica_b, project, lambda s: s.get("phase") == "training (fine-tune)"),
            timeout=120,
            what="the run to reach its fine-tune",
        )
        os.killpg(worker1.pid, signal.SIGKILL)  # the whole host gone, no goodbye
        assert worker1.wait(timeout=30) == -signal.SIGKILL
        killed_at = time.time()
        at_kill = replica_b.get(f"/training?project={project}").json()
        kinds = [meta["kind"] for meta in registry.versions()]
        assert at_kill.get("phase") == "training (fine-tune)" and kinds == ["head"], (
            f"worker 1 got past the fine-tune before it was killed: {at_kill}, {kinds}"
        )
        assert list(registry.versions_dir.glob(".staging-*")), "no half-written version"
        assert worker2.poll() is None, "worker 2 is gone"

        status = replica_a.wait_training(project, since=since, timeout=300)
        finished_at = time.time()
        assert status["state"] == "finished", status
        assert status["requested_by"] == "Start Training", status
        # What serves now is worker 2's: its head, or its fine-tune when that judged better
        # (the run's status names its last candidate, promoted or kept).
        new = registry.serving()
        assert new and registry.meta(new)["created"] > killed_at, (new, status)
        # Worker 2 ran it: the finished run started after worker 1 died, and says so.
        assert status["started"] > killed_at, status
        assert f"project {project}: promoted " in cluster.worker_logs["w2"].read_text()
        # Worker 1 got as far as its head, the run's first candidate, and no further.
        promoted_by_w1 = re.findall(
            rf"project {project}: promoted (v\d+ \w+)", cluster.worker_logs["w1"].read_text()
        )
        assert promoted_by_w1 == ["v1 head"], promoted_by_w1
        for replica in (replica_a, replica_b):
            wait_for(
                lambda r=replica: (
                    r.post("/predict", json=probe.payload).json()["model_version"] == new
                ),
                timeout=120,
                what=f"{replica.url} to serve {new}",
            )
            assert replica.post("/setup", json=schema).json()["model_version"] == new
        wait_for(
            lambda: all(probe.versions(name, finished_at, time.time()) for name in ("a", "b")),
            timeout=60,
            what="the serving probe's answers after the run",
        )

    # Serving stayed valid: every answer of either replica, during and after, was the LLM
    # or a complete, committed version, and both answered while no worker ran the job.
    assert not probe.errors, probe.errors[:10]
    committed = set(registry.names())
    for name in ("a", "b"):
        during = probe.versions(name, killed_at, finished_at)
        assert during, f"replica {name} answered nothing while the run was taken over"
        assert set(probe.versions(name, since, time.time())) <= {zero_shot, *committed}
        assert probe.versions(name, finished_at, time.time())[-1] == new

    # Nothing lost: the lane is clear in Redis, the promoted version is complete on the
    # shared disk, the dead worker's half-written folder is gone, nothing was asked twice.
    import redis

    store = RedisJobState(redis.Redis.from_url(cluster.redis_url))
    wait_for(
        lambda: not store.busy(project, "training"),
        timeout=30,
        what="worker 2 to give the training lease back",
    )
    bits = store.redis.hmget(store.key(project, "training"), "pending", "running")
    assert [int(v or 0) for v in bits] == [0, 0], bits
    assert replica_b.get(f"/training?project={project}").json()["state"] == "finished"
    assert registry.serving() == new
    # Worker 1's head, then worker 2's whole run: its head and its fine-tune, each complete.
    metas = registry.versions()
    assert [kind_of(meta) for meta in metas] == ["head", "head", "fine-tune"], metas
    for meta in metas:
        files = {path.name for path in (registry.versions_dir / meta["version"]).iterdir()}
        weights = (
            {HEAD_FILE, JUDGE_HEAD_FILE}
            if kind_of(meta) == "head"
            else {path.name for path in cluster.base_model.iterdir()}
        )
        assert weights | {"meta.json"} <= files, files
    assert not list(registry.versions_dir.glob(".staging-*"))
    assert cluster.llm.requests == N_POSTS
    print(
        f"pre-labeled after {prelabeled - started:.0f} s; killed {killed_at - since:.0f} s "
        f"after Start Training; worker 2 finished {finished_at - killed_at:.0f} s later; "
        f"{time.monotonic() - started:.0f} s in all"
    )
