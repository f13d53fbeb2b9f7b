"""Training: ``classbench.train(data, model=...)`` and its parts."""

from classbench.train.config import TrainConfig
from classbench.train.run import TrainResult, resume, train

__all__ = ["TrainConfig", "TrainResult", "resume", "train"]
