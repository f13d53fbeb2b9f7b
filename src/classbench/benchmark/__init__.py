"""``classbench bench``: what training and inference cost on this machine, before hours are spent.

Per model: training images/s on synthetic tensors (the model-only limit at the training precision), fp32 PyTorch
inference images/s and batch-1 latency, the same for the exported runtimes (ONNX Runtime fp32 and INT8, OpenVINO
and OpenVINO INT8; ``rates``), peak memory; with ``data``, the same training step through the real pipeline
(decoded-image cache, augmentation, loader) and an estimate of the full run's wall time (cache fill + loader start
+ model set-up + the one-off costs of the first training steps, validation and checkpoint + epochs x (train + fp32
validation through the val loader + each epoch's first-batch wait + checkpoint writes)); ``training``.

Modules: ``core`` (``bench``, ``BenchRow``, ``BenchResult``), ``training``, ``rates``, ``render`` (80 columns).
"""

from classbench.benchmark.core import BenchResult, BenchRow, bench
from classbench.benchmark.rates import EXPORT_RATES, export_rates, torch_rates
from classbench.benchmark.render import render_bench
from classbench.benchmark.training import checkpoint_writes, synthetic_batches, train_rate

__all__ = ["EXPORT_RATES", "BenchResult", "BenchRow", "bench", "checkpoint_writes", "export_rates", "render_bench",
           "synthetic_batches", "torch_rates", "train_rate"]
