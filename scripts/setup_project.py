"""`takemeter setup`, for those who run scripts by path."""

import sys

from takemeter.cli import main

main(["setup", *sys.argv[1:]])
