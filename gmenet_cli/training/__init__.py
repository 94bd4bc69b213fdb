"""Training: the two commands (build.py), the one loop they share (loop.py), its optimiser and schedule
(optim.py), results.csv (history.py) and run directories (runs.py)."""

from gmenet_cli.training.build import train_student, train_teacher
from gmenet_cli.training.loop import Callbacks, TrainingError
from gmenet_cli.training.runs import RunResult, find_latest_weights, resolve_run_dir

__all__ = ["train_teacher", "train_student", "Callbacks", "TrainingError", "RunResult", "find_latest_weights",
           "resolve_run_dir"]
