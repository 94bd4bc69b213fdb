"""Where training runs live and what bare commands pick up: run directories, the newest store, teacher and
model. Run directory shape (as ultralytics): runs/<command>/<name>/ with config.yaml, weights/{last,best}.pt,
results.csv and results.png; names are exp, exp2, ... unless --name is given.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from gmenet_cli import checkpoint
from gmenet_cli.data.store import Store, find_latest_store
from gmenet_cli.errors import DataError, GmenetError, UsageError

RUNS = Path("runs")


@dataclass
class RunResult:
    run_dir: Path
    best: Path
    last: Path
    rows: list
    best_metric: float
    store: Path  # the prepared store it trained on
    model: str  # the trained architecture
    batch_size: int  # the batch size it trained with (shrunk to a small dataset if need be)


def resolve_run_dir(command: str, name: str | None, resume: bool) -> tuple[Path, bool]:
    """-> (run dir, resuming). Auto-numbered exp, exp2, ... unless --name; an unfinished named run resumes."""
    base = RUNS / command
    if name:
        if "/" in name or "\\" in name or name in (".", ".."):
            raise UsageError(f"--name must be a plain folder name, got '{name}'")
        run = base / name
        last = run / "weights" / "last.pt"
        if last.is_file():
            ckpt = checkpoint.load(last, mmap=True)  # only the flag is needed
            if ckpt.get("finished"):
                if resume:
                    raise UsageError(f"run {run} already finished ({ckpt.get('epoch')} epochs); nothing to resume")
                raise UsageError(f"run {run} already finished; choose another --name or delete it")
            return run, True
        if resume:
            raise UsageError(f"--resume: no {last} to resume from")
        return run, False
    if resume:
        candidates = sorted(base.glob("*/weights/last.pt"), key=lambda p: p.stat().st_mtime, reverse=True)
        for last in candidates:
            if not checkpoint.load(last, mmap=True).get("finished"):
                return last.parent.parent, True
        raise UsageError(f"--resume: no unfinished run under {base}")
    n = 1
    while (base / ("exp" if n == 1 else f"exp{n}")).exists():
        n += 1
    return base / ("exp" if n == 1 else f"exp{n}"), False


def resolve_store(data: str | None, message) -> Store:
    if data:
        return Store(data)
    latest = find_latest_store()
    if latest is None:
        raise DataError("no prepared store found under prepared/; run gmenet prepare first or pass --data", exit_code=2)
    message(f"using the most recent prepared store: {latest}")
    return Store(latest)


def unfinished(best: Path) -> tuple[int, int | str] | None:
    """(epochs done, epochs planned) when the run beside this best.pt has not ended, else None (finished, or
    no readable last.pt). Only the metadata is read (mmap)."""
    last = Path(best).with_name("last.pt")
    if not last.is_file():
        return None
    try:
        state = checkpoint.load(last, mmap=True)
    except GmenetError:
        return None
    if state.get("finished", True):
        return None
    return state.get("epoch"), state.get("config", {}).get("train", {}).get("epochs", "?")


def paired_teacher(student: str) -> str:
    """The teacher architecture whose attention maps pair with `student`'s: same size name
    (gmenet_s -> teacher_s, gmenet_s2 -> teacher_s2)."""
    return "teacher_" + student.split("_", 1)[-1]


def find_latest_teacher(student: str) -> Path | None:
    """The newest distill-teacher run whose architecture pairs with `student`; a UsageError naming what was
    found when only teachers of other sizes exist."""
    wanted = paired_teacher(student)
    found = sorted((RUNS / "distill-teacher").glob("*/weights/best.pt"), key=lambda p: p.stat().st_mtime, reverse=True)
    others = []
    for path in found:
        name = checkpoint.load(path, mmap=True)["model"]["name"]
        if name == wanted:
            return path
        others.append(f"{name} in {path.parent.parent}")
    if others:
        raise UsageError(f"no {wanted} teacher under {RUNS / 'distill-teacher'} for the {student} student (found "
                         f"{', '.join(others[:3])}); run gmenet distill-teacher --model {wanted}, or pass --teacher "
                         "CKPT")
    return None


def find_latest_weights() -> Path | None:
    """For bare `gmenet evaluate`: the newest student, else the newest teacher."""
    for command in ("train", "distill-teacher"):
        found = sorted((RUNS / command).glob("*/weights/best.pt"), key=lambda p: p.stat().st_mtime)
        if found:
            return found[-1]
    return None
