"""What each `--src` expects to find under its dataset root: one description per source, shown by
`gmenet prepare --help` and in the errors that say a dataset was not found. Plain strings, so the CLI can
show them without importing the adapters."""

LAYOUTS = {
    "ferplus": "ROOT/FER2013Train|FER2013Valid|FER2013Test/label.csv + PNGs (FERPlus vote counts)",
    "fer2013": "ROOT/fer2013.csv (emotion,pixels,Usage) or the CSV itself",
    "raf": "ROOT/EmoLabel/list_patition_label.txt + ROOT/Image/aligned/*_aligned.jpg,\n"
           "or the re-packed ROOT/{train,test}/{1..7}/*.jpg",
    "expw": "ROOT/label/label.lst + ROOT/image/origin/*.jpg (faces cropped from the boxes)",
    "affectnet": "ROOT/training.csv, ROOT/validation.csv + ROOT/Manually_Annotated_Images/...",
    "folder": "ROOT/<split>/<class>/*.jpg or ROOT/<class>/*.jpg",
}


def layout_help() -> str:
    """The table of layouts as a Click epilog (\\b keeps Click from rewrapping it)."""
    import textwrap

    lines = ["Sources and the files each expects under --root:", "", "\b"]
    for src, text in LAYOUTS.items():
        # lines of at most 78 columns, continued under the text: an 80-column terminal never re-wraps them
        wrapped = [w for part in text.split("\n") for w in textwrap.wrap(part, 78 - 13, break_on_hyphens=False)]
        lines.append(f"  {src:<10} {wrapped[0]}")
        lines += [f"  {'':<10} {w}" for w in wrapped[1:]]
    return "\n".join(lines) + "\n"

# Files (or folders) whose presence under a root says "this source's dataset is here".
MARKERS = {
    "ferplus": ["FER2013Train/label.csv", "FER2013Valid/label.csv", "FER2013Test/label.csv"],
    "fer2013": ["fer2013.csv"],
    "raf": ["EmoLabel/list_patition_label.txt", "train", "test"],
    "expw": ["label/label.lst"],
    "affectnet": ["training.csv", "validation.csv"],
    "folder": [],  # any folder of sub-folders
}


def looks_like(src: str, root) -> bool:
    """Whether `root` holds `src`'s layout (cheap: a few stat calls, nothing is read)."""
    from pathlib import Path

    root = Path(root)
    if src == "fer2013" and root.is_file():
        return root.suffix.lower() == ".csv"
    if not root.is_dir():
        return False
    if src == "folder":
        return any(p.is_dir() for p in root.iterdir())
    return any((root / m).exists() for m in MARKERS[src])
