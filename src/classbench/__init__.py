"""classbench: train, compare, evaluate and export image classifiers on your own image folders.

Three lines::

    import classbench
    run = classbench.train("data/", model="mobilenetv2", epochs=20)
    print(classbench.load(run.path).predict("photo.jpg"))

Heavy libraries (torch, timm, lightning) load lazily, on first use.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

# public name -> "module:attribute"
_API = {
    "check": "classbench.data.check:check",
    "split": "classbench.data.split:split",
    "demo_data": "classbench.data.demo:demo",
    "train": "classbench.workflow:train",
    "evaluate": "classbench.evaluation:evaluate",
    "load": "classbench.predict:load",
    "compare": "classbench.comparison:compare",
    "export": "classbench.exporting:export",
    "bench": "classbench.benchmark:bench",
    "ClassbenchError": "classbench.errors:ClassbenchError",
}

__all__ = sorted(_API) + ["__version__"]


def __getattr__(name: str) -> Any:
    target = _API.get(name)
    if target is None:
        raise AttributeError(f"module 'classbench' has no attribute {name!r}")
    module, attr = target.split(":")
    value = getattr(import_module(module), attr)
    globals()[name] = value
    return value
