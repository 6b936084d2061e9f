"""`python -m pgqueue`: the `pgqueue` command (pgqueue.cli)."""

from pgqueue.cli import main

main(prog_name="pgqueue")
