"""``python -m landscape`` runs the CLI (also under torchrun)."""

from landscape.cli.main import main

main()
