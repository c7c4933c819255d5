"""Versioned models on disk, one registry per Label Studio project; the only module that
knows the layout of a project's folder:

    MODEL_DIR/projects/<id>/versions/<version>/   meta.json, and the weights: a fine-tune's
                                                  model and tokenizer, or a head's HEAD_FILE
    MODEL_DIR/projects/<id>/serving               the promoted version's name
    MODEL_DIR/projects/<id>/queue.json            the review queue after the last re-score
    MODEL_DIR/projects/<id>/calibration.json      the score calibrator (domain.calibration)
    MODEL_DIR/projects/<id>/embeddings/<hash>/    post embeddings, a store per encoder
    MODEL_DIR/projects/<id>/*.lock                cross-process locks (training, sync)
    MODEL_DIR/projects/<id>/questions/<name>/     the same (versions, serving, ...) for each
                                                  other question of a multi-question config

A version is written into a hidden temporary folder and renamed into `versions/` only
when complete, and `serving` is replaced with os.replace, so a run killed at any moment
leaves the registry valid. Workers read `serving` on each request and switch without a
restart. Version names are checked against one pattern before any path is built from
them, so no name reaches outside `versions/`. Everything outside the registry knows a
measured version by its shown name ("v3 head 84%/25"), written into meta.json at commit and
never changed; `folder` maps it back.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import time
from pathlib import Path

from backend.files import write_json_atomic, write_text_atomic

log = logging.getLogger(__name__)

META = "meta.json"
HEAD_FILE = "head.npz"  # a linear head's weights (backend.model.head), fit on every label
JUDGE_HEAD_FILE = "judge-head.npz"  # the same head fit without the judge posts
# A multiple-choice question's head (backend.model.multilabel_head), and its judged twin.
MULTILABEL_HEAD_FILE = "multilabel-head.npz"
JUDGE_MULTILABEL_HEAD_FILE = "judge-multilabel-head.npz"
# A version's kind: a head on the frozen encoder, the whole encoder fine-tuned, or a
# multiple-choice question's head of a sigmoid a label.
KINDS = {"head": HEAD_FILE, "fine-tune": "config.json", "multilabel-head": MULTILABEL_HEAD_FILE}
# v<number>.<suffix> (new_version_name uses a UTC timestamp): no separator, no dot-dot.
VERSION_NAME = re.compile(r"v\d{1,9}\.[0-9A-Za-z_-]{1,64}")
MAX_PROJECT_ID = 2**31 - 1  # Label Studio's ids are 32-bit integers


class InvalidName(ValueError):
    """A version name or project id that cannot name anything in the registry."""


def check_version_name(name: object) -> str:
    if not isinstance(name, str) or not VERSION_NAME.fullmatch(name):
        shown = repr(name)[:60]
        raise InvalidName(f"{shown} is not a model version name (like v3.20260101T120000)")
    return name


# The name a measured version is shown under: its number, its kind and its accuracy on
# its judge posts, like "v3 head 84%/25". Label Studio's prediction tab cuts model
# versions longer than 15 characters to their first 8 and last 6, so the judge size is
# left out where it would not fit. Names of older versions ("v3 84% (n=25)") still parse.
SHOWN_NAME = re.compile(r"v(\d{1,9}) [0-9a-z%()=/ -]{1,40}")
SHORT_KIND = {"head": "head", "fine-tune": "tune", "multilabel-head": "head"}
# A question's folder: its <Choices> name where it is a plain one, else a digest of it.
QUESTION_FOLDER = re.compile(r"[A-Za-z0-9_-]{1,64}")
SHOWN_LIMIT = 15


def kind_of(meta: dict) -> str:
    """ "head" or "fine-tune"; versions from before heads existed are fine-tunes."""
    kind = meta.get("kind", "fine-tune")
    return kind if kind in KINDS else "fine-tune"


def shown_name(folder: str, meta: dict) -> str:
    """The name a version is shown under, from the figures its run measured (fixed at
    commit: Label Studio keys predictions by it); the folder name for a version without
    figures."""
    validation = meta.get("validation")
    if not isinstance(validation, dict):
        return folder
    number = check_version_name(folder).split(".", 1)[0]
    kind = SHORT_KIND[kind_of(meta)]
    accuracy, posts = validation.get("model_accuracy"), validation.get("judge_posts")
    if not isinstance(accuracy, (int, float)) or not isinstance(posts, int) or posts <= 0:
        return f"{number} {kind} unmeasured"
    full = f"{number} {kind} {accuracy:.0%}/{posts}"
    return full if len(full) <= SHOWN_LIMIT else f"{number} {kind} {accuracy:.0%}"


def name_in(meta: dict) -> str:
    """The name a committed version's metadata gives it."""
    name = meta.get("shown_name")
    return name if isinstance(name, str) and name else meta["version"]


def check_project_id(project: object) -> int:
    if (
        not isinstance(project, int)
        or isinstance(project, bool)
        or not 0 < project <= MAX_PROJECT_ID
    ):
        raise InvalidName(f"{str(project)[:40]!r} is not a Label Studio project id")
    return project


def read_meta(folder: Path) -> dict:
    """A version folder's metadata (raises OSError or ValueError when unreadable)."""
    meta = json.loads((folder / META).read_text())
    if not isinstance(meta, dict):
        raise ValueError(f"{META} is not a JSON object")
    return meta


def write_meta(folder: Path, meta: dict) -> None:
    write_json_atomic(folder / META, meta)


class Registry:
    def __init__(self, model_dir: Path, project: int, question: str | None = None) -> None:
        """The registry of a project's first single-choice question, or (`question`: its
        <Choices> name) of another question of its config."""
        self.project = check_project_id(project)
        self.project_root = model_dir / "projects" / str(project)
        self.root = self.project_root
        if question is not None:
            folder = question if QUESTION_FOLDER.fullmatch(question) else None
            folder = folder or "q-" + hashlib.sha256(question.encode()).hexdigest()[:16]
            self.root = self.project_root / "questions" / folder
        self.versions_dir = self.root / "versions"
        self._warned: set[str] = set()

    # ---------------------------------------------------------------- project files

    def lock_file(self, purpose: str, *, create: bool = True) -> Path:
        """A lock file for `purpose` ("train", "sync"); the project folder is made only
        when `create` (a status query must not make folders for any id it is asked)."""
        if create:
            self.root.mkdir(parents=True, exist_ok=True)
        return self.root / f"{purpose}.lock"

    def embeddings_folder(self, base_model: str, max_length: int) -> Path:
        """Where this project's post embeddings by one encoder are stored (see
        backend.model.embeddings); the name hashes the encoder and max_length."""
        digest = hashlib.sha256(f"{base_model}\n{max_length}".encode()).hexdigest()[:16]
        return self.project_root / "embeddings" / digest  # shared by every question

    def write_queue(self, summary: dict) -> None:
        write_json_atomic(self.root / "queue.json", summary)

    def read_queue(self) -> dict | None:
        """The last re-score's review queue, or None before the first one."""
        try:
            return json.loads((self.root / "queue.json").read_text())
        except FileNotFoundError:
            return None

    def write_calibration(self, calibrator: dict) -> None:
        write_json_atomic(self.root / "calibration.json", calibrator)

    def read_calibration(self) -> dict | None:
        """The last fitted calibrator's stored form; None before the first fit, or (with
        one log line) when the file cannot be read: the prior scores until the next fit."""
        path = self.root / "calibration.json"
        try:
            stored = json.loads(path.read_text())
            if not isinstance(stored, dict):
                raise ValueError("not a JSON object")
            return stored
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            if path.name not in self._warned:
                self._warned.add(path.name)
                log.warning("ignoring %s (%s); scoring with the prior", path, exc)
            return None

    # -------------------------------------------------------------------- versions

    def new_version_name(self) -> str:
        number = 1 + max(
            (
                int(p.name[1:].split(".")[0])
                for p in self._version_folders()
                if p.name[1:].split(".")[0].isdigit()
            ),
            default=0,
        )
        return f"v{number}.{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}"

    def staging_dir(self) -> Path:
        """An empty hidden folder to write a version into before `commit`."""
        self.versions_dir.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=".staging-", dir=self.versions_dir))

    def commit(self, staging: Path, name: str, meta: dict) -> Path:
        """Write meta.json last, then rename the folder into place (atomic)."""
        meta = {**meta, "version": check_version_name(name)}
        shown = shown_name(name, meta)
        write_meta(staging, meta if shown == name else {**meta, "shown_name": shown})
        final = self.versions_dir / name
        os.rename(staging, final)
        return final

    def promote(self, name: str) -> None:
        """Serve the version `name` (its folder name or its shown name)."""
        if self.meta(name) is None:
            raise ValueError(f"version {name!r} is not a complete version")
        write_text_atomic(self.root / "serving", self.folder(name))

    def serving(self) -> str | None:
        """The promoted version's shown name, if it is complete."""
        try:
            folder = (self.root / "serving").read_text().strip()
        except FileNotFoundError:
            return None
        meta = self.meta(folder)
        return name_in(meta) if meta is not None else None

    def name(self, version: str) -> str:
        """The shown name of a complete version given by either name; else `version`."""
        meta = self.meta(version)
        return name_in(meta) if meta is not None else version

    def folder(self, name: object) -> str:
        """The folder a version name points at: a folder name itself, or the version whose
        stored shown name is exactly `name` (raises InvalidName for anything else)."""
        match = SHOWN_NAME.fullmatch(name) if isinstance(name, str) else None
        if match:
            number = f"v{match.group(1)}."
            for folder in self._version_folders():
                if not folder.name.startswith(number):
                    continue
                try:
                    if read_meta(folder).get("shown_name") == name:
                        return folder.name
                except (OSError, ValueError):
                    continue
            raise InvalidName(
                f"{str(name)[:60]!r} names no model version of project {self.project}"
            )
        return check_version_name(name)

    def path(self, name: str) -> Path:
        return self.versions_dir / self.folder(name)

    def meta(self, name: str) -> dict | None:
        """The version's metadata, or None (with one log line) if it is incomplete or the
        name is not a version name."""
        try:
            folder = self.path(name)
        except InvalidName:
            return None
        try:
            meta = read_meta(folder)
            weights = KINDS[kind_of(meta)]
            if not (folder / weights).is_file():
                raise ValueError(f"{weights} is missing")
            return meta
        except (OSError, ValueError) as exc:
            if name not in self._warned:
                self._warned.add(name)
                log.warning("ignoring model version %r: incomplete or corrupt (%s)", name[:80], exc)
            return None

    def versions(self) -> list[dict]:
        """Complete versions, oldest first."""
        found = []
        for folder in self._version_folders():
            meta = self.meta(folder.name)
            if meta is not None:
                found.append(meta)
        return sorted(found, key=lambda m: m.get("created", 0))

    def names(self) -> list[str]:
        """The shown names of the complete versions, oldest first."""
        return [name_in(meta) for meta in self.versions()]

    def clean_staging(self) -> None:
        """Remove folders left by runs that were killed mid-write."""
        for folder in self.versions_dir.glob(".staging-*"):
            shutil.rmtree(folder, ignore_errors=True)

    def _version_folders(self) -> list[Path]:
        if not self.versions_dir.is_dir():
            return []
        return [
            p for p in self.versions_dir.iterdir() if p.is_dir() and VERSION_NAME.fullmatch(p.name)
        ]
