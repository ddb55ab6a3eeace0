"""Datasets and task families: Omniglot (`omniglot`, `splits`), sinusoid regression (`sinusoid`) and
scikit-learn's handwritten digits as a second domain (`digits`)."""
from .omniglot import Omniglot, OmniglotError, load_omniglot, download_omniglot
from .splits import ClassSplit, omniglot_split, SPLITS
from .sinusoid import SinusoidTasks
from .digits import digits_split

__all__ = ["Omniglot", "OmniglotError", "load_omniglot", "download_omniglot",
           "ClassSplit", "omniglot_split", "SPLITS", "SinusoidTasks", "digits_split"]
