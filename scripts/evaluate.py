"""`takemeter evaluate`, for those who run scripts by path."""

import sys

from takemeter.cli import main

main(["evaluate", *sys.argv[1:]])
