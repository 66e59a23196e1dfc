"""Matplotlib for the experiments: a headless backend, an atomic save and a common finish."""

import os


def pyplot():
    """matplotlib.pyplot on the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: str) -> None:
    """tight_layout, then write to a temporary name and rename: a crash never leaves half a PNG."""
    fig.tight_layout()
    tmp = path + ".tmp.png"
    fig.savefig(tmp, dpi=120)
    os.replace(tmp, path)


def finish(fig, axes, path: str, legend_fontsize=None) -> None:
    """Grid (major and minor) and legend on every axis, then save_figure to path."""
    for ax in axes:
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=legend_fontsize)
    save_figure(fig, path)
