"""`takemeter learning-curve`, for those who run scripts by path."""

import sys

from takemeter.cli import main

main(["learning-curve", *sys.argv[1:]])
