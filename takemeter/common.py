"""Plumbing shared by the `takemeter` subcommands.

Settings come from backend.config.load_settings (the same variables as the backend). A
failure a user can fix (wrong LABEL_STUDIO_URL, bad LABEL_STUDIO_API_KEY, a missing
project, an empty held-out set) ends the script with one line on stderr and exit code 2,
never a traceback: `run(main)` turns the known error types into such a line.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import httpx
from label_studio_sdk import LabelStudio
from label_studio_sdk.core.api_error import ApiError

from backend.config import ConfigError, Settings, load_settings
from backend.domain.dataset import Example, is_held_out, labeled_examples
from backend.domain.taxonomy import Taxonomy, TaxonomyError, parse_taxonomy
from backend.files import atomic_open, write_json_atomic, write_text_atomic
from backend.labelstudio import client as ls_client
from takemeter import stack_settings

ROOT = Path(__file__).resolve().parent.parent

__all__ = [  # atomic_open & co: the scripts write every file atomically, through here
    "DEFAULT_CONFIG",
    "CliError",
    "Source",
    "add_json_argument",
    "add_source_arguments",
    "atomic_open",
    "connect",
    "emit",
    "fail",
    "find_project",
    "load_source",
    "parser",
    "read_export",
    "read_taxonomy",
    "run",
    "settings",
    "write_json_atomic",
    "write_text_atomic",
]

EXIT_FAILURE = 2
DEFAULT_CONFIG = ROOT / "label_config.xml"


class CliError(Exception):
    """A problem the user can fix; its message is the one line printed."""


def fail(message: str) -> NoReturn:
    """Print one line to stderr and exit with code 2."""
    print(f"error: {' '.join(str(message).split())}", file=sys.stderr)
    sys.exit(EXIT_FAILURE)


def run(main: Callable[[], int | None]) -> NoReturn:
    """Run `main` and exit with its code; known failures become one line on stderr."""
    try:
        code = main()
    except (CliError, ConfigError, TaxonomyError) as exc:
        fail(str(exc))
    except ApiError as exc:
        fail(ls_client.describe_error(exc))
    except httpx.HTTPError as exc:
        fail(f"network error: {type(exc).__name__}: {exc}")
    except OSError as exc:
        fail(f"{type(exc).__name__}: {exc}")
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    except Exception as exc:
        # A bug rather than a setting: one line here, the traceback on request.
        if os.environ.get("TAKEMETER_DEBUG"):
            raise
        fail(f"unexpected {type(exc).__name__}: {exc} (set TAKEMETER_DEBUG=1 for the traceback)")
    sys.exit(code or 0)


def settings() -> Settings:
    """The backend's settings from the environment; in a folder with a local stack
    (`takemeter up`) and no Label Studio named, the stack's (takemeter.stack_settings)."""
    env, said = stack_settings.fill(os.environ)
    if said:
        print(said, file=sys.stderr)
    try:
        return load_settings(env)
    except ConfigError as exc:
        raise CliError(str(exc)) from None


# ------------------------------------------------------------------ Label Studio


def connect(config: Settings) -> LabelStudio:
    """An SDK client whose URL and token (a personal access token or a legacy token) were
    checked with one cheap call."""
    if not config.label_studio_url:
        raise CliError("LABEL_STUDIO_URL is not set (e.g. http://localhost:8080)")
    if not config.label_studio_api_key:
        raise CliError(
            "LABEL_STUDIO_API_KEY is not set (Account & Settings -> Personal "
            "Access Token, or a legacy token)"
        )
    try:
        client = ls_client.connect(config)
    except ConfigError as exc:  # e.g. an expired personal access token
        raise CliError(str(exc)) from None
    problem = ls_client.check_access(config, client=client)
    if problem is not None:
        raise CliError(problem.message)
    return client


def find_project(client: LabelStudio, ref: str | int, *, url: str | None = None) -> Any:
    """A project by id, or by exact title when `ref` is not a number."""
    text = str(ref).strip()
    where = f"the Label Studio at {url}" if url else "Label Studio"
    if text.isdigit():
        try:
            return client.projects.get(id=int(text))
        except ApiError as exc:
            if exc.status_code == 404:
                raise CliError(
                    f"project {text} does not exist in {where} (check --project)"
                ) from None
            raise
    listed: list[Any] = list(client.projects.list(title=text))
    matches = [p for p in listed if p.title == text]
    if not matches:
        raise CliError(f"no project titled {text!r} in {where} (check --project)")
    if len(matches) > 1:
        ids = ", ".join(str(p.id) for p in matches)
        raise CliError(f"several projects are titled {text!r} (ids {ids}): pass the id")
    return matches[0]


def read_taxonomy(path: Path) -> tuple[str, Taxonomy]:
    try:
        config = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise CliError(f"cannot read the label config {path}: {exc.strerror}") from None
    return config, parse_taxonomy(config)


def read_export(path: Path) -> list[dict]:
    """Tasks from a Label Studio JSON export file."""
    try:
        tasks = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror}") from None
    except json.JSONDecodeError as exc:
        raise CliError(f"{path} is not JSON ({exc.msg} at line {exc.lineno})") from None
    if not isinstance(tasks, list) or not all(isinstance(t, dict) and "data" in t for t in tasks):
        raise CliError(f"{path} is not a Label Studio JSON export (a list of tasks)")
    return tasks


@dataclass
class Source:
    """The tasks a script works on, from a live project or from an export file."""

    tasks: list[dict]
    taxonomy: Taxonomy
    project: int | None
    description: str
    client: LabelStudio | None = None


def add_source_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--project", help="Label Studio project id or exact title")
    group.add_argument(
        "--from-file",
        type=Path,
        metavar="EXPORT.json",
        help="a Label Studio JSON export instead of a live project",
    )
    parser.add_argument(
        "--config",
        type=Path,
        default=DEFAULT_CONFIG,
        help="label config for --from-file (default: %(default)s)",
    )


def load_source(args: argparse.Namespace, config: Settings) -> Source:
    """Tasks and taxonomy per --project / --from-file (see add_source_arguments)."""
    if args.from_file is not None:
        tasks = read_export(args.from_file)
        _, taxonomy = read_taxonomy(args.config)
        # Exports carry the project id on each task: it finds the model registry.
        ids = {t.get("project") for t in tasks if isinstance(t.get("project"), int)}
        project = ids.pop() if len(ids) == 1 else None
        return Source(tasks, taxonomy, project, str(args.from_file))
    client = connect(config)
    project = find_project(client, args.project, url=config.label_studio_url)
    taxonomy = parse_taxonomy(project.label_config or "")
    tasks = ls_client.all_tasks(client, project.id)
    return Source(tasks, taxonomy, project.id, f"project {project.id} ({project.title})", client)


def held_out_examples(source: Source, percent: int) -> list[Example]:
    """The held-out side's annotated examples; a clear error when there are none."""
    examples = labeled_examples(
        source.tasks, source.taxonomy, holdout_percent=percent, held_out=True
    )
    if not examples:
        held = sum(is_held_out(t, percent=percent) for t in source.tasks)
        raise CliError(
            f"the held-out set is empty: {source.description} has {held} "
            f"held-out tasks (data.split=test, HOLDOUT_PERCENT={percent}) and "
            f"none carries a usable annotation"
        )
    return examples


# ------------------------------------------------------------------------ output


def add_json_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--json",
        action="store_true",
        help="print the summary as one JSON object on stdout (human-readable "
        "lines then go to stderr)",
    )


def emit(summary: dict, lines: list[str], *, as_json: bool) -> None:
    """Human lines on stdout, or with --json: JSON on stdout and the lines on stderr."""
    human = sys.stderr if as_json else sys.stdout
    for line in lines:
        print(line, file=human)
    if as_json:
        print(json.dumps(summary, indent=2, ensure_ascii=False, default=str))


def parser(description: str | None) -> argparse.ArgumentParser:
    """An ArgumentParser whose help shows the module docstring as written."""
    return argparse.ArgumentParser(
        description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )
