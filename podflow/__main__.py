"""``python -m podflow`` runs the CLI."""

from podflow.cli.main import main

main()
