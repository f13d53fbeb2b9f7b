"""Built-in datasets: ``classbench.datasets.demo(DIR)`` writes the handwritten-digits demo folder."""

from __future__ import annotations

from classbench.data.demo import demo

__all__ = ["demo"]
