"""One module per `cnnlab` subcommand (see cnnlab/cli.py)."""
