"""`takemeter export`, for those who run scripts by path."""

import sys

from takemeter.cli import main

main(["export", *sys.argv[1:]])
