"""`takemeter queue`, for those who run scripts by path."""

import sys

from takemeter.cli import main

main(["queue", *sys.argv[1:]])
