"""Where a forked plot run's CPU goes, phase by phase: runs INSIDE a scientific-image container.

    (started by: python bench/science_bench.py --breakdown)

It loads what the run server loads (RAGCODER_PRELOAD), then runs the bench's plot code (a
DataFrame of 500 normals, ``df.x.plot.hist(bins=20)``, ``savefig("hist.png")``) in forked
children, as the server does, timing each phase in CPU ms (``time.process_time``): building the
DataFrame, pandas' plot, the save's draw, its PNG encoding, and matplotlib's redraw after the
save. Ways, interleaved run by run: matplotlib's own ``pyplot.savefig``; the image's (which skips
that redraw when it repeats the save's draw); the same with PNG compress_level=1 (a smaller
encode cost, a bigger file: measured, not adopted); the same code in the warm process without a
fork (what the fork itself costs); and forked after ``gc.freeze()``. Prints one JSON line.
"""

import gc
import json
import os
import resource
import statistics
import sys
import time


def preload() -> None:
    for name in os.environ.get("RAGCODER_PRELOAD", "").split(","):
        if name:
            __import__(name)  # as the run server's preload does


preload()
import matplotlib.image  # noqa: E402  (after the preload, which picks the backend and installs savefig)
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: E402

spent: dict[str, float] = {}
draws: list[float] = []
agg_draw = FigureCanvasAgg.draw
imsave = matplotlib.image.imsave


def counted_draw(self):
    start = time.process_time()
    try:
        return agg_draw(self)
    finally:
        draws.append((time.process_time() - start) * 1000)


def timed_imsave(*args, **kwargs):
    start = time.process_time()
    try:
        return imsave(*args, **kwargs)
    finally:
        spent["encode"] = spent.get("encode", 0.0) + (time.process_time() - start) * 1000


FigureCanvasAgg.draw = counted_draw
matplotlib.image.imsave = timed_imsave
installed = plt.savefig
matplotlib_savefig = getattr(installed, "__wrapped__", installed)


def plot_run(savefig, png_level=None) -> dict[str, float]:
    """The bench's plot run, phase by phase (CPU ms)."""
    spent.clear()
    draws.clear()
    options = {"pil_kwargs": {"compress_level": png_level}} if png_level is not None else {}
    t0 = time.process_time()
    df = pd.DataFrame({"x": np.random.default_rng(0).normal(size=500)})
    t1 = time.process_time()
    df.x.plot.hist(bins=20, title="x")
    t2 = time.process_time()
    savefig("hist.png", **options)
    t3 = time.process_time()
    plt.close("all")
    encode = spent.get("encode", 0.0)
    return {
        "DataFrame": (t1 - t0) * 1000,
        "plot.hist": (t2 - t1) * 1000,
        "save: draw": draws[0] if draws else 0.0,
        "save: PNG encode": encode,
        "save: rest": (t3 - t2) * 1000 - sum(draws) - encode,
        "redraw after the save": sum(draws[1:]),
        "run": (t3 - t0) * 1000,
        "PNG KB": os.path.getsize("hist.png") / 1024,
    }


def forked(savefig, png_level=None) -> dict[str, float]:
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        before = resource.getrusage(resource.RUSAGE_SELF)
        out = plot_run(savefig, png_level)
        after = resource.getrusage(resource.RUSAGE_SELF)
        out["page faults"] = after.ru_minflt - before.ru_minflt
        out["system CPU"] = (after.ru_stime - before.ru_stime) * 1000
        out["since fork"] = time.process_time() * 1000
        os.write(w, json.dumps(out).encode())
        os._exit(0)
    os.close(w)
    data = b""
    while chunk := os.read(r, 65536):
        data += chunk
    os.close(r)
    os.waitpid(pid, 0)
    return json.loads(data)


def main() -> None:
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 15
    os.chdir("/work")
    ways = {
        "forked, matplotlib's pyplot.savefig": lambda: forked(matplotlib_savefig),
        "forked, the image's pyplot.savefig": lambda: forked(installed),
        "forked, the image's, PNG compress_level=1": lambda: forked(installed, 1),
        "no fork: in the warm process, the image's": lambda: plot_run(installed),
    }
    samples: dict[str, list[dict[str, float]]] = {way: [] for way in ways}
    for _ in range(runs):  # interleaved, so the host's load falls on every way alike
        for way, fn in ways.items():
            samples[way].append(fn())
    gc.collect()
    gc.freeze()  # last: the same fork with every object in the permanent generation
    samples["forked after gc.freeze(), the image's"] = [forked(installed) for _ in range(runs)]
    medians = {way: {k: statistics.median(s[k] for s in got) for k in got[0]} for way, got in samples.items()}
    print(json.dumps({"patched": installed is not matplotlib_savefig, "runs": runs, "ways": medians}))


if __name__ == "__main__":
    main()
