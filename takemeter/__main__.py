"""`python -m takemeter` is the `takemeter` command."""

from takemeter.cli import main

main()
