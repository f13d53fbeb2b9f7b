"""The look every report figure and image sheet shares: the colour palette and how user text is shown (class and
model names always literally, never as mathtext)."""

from __future__ import annotations

from typing import Any

# Okabe-Ito: distinguishable with the common colour-vision deficiencies.
PALETTE = ["#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000"]
BLUE, ORANGE, GREEN, VERMILLION = PALETTE[:4]
TICK_CHARS = 24


def _literal(text: Any) -> str:
    """Text that matplotlib draws verbatim. Escaping every ``$`` as ``\\$`` leaves no unescaped dollar, so
    mathtext never starts and matplotlib drops exactly the escapes it sees; outside mathtext backslashes
    are drawn as they are, so escaping them too would double them on screen."""
    return str(text).replace("\n", " ").replace("$", r"\$")


def _short(text: Any, n: int = TICK_CHARS) -> str:
    s = str(text).replace("\n", " ")
    return s if len(s) <= n else s[: n - 1] + "\u2026"


def _tick(text: Any, n: int = TICK_CHARS) -> str:
    """Truncate first, then escape (so an escape is never cut in half)."""
    return _literal(_short(text, n))
