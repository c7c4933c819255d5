"""Unit tests for backend.llm.cache: the SQLite answer cache and its usage counters."""

from __future__ import annotations

import pytest

from backend.llm.cache import COUNTERS, AnswerCache, CachedAnswer


@pytest.fixture
def cache(tmp_path):
    return AnswerCache(tmp_path / "sub" / "cache.sqlite")


def test_creates_parent_folder(tmp_path):
    path = tmp_path / "a" / "b" / "cache.sqlite"
    AnswerCache(path)
    assert path.is_file()


def test_put_get_round_trip(cache):
    answer = CachedAnswer("health_claim", 0.75, '{"label": "health_claim"}')
    cache.put("k1", answer, model="m")
    assert cache.get_many(["k1"]) == {"k1": answer}


def test_an_answer_keeps_what_it_cost(cache):
    answer = CachedAnswer("health_claim", 0.75, "{}", prompt_tokens=412, completion_tokens=9)
    cache.put("k1", answer, model="m")
    assert cache.get_many(["k1"])["k1"] == answer


def test_a_cache_made_before_token_counts_opens_and_reads_them_as_zero(tmp_path):
    import sqlite3

    path = tmp_path / "old.sqlite"
    with sqlite3.connect(path) as db:  # the table as earlier versions made it
        db.execute(
            "CREATE TABLE answers (key TEXT PRIMARY KEY, label TEXT,"
            " confidence REAL, raw TEXT, model TEXT, created REAL)"
        )
        db.execute("INSERT INTO answers VALUES ('old', 'x', 0.5, 'x', 'm', 0)")
    cache = AnswerCache(path)
    assert cache.get_many(["old"]) == {"old": CachedAnswer("x", 0.5, "x", 0, 0)}
    cache.put("new", CachedAnswer("y", 0.5, "y", 3, 4), model="m")
    assert cache.get_many(["new"])["new"].completion_tokens == 4


def test_get_many_returns_only_found_keys(cache):
    cache.put("a", CachedAnswer("x", 0.5, "x"), model="m")
    cache.put("b", CachedAnswer("y", 0.25, "y"), model="m")
    found = cache.get_many(["a", "missing", "b", "a"])
    assert set(found) == {"a", "b"}
    assert found["b"] == CachedAnswer("y", 0.25, "y")
    assert cache.get_many([]) == {}
    assert cache.get_many(iter(["a"])) == {"a": CachedAnswer("x", 0.5, "x")}


def test_none_label_and_confidence_are_stored(cache):
    cache.put("off-list", CachedAnswer(None, None, "banana"), model="m")
    cache.put("no-logprobs", CachedAnswer("health_claim", None, "health_claim"), model="m")
    found = cache.get_many(["off-list", "no-logprobs"])
    assert found["off-list"] == CachedAnswer(None, None, "banana")
    assert found["no-logprobs"].label == "health_claim"
    assert found["no-logprobs"].confidence is None


def test_put_replaces_existing_key(cache):
    cache.put("k", CachedAnswer(None, None, "bad"), model="m")
    cache.put("k", CachedAnswer("ok", 0.9, "good"), model="m")
    assert cache.get_many(["k"]) == {"k": CachedAnswer("ok", 0.9, "good")}
    assert cache.usage()["cached_answers"] == 1


def test_persists_across_instances(tmp_path):
    path = tmp_path / "cache.sqlite"
    first = AnswerCache(path)
    first.put("k", CachedAnswer("personal_experience", 0.125, "raw"), model="m")
    first.count(llm_calls=3)
    second = AnswerCache(path)  # re-running the schema setup must not reset anything
    assert second.get_many(["k"]) == {"k": CachedAnswer("personal_experience", 0.125, "raw")}
    assert second.usage()["llm_calls"] == 3
    assert second.usage()["cached_answers"] == 1


def test_get_many_more_than_500_keys(cache):
    # 302 stored keys, spread over all three chunks, including each chunk's last key
    stored = sorted({*range(0, 1200, 4), 499, 999})
    for i in stored:
        cache.put(f"key-{i}", CachedAnswer(f"L{i}", i / 1200, f"raw{i}"), model="m")
    keys = [f"key-{i}" for i in range(1200)]  # 1200 keys: chunks of 500, 500 and 200
    found = cache.get_many(keys)
    assert set(found) == {f"key-{i}" for i in stored}
    assert len(found) == 302
    assert found["key-499"].raw == "raw499"
    assert found["key-999"].raw == "raw999"
    assert found["key-1196"] == CachedAnswer("L1196", 1196 / 1200, "raw1196")  # third chunk
    assert found["key-500"].label == "L500"  # first key of the second chunk
    assert "key-501" not in found


def test_usage_starts_at_zero(cache):
    usage = cache.usage()
    assert set(usage) == {*COUNTERS, "cached_answers"}
    assert all(value == 0 for value in usage.values())


def test_count_adds_up(cache):
    cache.count(llm_calls=1, prompt_tokens=120, completion_tokens=7)
    cache.count(llm_calls=2, cache_hits=5, cache_misses=3, prompt_tokens=80)
    cache.count(llm_failures=1, completion_tokens=0)
    cache.count()
    usage = cache.usage()
    assert usage["llm_calls"] == 3
    assert usage["prompt_tokens"] == 200
    assert usage["completion_tokens"] == 7
    assert usage["cache_hits"] == 5
    assert usage["cache_misses"] == 3
    assert usage["llm_failures"] == 1
    assert usage["cached_answers"] == 0


def test_cached_answers_counts_rows(cache):
    for i in range(7):
        cache.put(f"k{i}", CachedAnswer("x", None, ""), model="m")
    cache.put("k0", CachedAnswer("y", None, ""), model="other")  # replaces, no new row
    assert cache.usage()["cached_answers"] == 7


def test_threads_and_a_forked_child_share_the_file_through_their_own_connections(cache):
    """Each thread keeps a connection; a forked child opens its own and leaves the one it
    inherited alone, so the parent's writes go on and both see all answers."""
    import os
    import threading

    cache.put("parent", CachedAnswer("x", None, ""), model="m")  # this thread's connection
    claims = []
    threads = [
        threading.Thread(target=lambda i=i: claims.append(cache.claim("k", f"t{i}", 60)))
        for i in range(8)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(claims) == [False] * 7 + [True]  # one claim, whichever thread won

    pid = os.fork()
    if pid == 0:  # the child: its own connection, then exit without running pytest on
        try:
            cache.put("child", CachedAnswer("y", None, ""), model="m")
            ok = set(cache.get_many(["parent", "child"])) == {"parent", "child"}
        except Exception:
            ok = False
        os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    cache.put("after", CachedAnswer("z", None, ""), model="m")
    assert set(cache.get_many(["parent", "child", "after"])) == {"parent", "child", "after"}
    assert cache.usage()["cached_answers"] == 3
