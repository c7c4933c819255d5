"""Unit tests for backend.model.registry: versioned models on disk, crash-safe."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import pytest

from backend.model.registry import META, Registry, write_json_atomic, write_text_atomic

NAME = re.compile(r"^v(\d+)\.\d{8}T\d{6}$")


def _staged(registry: Registry) -> Path:
    """A minimal complete model folder, as a training run would leave before commit."""
    staging = registry.staging_dir()
    (staging / "config.json").write_text("{}")
    return staging


def _commit(registry: Registry, created: float, **meta) -> str:
    name = registry.new_version_name()
    registry.commit(_staged(registry), name, {"created": created, **meta})
    return name


def _number(name: str) -> int:
    match = NAME.match(name)
    assert match, name
    return int(match.group(1))


def test_empty_registry(tmp_path):
    registry = Registry(tmp_path, 3)
    assert registry.root == tmp_path / "projects" / "3"
    assert registry.versions() == []
    assert registry.serving() is None
    assert _number(registry.new_version_name()) == 1
    registry.clean_staging()  # no versions folder yet: nothing to do, no error


def test_version_names_increase(tmp_path):
    registry = Registry(tmp_path, 1)
    numbers = [_number(_commit(registry, created=float(i))) for i in range(3)]
    assert numbers == [1, 2, 3]
    assert _number(registry.new_version_name()) == 4


def test_version_number_counts_past_ten(tmp_path):
    registry = Registry(tmp_path, 1)
    (registry.versions_dir / "v10.20240101T000000").mkdir(parents=True)
    (registry.versions_dir / "v9.20240101T000000").mkdir()
    assert _number(registry.new_version_name()) == 11


def test_commit_writes_meta_and_moves_folder(tmp_path):
    registry = Registry(tmp_path, 1)
    staging = _staged(registry)
    final = registry.commit(staging, "v1.20240101T000000", {"created": 5.0, "macro_f1": 0.8})
    assert final == registry.path("v1.20240101T000000")
    assert not staging.exists()
    assert (final / "config.json").read_text() == "{}"
    assert json.loads((final / META).read_text()) == {
        "created": 5.0,
        "macro_f1": 0.8,
        "version": "v1.20240101T000000",
    }
    assert registry.meta("v1.20240101T000000")["macro_f1"] == 0.8


def test_commit_promote_serving(tmp_path):
    registry = Registry(tmp_path, 1)
    first = _commit(registry, created=1.0)
    second = _commit(registry, created=2.0)
    assert registry.serving() is None  # committed is not promoted
    registry.promote(first)
    assert registry.serving() == first
    registry.promote(second)
    assert registry.serving() == second
    assert (registry.root / "serving").read_text() == second
    # A second Registry on the same folder (another worker) sees the same state.
    assert Registry(tmp_path, 1).serving() == second
    assert Registry(tmp_path, 2).serving() is None


def test_versions_oldest_first(tmp_path):
    registry = Registry(tmp_path, 1)
    late = _commit(registry, created=200.0)
    early = _commit(registry, created=100.0)
    assert [m["version"] for m in registry.versions()] == [early, late]


def test_promote_incomplete_version_raises(tmp_path):
    registry = Registry(tmp_path, 1)
    with pytest.raises(ValueError, match="v7"):
        registry.promote("v7.20240101T000000")  # does not exist
    no_config = registry.versions_dir / "v1.20240101T000000"
    no_config.mkdir(parents=True)
    (no_config / META).write_text('{"version": "v1.20240101T000000"}')
    with pytest.raises(ValueError):
        registry.promote(no_config.name)  # meta.json but no config.json
    assert not (registry.root / "serving").exists()


def test_staging_folder_is_ignored_and_cleaned(tmp_path):
    registry = Registry(tmp_path, 1)
    done = _commit(registry, created=1.0)
    registry.promote(done)
    # A run killed after writing everything but before the rename.
    killed = _staged(registry)
    write_json_atomic(killed / META, {"created": 2.0, "version": "v2.x"})
    assert killed.name.startswith(".staging-")
    assert [m["version"] for m in registry.versions()] == [done]
    assert registry.serving() == done
    assert _number(registry.new_version_name()) == 2
    registry.clean_staging()
    assert not killed.exists()
    assert [p.name for p in registry.versions_dir.iterdir()] == [done]
    assert registry.serving() == done


def test_incomplete_versions_ignored_with_one_warning_each(tmp_path, caplog):
    registry = Registry(tmp_path, 1)
    good = _commit(registry, created=1.0)
    no_meta = registry.versions_dir / "v2.20240101T000000"
    no_meta.mkdir()
    (no_meta / "config.json").write_text("{}")
    corrupt = registry.versions_dir / "v3.20240101T000000"
    corrupt.mkdir()
    (corrupt / "config.json").write_text("{}")
    (corrupt / META).write_text('{"version": "v3.2024')
    with caplog.at_level(logging.WARNING, logger="backend.model.registry"):
        for _ in range(3):
            assert [m["version"] for m in registry.versions()] == [good]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2
    assert sum(no_meta.name in w for w in warnings) == 1
    assert sum(corrupt.name in w for w in warnings) == 1


def test_serving_a_corrupt_version_is_none(tmp_path, caplog):
    registry = Registry(tmp_path, 1)
    name = _commit(registry, created=1.0)
    registry.promote(name)
    (registry.path(name) / META).write_text("not json {")
    with caplog.at_level(logging.WARNING, logger="backend.model.registry"):
        assert registry.serving() is None
        assert registry.serving() is None
    assert len([r for r in caplog.records if name in r.getMessage()]) == 1


def test_serving_a_missing_version_is_none(tmp_path):
    registry = Registry(tmp_path, 1)
    write_text_atomic(registry.root / "serving", "v9.20240101T000000\n")
    assert registry.serving() is None


def test_write_text_atomic_leaves_no_temp_files(tmp_path):
    target = tmp_path / "deep" / "serving"
    write_text_atomic(target, "v1")
    write_text_atomic(target, "v2")
    assert target.read_text() == "v2"
    assert [p.name for p in target.parent.iterdir()] == ["serving"]


def test_write_json_atomic(tmp_path):
    target = tmp_path / "meta.json"
    write_json_atomic(target, {"b": 1, "a": [1, 2]})
    assert json.loads(target.read_text()) == {"a": [1, 2], "b": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["meta.json"]
