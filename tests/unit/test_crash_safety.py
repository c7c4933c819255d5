"""SIGKILL at any moment of a training run leaves the registry valid and the serving model
loadable, and the next run works."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest

from backend.model.classifier import Classifier
from backend.model.registry import Registry

pytestmark = pytest.mark.slow

# A runner stand-in: train the tiny model for real, commit and promote, over and over.
RUNNER = """
import sys, time
from pathlib import Path
from backend.model.registry import Registry
from backend.model.trainer import TrainConfig, fine_tune
model_dir, base = Path(sys.argv[1]), sys.argv[2]
registry = Registry(model_dir, 1)
texts = [f"post {i} about {'lows' if i % 2 else 'insulin prices'}" for i in range(40)]
labels = ["a" if i % 2 else "b" for i in range(40)]
while True:
    name = registry.new_version_name() + f"-{time.monotonic_ns()}"
    staging = registry.staging_dir()
    result = fine_tune(texts, labels, label_names=["a", "b"], out_dir=staging,
                       config=TrainConfig(base_model=base, epochs=1, batch_size=8))
    registry.commit(staging, name, {"labels": ["a", "b"], "created": time.time(),
                                    "max_length": 64})
    registry.promote(name)
    print("promoted", name, flush=True)
"""


def test_sigkill_during_training_never_breaks_the_registry(tmp_path, tiny_model):
    registry = Registry(tmp_path, 1)
    process = subprocess.Popen(
        [sys.executable, "-c", RUNNER, str(tmp_path), str(tiny_model)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout.readline().startswith("promoted")  # one complete version first
    # Kill at moments spread over a run: mid-training, mid-write, between versions.
    for delay in (0.05, 0.3, 0.7, 1.1):
        time.sleep(delay)
        serving = registry.serving()
        assert serving is not None
        Classifier(registry.path(serving)).predict_proba(["a new post"])
    process.send_signal(signal.SIGKILL)
    process.wait()

    serving = registry.serving()
    assert serving is not None
    model = Classifier(registry.path(serving))
    assert model.predict_proba(["still serving"]).shape == (1, 2)
    for meta in registry.versions():
        Classifier(registry.path(meta["version"]))  # every listed version loads
    registry.clean_staging()
    assert not list(registry.versions_dir.glob(".staging-*"))


def test_killed_at_many_points_the_registry_stays_valid(tmp_path, tiny_model):
    registry = Registry(tmp_path, 1)
    for delay in (0.01, 0.08, 0.15, 0.25):  # a tiny run takes a few tenths of a second
        process = subprocess.Popen(
            [sys.executable, "-c", RUNNER, str(tmp_path), str(tiny_model)],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert process.stdout.readline().startswith("promoted")
        time.sleep(delay)
        process.kill()
        process.wait()
        serving = registry.serving()
        assert serving in [m["version"] for m in registry.versions()]
        Classifier(registry.path(serving)).predict_proba(["after the kill"])
