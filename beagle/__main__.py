"""`python -m beagle`: the same as the `beagle` command."""

from beagle.cli import main

main()
