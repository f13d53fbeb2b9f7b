"""``python -m classbench.cli``."""

from classbench.cli import main

main()
