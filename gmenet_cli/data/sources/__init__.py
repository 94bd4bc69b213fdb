"""Dataset adapters, one per on-disk layout; `SOURCES` maps the `--src` name to its module."""

from gmenet_cli.data.sources import affectnet, expw, fer2013, ferplus, folder, raf

SOURCES = {"raf": raf, "fer2013": fer2013, "ferplus": ferplus, "expw": expw, "affectnet": affectnet, "folder": folder}
