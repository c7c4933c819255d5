"""Hostile input against the backend under gunicorn: generated requests over every
endpoint must get an answer below 500, never a traceback, and no worker may die.

The backend has a dead LLM (a closed port, no retries) and no Label Studio, so nothing
waits on inference; /predict still parses every config and task it is sent.
"""

from __future__ import annotations

import base64
import json
import os
import re
import time
from collections import Counter

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import ROOT, wait_for

AUTH = ("fuzz", "fuzz-secret-1")
MAX_BYTES = 1024 * 1024
MAX_TASKS = 50
WORKERS = 2
TARGET_REQUESTS = 1500

ENDPOINTS = [
    ("GET", "/health"),
    ("POST", "/setup"),
    ("POST", "/predict"),
    ("POST", "/webhook"),
    ("GET", "/versions"),
    ("POST", "/versions/promote"),
    ("GET", "/training"),
    ("GET", "/jobs"),
    ("GET", "/queue"),
    ("GET", "/metrics"),
]
GUARDED = [e for e in ENDPOINTS if e[1] != "/health"]


class Fuzzer:
    """Sends requests to the live backend and counts them; any 5xx fails at once."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.http = requests.Session()
        self.http.trust_env = False  # no ~/.netrc credentials, no proxies
        self.sent = 0
        self.statuses: Counter[int] = Counter()

    def send(self, method: str, path: str, *, auth=AUTH, expect=None, **kwargs):
        headers = {"Connection": "close", **kwargs.pop("headers", {})}  # spread over workers
        response = self.http.request(
            method, self.url + path, auth=auth, headers=headers, timeout=60, **kwargs
        )
        self.sent += 1
        self.statuses[response.status_code] += 1
        assert response.status_code < 500, (method, path, response.status_code, response.text[:300])
        if expect is not None:
            assert response.status_code in expect, (
                method,
                path,
                response.status_code,
                response.text[:300],
            )
        return response

    def raw(
        self, method: str, path: str, body: bytes, *, content_type="application/json", **kwargs
    ):
        return self.send(
            method,
            path,
            data=body,
            headers={"Content-Type": content_type, **kwargs.pop("headers", {})},
            **kwargs,
        )


def answering_pids(url: str, samples: int = 20) -> set[int]:
    """The pids GET /health reports, each from a fresh connection (any worker may take it)."""
    pids = set()
    for _ in range(samples):
        pids.add(
            requests.get(url + "/health", timeout=30, headers={"Connection": "close"}).json()["pid"]
        )
    return pids


def booted_pids(log_path) -> set[int]:
    """Every worker gunicorn ever started: a dead worker's replacement adds a pid."""
    return set(map(int, re.findall(r"Booting worker with pid: (\d+)", log_path.read_text())))


def all_answer(url: str, pids: set[int]) -> bool:
    """Whether every worker in `pids` answers (sampled until each was seen)."""
    seen: set[int] = set()
    for _ in range(10):
        seen |= answering_pids(url)
        if seen >= pids:
            break
    return seen == pids


@pytest.fixture(scope="module")
def fuzz_target(start_backend, tmp_path_factory):
    return start_backend(
        auth=AUTH,
        MAX_PREDICT_TASKS=str(MAX_TASKS),
        MAX_REQUEST_BYTES=str(MAX_BYTES),
        LLM_BASE_URL="http://127.0.0.1:9/v1",
        LLM_MAX_RETRIES="0",
        LLM_TIMEOUT="1",
        LABEL_STUDIO_URL="",
        LABEL_STUDIO_API_KEY="",
        WORKERS=str(WORKERS),
        # A valid START_TRAINING spawns a runner (it fails at once without
        # Label Studio): at most one at a time, no annotation-count runs.
        MAX_TRAINING_RUNNERS="1",
        TRAIN_AFTER_ANNOTATIONS="1000000",
        LLM_CACHE=str(tmp_path_factory.mktemp("fuzz") / "llm.sqlite"),
    )


# ------------------------------------------------------------------------ strategies


def escape(text: str) -> str:
    return (
        text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")
    )


BILLION_LAUGHS = (
    '<?xml version="1.0"?><!DOCTYPE View [<!ENTITY l0 "lol">'
    + "".join(f'<!ENTITY l{i} "{f"&l{i - 1};" * 10}">' for i in range(1, 10))
    + ']><View><Header value="&l9;"/><Text name="t" value="$text"/>'
    '<Choices name="c" toName="t"><Choice value="&l9;"/><Choice value="b"/></Choices></View>'
)
XXE = (
    '<?xml version="1.0"?><!DOCTYPE View [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
    '<View><Header value="&x;"/><Text name="t" value="$text"/><Choices name="c" '
    'toName="t"><Choice value="&x;"/><Choice value="b"/></Choices></View>'
)
XXE_PARAMETER = (
    '<?xml version="1.0"?><!DOCTYPE View [<!ENTITY % p SYSTEM '
    '"http://127.0.0.1:9/evil.dtd"> %p;]><View><Text name="t" value="$text"/>'
    '<Choices name="c" toName="t"><Choice value="a"/><Choice value="b"/>'
    "</Choices></View>"
)
QUADRATIC = (
    '<?xml version="1.0"?><!DOCTYPE View [<!ENTITY a "' + "A" * 40000 + '">]>'
    '<View><Header value="' + "&a;" * 5000 + '"/><Text name="t" value="$text"/>'
    '<Choices name="c" toName="t"><Choice value="' + "&a;" * 2000 + '"/>'
    '<Choice value="b"/></Choices></View>'
)
SMALL_QUADRATIC = (
    '<?xml version="1.0"?><!DOCTYPE View [<!ENTITY a "' + "A" * 2000 + '">]>'
    '<View><Header value="' + "&a;" * 40 + '"/><Text name="t" value="$text"/>'
    '<Choices name="c" toName="t"><Choice value="x&a;"/><Choice value="b"/>'
    "</Choices></View>"
)
EXPLODING = [BILLION_LAUGHS, XXE, XXE_PARAMETER, QUADRATIC, SMALL_QUADRATIC]

names = st.text(min_size=0, max_size=12)
xml_values = st.one_of(
    names,
    st.sampled_from(["", " ", "\x00", "$", "$text", "&amp;", "a" * 3000, "\u202e", "\U0001f600"]),
)
# Text XML 1.0 allows in attributes (no control characters, no lone surrogates).
xml_safe = st.text(st.characters(exclude_categories=("Cs", "Cc", "Cn")), min_size=1, max_size=30)


@st.composite
def label_configs(draw) -> object:
    """Label configs: valid, odd but well-formed, broken, exploding, or not a string."""
    kind = draw(
        st.sampled_from(
            ["built"] * 8 + ["real"] * 4 + ["exploding", "text", "other", "huge", "nul"]
        )
    )
    if kind == "exploding":
        return draw(st.sampled_from(EXPLODING))
    if kind == "text":
        return draw(st.text(max_size=200))
    if kind == "other":
        return draw(
            st.one_of(
                st.none(),
                st.integers(),
                st.floats(),
                st.booleans(),
                st.lists(st.text(max_size=5), max_size=3),
                st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=3),
            )
        )
    if kind == "huge":  # beyond the config size limit, within MAX_REQUEST_BYTES
        return "<View>" + "<Header value='x'/>" * 20000 + "</View>"
    if kind == "real":
        real = (ROOT / "label_config.xml").read_text()
        aliased = iter(range(10))
        return draw(
            st.sampled_from(
                [
                    real,
                    real.replace("single-radio", "multiple"),  # multi-select
                    real.replace('toName="text"', 'toName="nowhere"'),
                    re.sub(
                        "<Choice value=", lambda _: f"<Choice alias='a{next(aliased)}' value=", real
                    ),
                    real.replace(
                        "</View>",
                        real[real.index("<Choices") : real.index("</View>")].replace(
                            'name="label"', 'name="second"'
                        )
                        + "</View>",
                    ),
                ]
            )
        )
    # Mostly sane where it decides whether a config is usable, so /predict goes on to
    # the tasks; hostile everywhere else.
    sane = draw(st.sampled_from([True, True, True, False]))
    text_name = "text" if sane else draw(st.sampled_from(["t", ""]) | names)
    field = "$text" if sane else draw(st.sampled_from(["$t", "text", "$", "$a.b", ""]) | xml_values)
    blocks = []
    for _ in range(draw(st.integers(1, 3))):  # several Choices
        to_name = draw(
            st.sampled_from([text_name, text_name, "nowhere", f"{text_name},nowhere", ""])
        )
        choice = draw(st.sampled_from(["single", "single-radio", "multiple", "", "bogus"]))
        choices = []
        values = draw(
            st.lists(
                xml_safe if sane else xml_values, unique=True, min_size=2 if sane else 0, max_size=6
            )
        )
        for value in map(escape, values):
            attrs = f'value="{value}"'
            if draw(st.booleans()):  # an alias, unique or not
                attrs += f' alias="{escape(draw(st.sampled_from(["a", value + "!"])))}"'
            if draw(st.booleans()):
                attrs += f' hint="{escape(draw(xml_safe if sane else xml_values))}"'
            if not sane and draw(st.sampled_from([False] * 9 + [True])):
                attrs = f'alias="{value}"'  # no value at all
            choices.append(f"<Choice {attrs}/>")
        name = draw(xml_safe if sane else names)
        blocks.append(
            f'<Choices name="{escape(name)}" toName="{escape(to_name)}" '
            f'choice="{choice}">{"".join(choices)}</Choices>'
        )
    objects = f'<Text name="{escape(text_name)}" value="{escape(field)}"/>'
    if draw(st.booleans()):
        objects += '<Image name="img" value="$image"/>'
    config = f"<View>{objects}{''.join(blocks)}</View>"
    if kind == "nul":
        config = config.replace("<View>", "<View>\x00", 1)
    if draw(st.sampled_from([False] * 9 + [True])):
        config = config[: draw(st.integers(0, len(config)))]  # cut anywhere
    return config


def mostly(usual, rare):
    """`usual` four times in five, else `rare`."""
    return st.sampled_from([True] * 4 + [False]).flatmap(lambda u: usual if u else rare)


PROJECT_IDS = [
    -1,
    0,
    1,
    7,
    "7.1700000000",
    "1.abc",
    "../",
    "../../1",
    "²",
    "١",
    "1e3",
    "0x10",
    " 8 ",
    "8\x00",
    "9" * 300,
    int("9" * 300),
    2**63,
    2**31,
    2**31 - 1,
    -(2**63),
    1.5,
    float("inf"),
    True,
    None,
    [],
    [1],
    {},
    {"id": "../"},
    {"id": {"id": 1}},
    {"id": 3},
    {"id": 2**63},
    "",
    "1" * 5000,
    "/etc/passwd",
]

projects = st.one_of(
    st.sampled_from(PROJECT_IDS), st.integers(), st.text(max_size=30), st.floats(allow_nan=False)
)

VERSIONS = [
    "/etc/passwd",
    "../../x",
    "v1.x/../../y",
    "/tmp/v1.x",
    "v1.x\x00",
    "v1..",
    "v1.x/",
    "v1.x\\..\\y",
    "~/v1.x",
    "v1.%2e%2e",
    "v99.absent",
    "v1.20260101T000000",
    "..",
    ".",
    "",
    "v" + "1" * 20 + ".x",
    "v1." + "a" * 100,
    "file:///etc/passwd",
    "v1.x\n",
    "V1.X",
    "v1.\u0661",
    "serving",
    "../serving",
    "v1.x/../../../jobs",
]
versions = st.one_of(
    st.sampled_from(VERSIONS),
    st.text(max_size=40),
    st.none(),
    st.integers(),
    st.lists(st.text(max_size=4), max_size=2),
)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)

texts = st.one_of(
    st.text(max_size=300),
    st.just("\x00" * 50),
    st.just("a\x00b"),
    st.just("   "),
    st.just("x" * 200_000),
    st.just("\U0001f600" * 5000),
    st.integers(),
    st.none(),
    st.lists(st.text(max_size=5), max_size=3),
    st.dictionaries(st.text(max_size=3), st.text(max_size=3)),
    st.floats(),
    st.booleans(),
)

task_items = st.one_of(
    st.fixed_dictionaries({"id": json_values, "data": st.fixed_dictionaries({"text": texts})}),
    st.fixed_dictionaries({"id": st.integers(), "data": json_values}),  # data not a dict
    st.fixed_dictionaries({"data": st.dictionaries(st.text(max_size=5), texts, max_size=3)}),
    json_values,
)
task_lists = st.lists(task_items, min_size=1, max_size=8)
not_task_lists = st.one_of(
    st.dictionaries(st.text(max_size=5), task_items, max_size=3),  # tasks as a dict
    st.text(max_size=20),
    st.integers(),
    st.floats(),
    st.none(),
    st.just([]),
)


@st.composite
def tasks_values(draw) -> object:
    """Mostly a list of (hostile) tasks, so /predict goes on to them; else not a list."""
    return draw(task_lists if draw(st.sampled_from([True] * 4 + [False])) else not_task_lists)


def hostile_json_body(obj: object) -> bytes:
    return json.dumps(obj, allow_nan=True).encode()


# -------------------------------------------------------------------- the hostile run

FUZZ = settings(
    deadline=None,
    database=None,
    max_examples=200,
    print_blob=True,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.filter_too_much,
        HealthCheck.large_base_example,
        HealthCheck.function_scoped_fixture,
    ],
)


def run_fuzz(fuzzer: Fuzzer) -> None:
    """Each group is a hypothesis search of its own; every example sends 1-3 requests."""

    @FUZZ
    @given(config=label_configs(), project=projects)
    def setup(config, project):
        response = fuzzer.raw(
            "POST", "/setup", hostile_json_body({"project": project, "schema": config})
        )
        assert response.status_code in (200, 400)

    @settings(FUZZ, max_examples=600)
    @given(config=label_configs(), tasks=tasks_values(), project=projects)
    def predict(config, tasks, project):
        response = fuzzer.raw(
            "POST",
            "/predict",
            hostile_json_body({"tasks": tasks, "label_config": config, "project": project}),
        )
        assert response.status_code in (200, 400, 413)  # 413: a body over MAX_REQUEST_BYTES
        if response.status_code == 200:
            assert len(response.json()["results"]) == len(tasks)

    @FUZZ
    @given(
        action=mostly(
            st.sampled_from(
                [
                    "ANNOTATION_CREATED",
                    "START_TRAINING",
                    "ANNOTATIONS_DELETED",
                    "TASKS_CREATED",
                    "",
                    "x" * 101,
                ]
            ),
            json_values,
        ),
        project=mostly(st.sampled_from([{"id": 5}, 6, "7.1700000000"]), projects),
        extra=json_values,
    )
    def webhook(action, project, extra):
        response = fuzzer.raw(
            "POST",
            "/webhook",
            hostile_json_body({"action": action, "project": project, "annotation": extra}),
        )
        assert response.status_code in (200, 201, 400)

    @FUZZ
    @given(project=mostly(st.integers(1, 20), projects), version=versions)
    def promote(project, version):
        response = fuzzer.raw(
            "POST", "/versions/promote", hostile_json_body({"project": project, "version": version})
        )
        assert response.status_code in (400, 404)  # no version exists anywhere

    @settings(FUZZ, max_examples=300)
    @given(
        path=st.sampled_from(["/versions", "/training", "/jobs", "/queue"]),
        project=projects | st.text(max_size=20),
        fmt=st.sampled_from([None, "csv", "x"]),
        body=st.none() | json_values,
    )
    def queries(path, project, fmt, body):
        params = {"project": project if isinstance(project, str) else json.dumps(project)}
        if fmt:
            params.update(format=fmt, all="1")
        if body is None:
            response = fuzzer.send("GET", path, params=params)
        else:  # older callers of /versions sent the project in a JSON body
            response = fuzzer.raw("GET", path, hostile_json_body(body), params=params)
        assert response.status_code in (200, 400, 404)

    @FUZZ
    @given(
        endpoint=st.sampled_from(ENDPOINTS),
        body=st.binary(max_size=300)
        | st.text(max_size=300).map(lambda t: t.encode("utf-8", "surrogatepass")),
        content_type=st.sampled_from(
            [
                "application/json",
                "text/plain",
                "application/json; charset=utf-16",
                "application/x-www-form-urlencoded",
                "multipart/form-data; boundary=x",
                "",
            ]
        ),
    )
    def raw_bodies(endpoint, body, content_type):
        fuzzer.raw(endpoint[0], endpoint[1], body, content_type=content_type)

    @settings(FUZZ, max_examples=100)
    @given(
        endpoint=st.sampled_from(GUARDED),
        auth=st.sampled_from(
            [
                None,
                ("fuzz", "wrong"),
                ("wrong", "fuzz-secret-1"),
                ("", ""),
                ("fuzz", ""),
                ("fuzz-secret-1", "fuzz"),
                ("fuzz", "fuzz-secret-1\x00"),
                ("fuzz", "fuzz-secret-"),
                "Basic !!!",
                "Basic " + base64.b64encode(b"fuzz").decode(),
                "Basic " + base64.b64encode(b"\xff\xfe:\xff").decode(),
                "Bearer fuzz-secret-1",
                'Digest username="fuzz", realm="x"',
                "Basic",
                "basic " + "A" * 3000,
                "Basic " + base64.b64encode(b"fuzz:fuzz-secret-1:x").decode(),
            ]
        ),
    )
    def bad_auth(endpoint, auth):
        headers = {}
        if isinstance(auth, str):
            headers["Authorization"], auth = auth, None
        fuzzer.send(
            endpoint[0],
            endpoint[1],
            auth=auth,
            headers=headers,
            json={"project": 1, "version": "v1.x"},
            expect={401},
        )

    for group in (setup, predict, webhook, promote, queries, raw_bodies, bad_auth):
        sent, statuses = fuzzer.sent, fuzzer.statuses.copy()
        group()
        print(
            f"{group.__name__}: {fuzzer.sent - sent} requests, "
            f"{dict(sorted((fuzzer.statuses - statuses).items()))}"
        )


def run_fixed(fuzzer: Fuzzer) -> None:
    """The hostile cases worth sending every time, whatever hypothesis draws."""
    for method, path in ENDPOINTS:
        # Deep nesting, as arrays and objects, with and without a JSON content type.
        for depth in (1000, 100_000):
            for body in (
                "[" * depth + "]" * depth,
                '{"a":' * depth + "1" + "}" * depth,
                '{"project": 1, "tasks": ' + "[" * depth + "]" * depth + "}",
            ):
                fuzzer.raw(method, path, body.encode())
        # Bigger than MAX_REQUEST_BYTES, with a length and chunked (no length given).
        huge = b'{"project": 1, "label_config": "' + b"x" * (MAX_BYTES + 10) + b'"}'
        # Only handlers that read the body refuse it; the others answer without reading.
        expect = {413} if method == "POST" or path == "/versions" else None
        fuzzer.raw(method, path, huge, expect=expect)
        # Chunked, the body is cut at MAX_REQUEST_BYTES (werkzeug's LimitedStream), so
        # what is read is not JSON: a 400 where the handler reads JSON without asking.
        fuzzer.raw(
            method,
            path,
            (huge[i : i + 65536] for i in range(0, len(huge), 65536)),
            expect=expect and {400, 413},
        )
        # A number too long for Python's int conversion, and odd JSON constants.
        for body in (
            '{"project": ' + "1" * 5000 + "}",
            '{"project": NaN}',
            '{"project": -Infinity, "version": "v1.x"}',
            '{"project": 1e999}',
            '{"project": "\\ud800", "schema": "\\udfff", "action": "\\ud800"}',
            "\ufeff{}",
            '{"project": "1"}' * 3,
        ):
            fuzzer.raw(method, path, body.encode("utf-8"))
        for wrong in ("PUT", "DELETE", "PATCH", "OPTIONS"):
            fuzzer.send(wrong, path)
    # Too many tasks (413), and just enough.
    real = (ROOT / "label_config.xml").read_text()
    many = [{"id": i, "data": {"text": f"post {i}"}} for i in range(MAX_TASKS + 1)]
    fuzzer.send(
        "POST", "/predict", json={"tasks": many, "label_config": real, "project": 1}, expect={413}
    )
    fuzzer.send(
        "POST",
        "/predict",
        json={"tasks": many[:MAX_TASKS], "label_config": real, "project": 1},
        expect={200},
    )
    for config in EXPLODING:
        # A bounded expansion (80 kB) may parse; the others must be refused, and quickly.
        expect = {200, 400} if config is SMALL_QUADRATIC else {400}
        for path, key in (("/setup", "schema"), ("/predict", "label_config")):
            started = time.monotonic()
            fuzzer.send(
                "POST",
                path,
                json={key: config, "project": 1, "tasks": [{"data": {"text": "x"}}]},
                expect=expect,
            )
            assert time.monotonic() - started < 5
    # Odd paths and query strings.
    for path in (
        "/versions/../../etc/passwd",
        "/%2e%2e/%2e%2e/etc/passwd",
        "/health/",
        "/versions/promote/x",
        "/" + "a" * 5000,
        "/queue?project=1&format=csv&all=1",
        "/training?project=1&project=2",
        "/versions?project=%00",
        "/%00",
    ):
        fuzzer.send("GET", path)


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::hypothesis.errors.HypothesisWarning")  # huge reprs
def test_hostile_requests_get_4xx_and_leave_the_workers_alive(fuzz_target):
    started = time.monotonic()
    workers = booted_pids(fuzz_target.log_path)
    assert len(workers) == WORKERS
    # Every worker has loaded the app and answers before the first hostile request.
    wait_for(lambda: all_answer(fuzz_target.url, workers), timeout=120, what="all workers")
    fuzzer = Fuzzer(fuzz_target.url)
    run_fixed(fuzzer)
    print(f"\nfixed cases: {fuzzer.sent} requests")
    run_fuzz(fuzzer)
    elapsed = time.monotonic() - started
    print(
        f"\n{fuzzer.sent} hostile requests in {elapsed:.0f} s: "
        f"{dict(sorted(fuzzer.statuses.items()))}"
    )

    assert fuzzer.sent >= TARGET_REQUESTS
    assert not any(status >= 500 for status in fuzzer.statuses)
    assert {400, 401, 404, 413} <= set(fuzzer.statuses)
    # The same workers answer before and after: none died, none was replaced.
    assert all_answer(fuzz_target.url, workers)
    assert booted_pids(fuzz_target.log_path) == workers
    for pid in workers:
        os.kill(pid, 0)  # still alive
    log_text = fuzz_target.log_path.read_text()
    for sign in (
        "Traceback",
        "WORKER TIMEOUT",
        "was sent SIG",
        "Worker exiting",
        "internal error",
        "Exception in worker",
    ):
        assert sign not in log_text, sign
