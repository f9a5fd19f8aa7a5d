"""The scientific image's ``pyplot.savefig`` (sandbox/image/ragcoder_warmup.py) skips matplotlib's
redraw of the canvas after a save only when that redraw repeats the save's draw: every file it
writes and every canvas pixel after it stay what matplotlib's own ``pyplot.savefig`` gives.

The same check program runs on the host's matplotlib (the warm-up module loaded in a subprocess,
so this test process keeps matplotlib's own pyplot) and, marked docker, in the scientific image's
warm pool, where the server loaded the module before forking.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.sandbox.test_science import scientific_image  # noqa: F401  (the fixture: builds it when missing)

WARMUP = Path(__file__).resolve().parents[2] / "sandbox" / "image" / "ragcoder_warmup.py"

# Saves each figure with each sequence of savefig calls twice, once through matplotlib's own
# pyplot.savefig (``__wrapped__``) and once through the installed one, and compares the file
# bytes, the canvas pixels and size, and the axes' positions after every call. Prints JSON.
CHECK = r"""
import hashlib, io, json, os
import numpy as np
import matplotlib.pyplot as plt
from matplotlib.backends.backend_agg import FigureCanvasAgg

draws = [0]
agg_draw = FigureCanvasAgg.draw
def counting_draw(self):
    draws[0] += 1
    return agg_draw(self)
FigureCanvasAgg.draw = counting_draw
installed = plt.savefig
matplotlib_savefig = installed.__wrapped__

def figure(kind):
    plt.close("all")
    data = np.random.default_rng(0).normal(size=500)
    if kind == "hist":
        fig, ax = plt.subplots()
        ax.hist(data, bins=20)
        ax.set_title("x")
    elif kind == "constrained":
        fig, axs = plt.subplots(2, 2, layout="constrained")
        for i, ax in enumerate(axs.flat):
            ax.plot(data[: 50 * (i + 1)], label=f"run {i}")
            ax.set_xlabel("step")
            ax.legend()
        fig.suptitle("four panels")
    elif kind == "tight":
        fig, axs = plt.subplots(1, 2, layout="tight")
        axs[0].scatter(data[:100], data[100:200], c=data[200:300])
        im = axs[1].imshow(data[:400].reshape(20, 20))
        fig.colorbar(im, ax=axs[1])
    elif kind == "aspect":  # positions computed at draw time: aspect, inset, twin axes
        fig, ax = plt.subplots()
        im = ax.imshow(data[:400].reshape(20, 20))
        ax.set_aspect("equal")
        fig.colorbar(im, ax=ax)
        ax.inset_axes([0.6, 0.6, 0.3, 0.3]).plot(data[:30])
        ax.twinx().plot(np.arange(20), data[:20], "r")
    else:  # "pyplot": the state-machine style, text, an annotation, a one-off tight_layout
        plt.plot(np.cumsum(data), label="walk")
        plt.axhline(0, color="k", lw=0.5)
        plt.annotate("start", (0, 0), (50, 5), arrowprops={"arrowstyle": "->"})
        plt.legend(loc="best")
        plt.tight_layout()
        fig = plt.gcf()
    return fig

SEQUENCES = [
    [{}],
    [{}, {}],
    [{"format": "png", "metadata": {"Title": "t"}}, {"format": "raw"}],
    [{"dpi": 50}, {}],
    [{"transparent": True}, {}],
    [{"bbox_inches": "tight"}, {}],
    [{"format": "svg"}, {}],
    [{"format": "jpg"}, {}],
]

def states(save, kind, calls, to_file, listen):
    fig = figure(kind)
    seen = []
    if listen:
        fig.canvas.mpl_connect("draw_event", lambda event: seen.append(1))
    out = []
    before = draws[0]
    for n, kwargs in enumerate(calls):
        if to_file:
            name = f"plot{n}.{kwargs.get('format', 'png')}"
            save(name, **{k: v for k, v in kwargs.items() if k != "format"})
            data = open(name, "rb").read()
            os.remove(name)
        else:
            buf = io.BytesIO()
            save(buf, **kwargs)
            data = buf.getvalue()
        if kwargs.get("format") != "svg":  # svg embeds a date unless told otherwise
            out.append(hashlib.sha256(data).hexdigest())
        out.append(hashlib.sha256(bytes(fig.canvas.buffer_rgba())).hexdigest())
        out.append(list(fig.canvas.get_width_height()))
        out.append([list(ax.get_position().bounds) for ax in fig.axes])
    out.append(len(seen))
    return out, draws[0] - before

mismatches, skipped, expected = [], 0, 0
# every sequence on the plain figure; the first few on the others (their draws differ, not savefig)
for kind, sequences in [("hist", SEQUENCES), ("constrained", SEQUENCES[:2]), ("tight", SEQUENCES[:2]),
                        ("aspect", SEQUENCES[:3]), ("pyplot", SEQUENCES[:3])]:
    for calls in sequences:
        # (to a file name, with a draw_event listener): the extension picks the format; a listener
        # must see every draw matplotlib makes
        for to_file, listen in [(False, False)] + ([(True, False), (False, True)] if kind == "hist" else []):
            ours, ours_draws = states(installed, kind, calls, to_file, listen)
            theirs, their_draws = states(matplotlib_savefig, kind, calls, to_file, listen)
            if ours != theirs:
                mismatches.append([kind, calls, to_file, listen])
            skipped += their_draws - ours_draws
            neutral = [set(c) <= {"format", "metadata"} and c.get("format", "png") in ("png", "raw") for c in calls]
            expected += 0 if listen or kind in ("constrained", "tight") else sum(neutral)
print(json.dumps({"mismatches": mismatches, "skipped": skipped, "expected": expected}))
"""


def _verdict(stdout: str) -> dict:
    return json.loads(stdout.strip().splitlines()[-1])


def test_only_a_repeated_redraw_is_skipped_and_outputs_stay_matplotlibs(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")  # in the project's environment (bench and docs plots)
    program = f"import runpy\nrunpy.run_path({str(WARMUP)!r})\n{CHECK}"
    env = {"MPLBACKEND": "Agg", "MPLCONFIGDIR": str(tmp_path / "mpl"), "PATH": "/usr/bin:/bin"}
    done = subprocess.run(
        [sys.executable, "-c", program], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    verdict = _verdict(done.stdout)
    assert verdict["mismatches"] == []
    assert verdict["skipped"] == verdict["expected"] > 0


@pytest.mark.docker
@pytest.mark.usefixtures("scientific_image")
def test_the_scientific_pool_skips_the_redraw_and_keeps_matplotlibs_output() -> None:
    from ragcoder.sandbox.routing import ImageRouter

    with ImageRouter("docker", image="scientific", pool_size=1, timeout_s=120.0) as router:
        result = router.run(CHECK)
    assert result.ok, result.stderr[-3000:]
    verdict = _verdict(result.stdout)
    assert verdict["mismatches"] == []
    assert verdict["skipped"] == verdict["expected"] > 0
