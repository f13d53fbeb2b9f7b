"""Training: ``classbench.train(data, model=...)`` and its parts."""

from classbench.training.config import TrainConfig
from classbench.training.run import TrainResult, resume, train

__all__ = ["TrainConfig", "TrainResult", "resume", "train"]
