"""`python -m funcformer` runs the command line."""

from ._cli import main

main()
