"""The one canonical expression vocabulary shared by every source.

Order follows FERPlus (the label.csv column order), so FERPlus class indices are unchanged. A store's
`classes` is this list filtered to what the source provides, in this order; each source's own label ->
canonical name mapping is recorded in the store manifest.
"""

CANONICAL = ["neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear", "contempt"]

# Names seen in folder-per-class datasets and other tools, mapped to the canonical ones.
SYNONYMS = {
    "neutral": "neutral", "neutrality": "neutral",
    "happy": "happiness", "happiness": "happiness", "joy": "happiness", "smile": "happiness",
    "surprise": "surprise", "surprised": "surprise",
    "sad": "sadness", "sadness": "sadness",
    "anger": "anger", "angry": "anger",
    "disgust": "disgust", "disgusted": "disgust",
    "fear": "fear", "fearful": "fear", "afraid": "fear", "scared": "fear",
    "contempt": "contempt", "contemptuous": "contempt",
}


def canonical_subset(names) -> list[str]:
    """The canonical names in `names`, in canonical order."""
    wanted = set(names)
    return [c for c in CANONICAL if c in wanted]
