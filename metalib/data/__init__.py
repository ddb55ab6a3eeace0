"""Datasets and task families: Omniglot (`omniglot`, `splits`) and sinusoid regression (`sinusoid`)."""
from .omniglot import Omniglot, OmniglotError, load_omniglot, download_omniglot
from .splits import ClassSplit, omniglot_split, SPLITS
from .sinusoid import SinusoidTasks

__all__ = ["Omniglot", "OmniglotError", "load_omniglot", "download_omniglot",
           "ClassSplit", "omniglot_split", "SPLITS", "SinusoidTasks"]
