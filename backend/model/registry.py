"""Versioned models on disk, one registry per Label Studio project; the only module that
knows the layout of a project's folder:

    MODEL_DIR/projects/<id>/versions/<version>/   weights, tokenizer, meta.json
    MODEL_DIR/projects/<id>/serving               the promoted version's name
    MODEL_DIR/projects/<id>/queue.json            the review queue after the last re-score
    MODEL_DIR/projects/<id>/*.lock                cross-process locks (training, sync)

A version is written into a hidden temporary folder and renamed into `versions/` only
when complete, and `serving` is replaced with os.replace, so a run killed at any moment
leaves the registry valid. Workers read `serving` on each request and switch without a
restart. Version names are checked against one pattern before any path is built from
them, so no name reaches outside `versions/`.
"""

from __future__ import annotations

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


def check_project_id(project: object) -> int:
    if (not isinstance(project, int) or isinstance(project, bool)
            or not 0 < project <= MAX_PROJECT_ID):
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
    def __init__(self, model_dir: Path, project: int) -> None:
        self.project = check_project_id(project)
        self.root = model_dir / "projects" / str(project)
        self.versions_dir = self.root / "versions"
        self._warned: set[str] = set()

    # ---------------------------------------------------------------- project files

    def lock_file(self, purpose: str, *, create: bool = True) -> Path:
        """A lock file for `purpose` ("train", "sync"); the project folder is made only
        when `create` (a status query must not make folders for any id it is asked)."""
        if create:
            self.root.mkdir(parents=True, exist_ok=True)
        return self.root / f"{purpose}.lock"

    def write_queue(self, summary: dict) -> None:
        write_json_atomic(self.root / "queue.json", summary)

    def read_queue(self) -> dict | None:
        """The last re-score's review queue, or None before the first one."""
        try:
            return json.loads((self.root / "queue.json").read_text())
        except FileNotFoundError:
            return None

    # -------------------------------------------------------------------- versions

    def new_version_name(self) -> str:
        number = 1 + max((int(p.name[1:].split(".")[0]) for p in self._version_folders()
                          if p.name[1:].split(".")[0].isdigit()), default=0)
        return f"v{number}.{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}"

    def staging_dir(self) -> Path:
        """An empty hidden folder to write a version into before `commit`."""
        self.versions_dir.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=".staging-", dir=self.versions_dir))

    def commit(self, staging: Path, name: str, meta: dict) -> Path:
        """Write meta.json last, then rename the folder into place (atomic)."""
        write_meta(staging, {**meta, "version": check_version_name(name)})
        final = self.versions_dir / name
        os.rename(staging, final)
        return final

    def promote(self, name: str) -> None:
        if self.meta(name) is None:
            raise ValueError(f"version {name!r} is not a complete version")
        write_text_atomic(self.root / "serving", name)

    def serving(self) -> str | None:
        """The promoted version, if it is complete."""
        try:
            name = (self.root / "serving").read_text().strip()
        except FileNotFoundError:
            return None
        return name if self.meta(name) is not None else None

    def path(self, name: str) -> Path:
        return self.versions_dir / check_version_name(name)

    def meta(self, name: str) -> dict | None:
        """The version's metadata, or None (with one log line) if it is incomplete or the
        name is not a version name."""
        try:
            folder = self.path(name)
        except InvalidName:
            return None
        try:
            meta = read_meta(folder)
            if not (folder / "config.json").is_file():
                raise ValueError("config.json is missing")
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

    def clean_staging(self) -> None:
        """Remove folders left by runs that were killed mid-write."""
        for folder in self.versions_dir.glob(".staging-*"):
            shutil.rmtree(folder, ignore_errors=True)

    def _version_folders(self) -> list[Path]:
        if not self.versions_dir.is_dir():
            return []
        return [p for p in self.versions_dir.iterdir()
                if p.is_dir() and VERSION_NAME.fullmatch(p.name)]
