"""Helpers of the plot tests: a quiet `process` run and the figures `plot_visit` saves."""

from __future__ import annotations

import numpy as np


def run_quiet(inputs, cat, client, **options):
    """`process` without a progress bar."""
    from ampoffset_dask import process

    return process(inputs, cat, client=client, progress=False, **options)


def saved_figures(monkeypatch):
    """The figures `plot_visit` saves, by file name (filled as it saves them)."""
    import ampoffset_dask.plots as plots

    figs = {}
    save = plots.save_figure

    def spy(fig, path):
        figs[path.name] = fig
        return save(fig, path)

    monkeypatch.setattr(plots, "save_figure", spy)
    return figs


def panels(fig):
    """The before and after panels' arrays (binned image minus smooth sky)."""
    return [np.asarray(ax.images[0].get_array(), dtype=float) for ax in fig.axes[:2]]



def reference_panels(path, folder, client, detector: str, visit: int = 1):
    """Before/after panels of ``path`` measured as it is (not corrected), in a catalog of
    its own under ``folder``."""
    import pytest

    from ampoffset_dask.plots import plot_visit

    cat = folder / "cat"
    run_quiet([path], cat, client)
    mp = pytest.MonkeyPatch()
    try:
        figs = saved_figures(mp)
        plot_visit(cat, visit, out=folder / "plots")
    finally:
        mp.undo()
    return panels(figs[f"before_after_v{visit}_{detector}.png"])
