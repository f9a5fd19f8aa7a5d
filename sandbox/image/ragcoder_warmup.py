"""Installed as ``_ragcoder_warmup`` in package images; the run server imports it once before it
forks (RAGCODER_PRELOAD), so each run starts with these libraries loaded *and used once*.

Importing pyplot is not enough: the first figure loads the Agg backend and its modules, and the
first draw fills text and tick caches. Done here, a forked run skips that (measured: a pandas +
histogram + savefig run went from about 140 ms to 65 ms on a loaded 2-core host). Nothing here
touches a random generator or leaves a figure open; it writes no file.

It also drops one draw that nobody can see: ``pyplot.savefig`` saves the figure (one full draw),
then redraws it on the canvas so a *screen* shows the restored colours (matplotlib's own
``draw_idle``, which on the headless Agg canvas is a second full draw, about a quarter of a plot
run's CPU; see docs/benchmarks.md). The redraw is skipped only when it would repeat the save's
draw exactly (same canvas, dpi and colours, no layout engine: see ``_redraw_repeats_the_save``), so the
file is byte-for-byte matplotlib's and the canvas holds the same pixels; any other call keeps
matplotlib's path (``plt.savefig.__wrapped__`` is matplotlib's own function).
"""

import contextlib
import functools
import io
import os

with contextlib.suppress(ImportError):
    import numpy as np

    np.arange(10.0).mean()

with contextlib.suppress(ImportError):
    import pandas as pd

    _df = pd.DataFrame({"x": [float(i) for i in range(20)], "g": ["a", "b"] * 10})
    _df.describe()
    _df.groupby("g").x.mean()
    _df.head().to_string()
    str(_df)
    del _df

# Formats the Agg canvas renders as-is (jpeg is left out: it saves over a white face colour).
AGG_FORMATS = frozenset({"png", "raw", "rgba", "tif", "tiff", "webp", "gif"})
# savefig options that change neither what is drawn nor where: anything else keeps the redraw.
NEUTRAL_OPTIONS = frozenset({"format", "metadata", "pil_kwargs"})


def _redraw_repeats_the_save(fig, args, kwargs):
    """True when matplotlib's redraw after ``fig.savefig(*args, **kwargs)`` would draw the same
    figure, at the same dpi, on the same Agg canvas the save just drew on, and tell nobody."""
    import matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.layout_engine import PlaceHolderLayoutEngine  # left by tight_layout(): lays out nothing

    rc = matplotlib.rcParams
    canvas = fig.canvas
    if len(args) != 1 or not set(kwargs) <= NEUTRAL_OPTIONS:
        return False
    if type(canvas) is not FigureCanvasAgg or matplotlib.is_interactive():
        return False
    if canvas.callbacks.callbacks.get("draw_event"):  # someone counts or reacts to draws
        return False
    engine = fig.get_layout_engine()  # each draw lays out again, moving axes a little
    if engine is not None and not isinstance(engine, PlaceHolderLayoutEngine):
        return False
    if getattr(fig, "_original_dpi", fig.dpi) != fig.dpi or rc["savefig.dpi"] != "figure":
        return False
    if rc["savefig.bbox"] is not None or rc["savefig.transparent"]:
        return False
    if rc["savefig.facecolor"] != "auto" or rc["savefig.edgecolor"] != "auto":
        return False
    fmt = kwargs.get("format")
    if fmt is None:  # as matplotlib's print_figure picks it
        fname = args[0]
        name = os.fspath(fname) if isinstance(fname, (str, os.PathLike)) else None
        fmt = os.path.splitext(name)[1][1:] if isinstance(name, str) else ""
        fmt = fmt or rc["savefig.format"]
    return isinstance(fmt, str) and fmt.lower() in AGG_FORMATS


def _install_savefig_without_screen_redraw():
    import matplotlib.pyplot as plt

    matplotlib_savefig = plt.savefig

    @functools.wraps(matplotlib_savefig)
    def savefig(*args, **kwargs):
        fig = plt.gcf()
        try:
            repeats = _redraw_repeats_the_save(fig, args, kwargs)
        except Exception:  # anything unexpected: matplotlib's own path, errors and all
            repeats = False
        if not repeats:
            return matplotlib_savefig(*args, **kwargs)
        return fig.savefig(*args, **kwargs)

    plt.savefig = savefig


with contextlib.suppress(ImportError):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    _install_savefig_without_screen_redraw()

    _fig, _ax = plt.subplots()
    _ax.hist([1.0, 2.0, 2.0, 3.0], bins=3)
    _ax.plot([0, 1], [0, 1], label="line")
    _ax.set_title("title")
    _ax.set_xlabel("x")
    _ax.legend()
    if "pd" in globals():  # pandas' plotting layer is a separate, lazily imported module
        pd.Series([1.0, 2.0, 2.0]).plot.hist(ax=_ax, bins=2)
        pd.DataFrame({"a": [1.0, 2.0], "b": [2.0, 1.0]}).plot(ax=_ax)
    _fig.savefig(io.BytesIO(), format="png")
    _fig.savefig(io.BytesIO(), format="svg")
    plt.close("all")
    del _fig, _ax
