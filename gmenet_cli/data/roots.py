"""Where datasets live when `--root` is not given: one conventional place per source, found by name.

Look-up order for `gmenet prepare --src NAME` (the first place that holds NAME's layout wins):
  1. `--root PATH` (always wins; no look-up)
  2. `./datasets/NAME` under the current directory
  3. `$GMENET_DATASETS/NAME`
  4. `DATASETS_DIR/NAME`, where DATASETS_DIR is `datasets_dir:` in the settings file
     (`$GMENET_CONFIG_DIR/settings.yaml`, default `~/.config/gmenet/settings.yaml`)
This is ultralytics' `datasets_dir` setting and torchvision's `root` convention, for expression datasets.
"""

from __future__ import annotations

import os
from pathlib import Path

from gmenet_cli.data.layouts import LAYOUTS, looks_like
from gmenet_cli.errors import UsageError

ENV_DATASETS = "GMENET_DATASETS"
SETTINGS_KEYS = ("datasets_dir",)


def settings_file() -> Path:
    base = os.environ.get("GMENET_CONFIG_DIR")
    return Path(base) / "settings.yaml" if base else Path.home() / ".config" / "gmenet" / "settings.yaml"


def read_settings() -> dict:
    """The user's settings file (missing = no settings); unknown keys are errors that name the valid ones."""
    path = settings_file()
    if not path.is_file():
        return {}
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise UsageError(f"settings file {path} is not valid YAML: {str(e).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise UsageError(f"settings file {path} must be a mapping such as 'datasets_dir: /data/faces'")
    unknown = sorted(set(data) - set(SETTINGS_KEYS))
    if unknown:
        raise UsageError(f"settings file {path}: unknown key '{unknown[0]}'. Valid keys: {', '.join(SETTINGS_KEYS)}")
    return data


def candidates(src: str) -> list[tuple[str, Path]]:
    """(where the place comes from, the path) in look-up order."""
    out = [("./datasets", Path("datasets") / src)]
    env = os.environ.get(ENV_DATASETS)
    if env:
        out.append((f"${ENV_DATASETS}", Path(env).expanduser() / src))
    base = read_settings().get("datasets_dir")
    if base:
        out.append((f"datasets_dir in {settings_file()}", Path(str(base)).expanduser() / src))
    return out


def find_root(src: str) -> Path:
    """The first conventional place holding `src`'s layout, or a UsageError that lists every place tried
    and what the layout must contain there."""
    places = candidates(src)
    for _, path in places:
        if looks_like(src, path):
            return path
    tried = "; ".join(f"{path} ({label})" for label, path in places)
    layout = LAYOUTS[src].replace("\n", " ")
    hint = "" if os.environ.get(ENV_DATASETS) else f", or set {ENV_DATASETS}"
    raise UsageError(f"no {src} dataset found; looked in: {tried}. It must hold {layout} (ROOT = that folder). "
                     f"Put it there, pass --root PATH{hint}, or run gmenet datasets to see every source")


def survey() -> list[dict]:
    """Every source: where it looks and where (if anywhere) it found its layout."""
    rows = []
    for src in LAYOUTS:
        places = candidates(src)
        found = next((str(p) for _, p in places if looks_like(src, p)), None)
        rows.append({"source": src, "looks_in": [str(p) for _, p in places], "found": found,
                     "layout": LAYOUTS[src].replace("\n", " ")})
    return rows
