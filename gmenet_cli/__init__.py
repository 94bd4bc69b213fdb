"""gmenet: low-resolution facial expression recognition with GME-Net, from the command line.

The package is a library first (every command calls one function in it) and a Typer CLI second
(`gmenet_cli.cli`). Importing the package is cheap: torch is imported only by the modules that need it.
"""

import os as _os

__version__ = "0.1.0"

# OpenCV reads its decoder pixel limit once, at first use: set it before anything imports cv2.
# (gmenet_cli.data.imageio also checks PNG/JPEG/GIF/BMP headers itself.)
_os.environ.setdefault("CV_IO_MAX_IMAGE_PIXELS", "100000000")
