"""`python -m gmenet_cli` runs the CLI (useful under torchrun)."""

from gmenet_cli.cli import main

main()
