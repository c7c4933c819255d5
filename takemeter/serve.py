"""Run the backend under gunicorn, as in production (the settings come from the
environment: see the README's configuration table).

  takemeter serve            start it (replaces this process with gunicorn)
  takemeter serve --check    check the settings and exit
  takemeter serve --json     print the settings (secrets masked) as JSON, then start
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from takemeter import common


def main(argv: list[str] | None = None) -> int:
    parser = common.parser(__doc__)
    parser.add_argument("--check", action="store_true", help="check the settings and exit")
    common.add_json_argument(parser)
    args = parser.parse_args(argv)
    settings = common.settings()
    problem = settings.exposure_problem()
    if problem:
        raise common.CliError(problem)
    if args.json:
        print(json.dumps(settings.public(), indent=2), flush=True)
    if args.check:
        if not args.json:
            print(f"settings are valid; would listen on {settings.bind}")
        return 0
    gunicorn = Path(sys.executable).parent / "gunicorn"
    os.execv(
        str(gunicorn),
        [str(gunicorn), "-c", "python:backend.service.gunicorn_conf", "backend.service.wsgi:app"],
    )
    return 0  # not reached


if __name__ == "__main__":
    common.run(main)
