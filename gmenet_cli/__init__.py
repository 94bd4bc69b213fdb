"""gmenet: low-resolution facial expression recognition with GME-Net, from the command line.

The package is a library first (every command calls one function in it) and a Typer CLI second
(`gmenet_cli.cli`). Importing the package is cheap: torch is imported only by the modules that need it.
"""

__version__ = "0.1.0"
