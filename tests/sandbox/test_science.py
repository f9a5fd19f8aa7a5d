"""The scientific image for real: routing, warm preloaded packages, plots back, the missing-package
note, a project's package image, and (slow) the real model solving a numpy/matplotlib request.

The scientific image is built once per machine by the ``scientific_image`` fixture when missing
(about 40 s with the wheel cache warm, 1-2 min cold; `make test` builds it first). Like every
docker test it skips without an engine and fails instead under RAGCODER_REQUIRE_DOCKER=1.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from ragcoder.agent import CodeAgent, Task
from ragcoder.sandbox.files import file_kind
from ragcoder.sandbox.profiles import SCIENTIFIC
from ragcoder.sandbox.routing import ImageRouter
from ragcoder.sandbox.settings import DEFAULT_IMAGE

from ragcoder.errors import SandboxError
from tests.fakes import fenced, scripted
from tests.sandbox.conftest import require_docker

pytestmark = pytest.mark.docker

PLOT = """
import numpy as np
import pandas as pd
import matplotlib.pyplot as plt

df = pd.DataFrame({"x": np.random.default_rng(0).normal(size=500)})
ax = df.x.plot.hist(bins=20, title="x")
plt.savefig("hist.png")
print(round(float(df.x.mean()), 3))
"""


@pytest.fixture(scope="session")
def scientific_image() -> str:
    require_docker()
    from ragcoder.sandbox.images import build_profile_image, image_info

    if image_info(SCIENTIFIC.tag) is None:
        try:
            build_profile_image("scientific")
        except SandboxError as exc:
            if os.environ.get("RAGCODER_REQUIRE_DOCKER") == "1":
                pytest.fail(f"could not build {SCIENTIFIC.tag}: {exc}")
            pytest.skip(f"could not build {SCIENTIFIC.tag} (pip needs PyPI): {exc}")
    return SCIENTIFIC.tag


@pytest.fixture(scope="module")
def router(scientific_image: str) -> Iterator[ImageRouter]:
    with ImageRouter("docker", pool_size=1, timeout_s=60.0) as sandbox:
        yield sandbox


def test_each_run_goes_to_the_image_with_its_imports(router: ImageRouter) -> None:
    assert router.default_tag == DEFAULT_IMAGE
    assert router.image_for("import json") == DEFAULT_IMAGE
    assert router.image_for("import pandas as pd") == SCIENTIFIC.tag
    assert router.image_for("import torch") == DEFAULT_IMAGE  # no image has it: the default says so
    plain = router.run("import sys\nprint('pandas' in sys.modules, sys.version_info[:2])")
    assert plain.stdout == "False (3, 11)\n"
    # the scientific server imported the heavy packages before forking: the run finds them loaded
    warm = router.run(
        "import sys\nimport matplotlib\nprint('pandas' in sys.modules, matplotlib.get_backend().lower())"
    )
    assert warm.stdout == "True agg\n", warm.stderr


def test_a_plot_comes_back_as_a_png(router: ImageRouter) -> None:
    result = router.run(PLOT)
    assert result.ok, result.stderr
    assert result.stderr == ""  # headless and quiet: no display or cache-directory warnings
    assert set(result.files) == {"hist.png"}
    assert file_kind(result.files["hist.png"]) == "png" and len(result.files["hist.png"]) > 5000


def test_runs_do_not_share_random_state(router: ImageRouter) -> None:
    code = "import random, numpy as np\nprint(np.random.rand(), random.random())"
    first, second = router.run(code).stdout, router.run(code).stdout
    assert first and first != second


def test_tests_are_routed_by_the_code_they_check(router: ImageRouter) -> None:
    code = "import numpy as np\n\ndef norm(v):\n    return float(np.linalg.norm(v))\n"
    report = router.run_tests(code, "assert norm([3, 4]) == 5.0")
    assert report.passed, report.summary()


def test_session_in_the_scientific_image(router: ImageRouter) -> None:
    with router.session(inputs={"t.csv": b"a,b\n1,2\n3,4\n"}) as session:
        assert session.image == SCIENTIFIC.tag
        assert session.run("import pandas as pd\ndf = pd.read_csv('t.csv')").ok
        assert session.run("print(df.b.sum())").stdout == "6\n"


def test_missing_package_is_one_line_and_stops_the_agent(scientific_image: str) -> None:
    with ImageRouter("docker", image="standard", pool_size=1) as standard:
        result = standard.run("import numpy as np\nprint(np.ones(2))")
        assert result.error is not None and result.error.name == "ModuleNotFoundError"
        assert (
            result.missing
            == 'needs numpy; it is in the scientific image: set sandbox_image = "scientific" (or "auto")'
        )
        report = standard.run_tests("import torch\n\ndef f():\n    return 1\n", "assert f() == 1")
        assert report.result.missing.startswith('needs torch; add "torch" to sandbox_packages')
        model = scripted([("", fenced("import numpy as np\nprint(np.arange(3).sum())"))])
        outcome = CodeAgent(model, standard, max_attempts=4).invoke(
            Task(id="np", instruction="Sum with numpy.")
        )
    assert outcome.stop_reason == "missing-package" and len(outcome.attempts) == 1
    assert outcome.attempts[0].feedback.startswith("needs numpy;")


def test_project_packages_build_once_and_route(scientific_image: str) -> None:
    from ragcoder.sandbox.images import ensure_packages_image, image_info
    from ragcoder.sandbox.profiles import packages_tag

    packages = ["tabulate==0.10.0"]
    tag = packages_tag(packages)
    from docker import from_env

    client = from_env()
    try:
        if image_info(tag) is not None:
            client.images.remove(tag, force=True)
        built = ensure_packages_image(packages)
        assert built.tag == tag and "tabulate" in built.modules and built.build_seconds > 0
        assert ensure_packages_image(["Tabulate==0.10.0"]).build_seconds == 0  # cached: found by its hash
        with ImageRouter("docker", packages=packages, pool_size=1) as sandbox:
            assert sandbox.default_tag == tag
            out = sandbox.run("from tabulate import tabulate\nprint(tabulate([[1, 2]]))")
            assert out.ok and "1  2" in out.stdout
            assert sandbox.image_for("import pandas") == SCIENTIFIC.tag  # the profile image still serves
    finally:
        client.images.remove(tag, force=True)
        client.close()


@pytest.mark.slow
def test_real_model_solves_a_numpy_matplotlib_request_and_the_plot_comes_back(
    scientific_image: str, qwen_chat
) -> None:
    from ragcoder.chains.llm.chat_model import repair_model

    instruction = (
        "Generate 1000 normally distributed random numbers with numpy, plot their histogram with "
        "matplotlib and save the figure to hist.png. Print the mean of the numbers."
    )
    with ImageRouter("docker", pool_size=1, timeout_s=60.0) as sandbox:
        agent = CodeAgent(qwen_chat, sandbox, repair_model=repair_model(qwen_chat), max_attempts=4)
        result = agent.invoke(Task(id="hist", instruction=instruction))
    final = result.attempts[-1].result
    assert result.passed, [a.feedback for a in result.attempts]
    assert "numpy" in result.code and "matplotlib" in result.code
    assert "hist.png" in final.files and file_kind(final.files["hist.png"]) == "png"


def test_a_pinned_profile_that_is_not_built_says_how_to_build_it(monkeypatch: pytest.MonkeyPatch) -> None:
    require_docker()
    from dataclasses import replace

    import ragcoder.sandbox.routing as routing

    from ragcoder.errors import ImageMissing

    unbuilt = replace(SCIENTIFIC, tag="ragcoder-sandbox:not-built-here")
    monkeypatch.setitem(routing.PROFILES, "scientific", unbuilt)
    with pytest.raises(ImageMissing) as caught:
        ImageRouter("auto", image="scientific")  # no silent fallback to another backend
    assert caught.value.hint.startswith("build it with `ragcoder sandbox build-image --profile scientific`")
