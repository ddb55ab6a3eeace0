"""metalib: the small PyTorch library behind the meta-learning course.

Every notebook imports it; the notebooks hold only teaching code and exercises.
See docs/ARCHITECTURE.md for the map of modules and the reasons behind them.
"""
from .device import get_device, seed_everything, make_generator
from .config import is_quick, maybe_quick
from .tasks import Task, EpisodeSampler
from .data import (Omniglot, OmniglotError, load_omniglot, download_omniglot, ClassSplit,
                   omniglot_split, SinusoidTasks)
from .evaluate import Accuracy, evaluate_accuracy, mean_ci95, query_accuracy
from .train import TrainConfig, History, TrainingDiverged, meta_train
from .checkpoint import save_checkpoint, load_checkpoint, UnsafeCheckpointError
from .nets import Conv4, MLP
from . import checks

__version__ = "0.1.0"

__all__ = [
    "get_device", "seed_everything", "make_generator", "is_quick", "maybe_quick",
    "Task", "EpisodeSampler", "Omniglot", "OmniglotError", "load_omniglot", "download_omniglot",
    "ClassSplit", "omniglot_split", "SinusoidTasks", "Accuracy", "evaluate_accuracy", "mean_ci95",
    "query_accuracy", "TrainConfig", "History", "TrainingDiverged", "meta_train",
    "save_checkpoint", "load_checkpoint", "UnsafeCheckpointError", "Conv4", "MLP", "checks",
]
