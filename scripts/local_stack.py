"""`takemeter up`, for those who run scripts by path."""

import sys

from takemeter.cli import main

main(["up", *sys.argv[1:]])
