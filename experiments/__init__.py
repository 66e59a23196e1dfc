"""Scripts that write results/: run each from the repository root as `python -m experiments.<name>`."""
