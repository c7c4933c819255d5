"""Versioned models on disk, one registry per Label Studio project.

    MODEL_DIR/projects/<id>/versions/<version>/   weights, tokenizer, meta.json
    MODEL_DIR/projects/<id>/serving               the promoted version's name

A version is written into a hidden temporary folder and renamed into `versions/` only
when complete, and `serving` is replaced with os.replace, so a run killed at any moment
leaves the registry valid. Workers read `serving` on each request and switch without a
restart.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path

from backend.files import write_json_atomic, write_text_atomic

log = logging.getLogger(__name__)

META = "meta.json"


class Registry:
    def __init__(self, model_dir: Path, project: int) -> None:
        self.root = model_dir / "projects" / str(project)
        self.versions_dir = self.root / "versions"
        self._warned: set[str] = set()

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
        write_json_atomic(staging / META, {**meta, "version": name})
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
        return self.versions_dir / name

    def meta(self, name: str) -> dict | None:
        """The version's metadata, or None (with one log line) if it is incomplete."""
        path = self.versions_dir / name / META
        try:
            meta = json.loads(path.read_text())
            if not isinstance(meta, dict):
                raise ValueError("meta.json is not a JSON object")
            if not (self.versions_dir / name / "config.json").is_file():
                raise ValueError("config.json is missing")
            return meta
        except (OSError, ValueError) as exc:
            if name not in self._warned:
                self._warned.add(name)
                log.warning("ignoring model version %s: incomplete or corrupt (%s)", name, exc)
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
        return [p for p in self.versions_dir.iterdir() if p.is_dir() and not
                p.name.startswith(".")]
