"""Report building: figures (``plots``) for runs, evaluations and comparisons."""
