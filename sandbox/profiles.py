"""What each sandbox image holds, which image a program needs, and what to say when it lacks one.

No Docker here: this module only knows names. ``images.py`` builds the images, ``routing.py``
picks one per run.

Images (one repository, one tag each):
- ``ragcoder-sandbox:latest``: the standard library only (the run server needs nothing else).
- ``ragcoder-sandbox:scientific``: the ``scientific`` profile below, derived from it.
- ``ragcoder-sandbox:pkgs-<hash>``: a project's ``sandbox_packages``, derived once and cached by
  a hash of the package list.
"""

from __future__ import annotations

import ast
import hashlib
import re
import sys
from dataclasses import dataclass, field

from ragcoder.sandbox.base import ErrorInfo
from ragcoder.sandbox.settings import DEFAULT_IMAGE

IMAGE_REPO = DEFAULT_IMAGE.split(":", 1)[0]
SCIENTIFIC_IMAGE = f"{IMAGE_REPO}:scientific"
BUILD_HINT = "ragcoder sandbox build-image --profile {profile}"


@dataclass(frozen=True)
class Profile:
    """A named package set baked into an image."""

    name: str
    tag: str
    requirements: tuple[str, ...] = ()  # pip specs, pinned: the same wheels on every machine
    # modules the run server imports once before it forks, so a run that uses them starts warm
    preload: tuple[str, ...] = ()
    why: dict[str, str] = field(default_factory=dict, compare=False)


# Pinned to the newest cp311 manylinux wheels when this was written (dependencies resolve freely).
# Chosen for what data requests ask for; each costs image size (measured in docs/benchmarks.md).
SCIENTIFIC = Profile(
    name="scientific",
    tag=SCIENTIFIC_IMAGE,
    requirements=(
        "numpy==2.4.6",
        "pandas==3.1.1",
        "matplotlib==3.11.2",
        "scipy==1.17.1",
        "scikit-learn==1.9.1",
        "seaborn==0.13.2",
        "sympy==1.14.0",
        "networkx==3.6.1",
        "openpyxl==3.1.5",
        "tabulate==0.10.0",
    ),
    preload=("numpy", "pandas", "matplotlib", "matplotlib.pyplot"),
    why={
        "numpy": "arrays: under nearly every numeric request",
        "pandas": "tables, CSV/Excel/JSON in and out, group-by",
        "matplotlib": "plots (headless: the Agg backend), saved as PNG/SVG files that come back",
        "scipy": "statistics, optimisation, interpolation, signal processing",
        "scikit-learn": "regression, classification, clustering: the usual 'fit a model' request",
        "seaborn": "statistical plots on DataFrames, asked for by name in plotting requests",
        "sympy": "symbolic maths: solve, simplify, differentiate",
        "networkx": "graphs: shortest paths, components (pure Python, small)",
        "openpyxl": "pandas' engine for reading and writing .xlsx",
        "tabulate": "DataFrame.to_markdown()",
    },
)
STANDARD = Profile(name="standard", tag=DEFAULT_IMAGE)
PROFILES: dict[str, Profile] = {p.name: p for p in (STANDARD, SCIENTIFIC)}

# The modules the scientific image provides (its wheels' top-level names, dependencies included).
# images.py records the real list in the image's label; this copy lets messages name the profile
# before the image exists.
SCIENTIFIC_MODULES = frozenset(
    [
        "PIL",
        "contourpy",
        "cycler",
        "dateutil",
        "et_xmlfile",
        "fontTools",
        "joblib",
        "kiwisolver",
        "matplotlib",
        "mpl_toolkits",
        "mpmath",
        "narwhals",
        "networkx",
        "numpy",
        "openpyxl",
        "packaging",
        "pandas",
        "pylab",
        "pyparsing",
        "scipy",
        "seaborn",
        "sklearn",
        "sympy",
        "tabulate",
        "threadpoolctl",
        "tzdata",
    ]
)

# Import name -> pip name, for well-known packages whose names differ or that no profile has:
# a ModuleNotFoundError for one of these is a missing package, not a typo in the code.
KNOWN_PACKAGES: dict[str, str] = {
    "sklearn": "scikit-learn",
    "PIL": "pillow",
    "dateutil": "python-dateutil",
    "yaml": "pyyaml",
    "bs4": "beautifulsoup4",
    "cv2": "opencv-python-headless",
    "skimage": "scikit-image",
    "fontTools": "fonttools",
    "mpl_toolkits": "matplotlib",
    "pylab": "matplotlib",
    "requests": "requests",
    "httpx": "httpx",
    "lxml": "lxml",
    "statsmodels": "statsmodels",
    "plotly": "plotly",
    "polars": "polars",
    "pyarrow": "pyarrow",
    "torch": "torch",
    "tensorflow": "tensorflow",
    "keras": "keras",
    "xgboost": "xgboost",
    "lightgbm": "lightgbm",
    "numba": "numba",
    "h5py": "h5py",
    "tqdm": "tqdm",
    "rich": "rich",
    "click": "click",
    "pydantic": "pydantic",
    "attr": "attrs",
    "attrs": "attrs",
    "dill": "dill",
    "regex": "regex",
    "jinja2": "jinja2",
    "markdown": "markdown",
    "sqlalchemy": "sqlalchemy",
    "nltk": "nltk",
    "bokeh": "bokeh",
    "altair": "altair",
    "pytest": "pytest",
    "docx": "python-docx",
    "pptx": "python-pptx",
    "xlrd": "xlrd",
    "Crypto": "pycryptodome",
    "nacl": "pynacl",
}
KNOWN_PACKAGES.update({m: m for m in SCIENTIFIC_MODULES if m not in KNOWN_PACKAGES})

_MISSING_RE = re.compile(r"No module named '([^'.]+)")
_IMPORT_RE = re.compile(r"^\s*(?:from\s+([A-Za-z_]\w*)[\w.]*\s+import|import\s+([A-Za-z_]\w*))", re.M)


def imported_modules(code: str) -> set[str]:
    """Top-level names of the third-party modules ``code`` imports (stdlib and relative left out).
    Unparsable code falls back to a line match, so a syntax error elsewhere still routes right."""
    names: set[str] = set()
    try:
        tree = ast.parse(code)
    except (SyntaxError, ValueError):
        names = {a or b for a, b in _IMPORT_RE.findall(code)}
    else:
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".", 1)[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                names.add(node.module.split(".", 1)[0])
    return {n for n in names if n not in sys.stdlib_module_names and n != "__future__"}


def missing_module(error: ErrorInfo | None) -> str | None:
    """The package a run failed for want of (a known third-party top-level module), else None.
    A module the code itself should define (a typo, an invented name) is not reported: repair
    can fix those."""
    if error is None or error.name not in ("ModuleNotFoundError", "ImportError"):
        return None
    match = _MISSING_RE.search(error.value) or _MISSING_RE.search(error.traceback[-500:])
    if match is None:
        return None
    module = match.group(1)
    return module if module in KNOWN_PACKAGES else None


def pip_name(module: str) -> str:
    return KNOWN_PACKAGES.get(module, module)


def missing_message(module: str, *, built: frozenset[str] = frozenset(), backend: str = "docker") -> str:
    """One line: what the code needs and how to get it. ``built``: the image tags that exist."""
    if module in SCIENTIFIC_MODULES:
        if backend != "docker":
            return (
                f"needs {module}; the {backend} sandbox's Python lacks it: start Docker and "
                f"build the scientific image with `{BUILD_HINT.format(profile='scientific')}`"
            )
        if SCIENTIFIC.tag in built:
            return (
                f'needs {module}; it is in the scientific image: set sandbox_image = "scientific" (or "auto")'
            )
        return f"needs {module}; build the scientific image with `{BUILD_HINT.format(profile='scientific')}`"
    return (
        f'needs {module}; add "{pip_name(module)}" to sandbox_packages in ragcoder.toml '
        "(the sandbox has no network to install it)"
    )


def normalise_requirements(packages: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """Sorted, de-duplicated, whitespace-free pip specs with lower-cased names (the cache key)."""
    out = set()
    for spec in packages:
        spec = "".join(str(spec).split())
        if not spec:
            continue
        name = re.match(r"[A-Za-z0-9._-]+", spec)
        if name is None:
            raise ValueError(f"not a package spec: {spec!r} (use e.g. requests or requests==2.32.3)")
        out.add(re.sub(r"[-_.]+", "-", name.group(0).lower()) + spec[name.end() :])
    return tuple(sorted(out))


def packages_tag(packages: list[str] | tuple[str, ...]) -> str:
    """The image tag for a project's package list: the same list always maps to the same tag."""
    key = "\n".join(("py3.11", "manylinux_2_36_x86_64", *normalise_requirements(packages)))
    return f"{IMAGE_REPO}:pkgs-{hashlib.sha256(key.encode()).hexdigest()[:12]}"


def profile_for(name: str) -> Profile:
    try:
        return PROFILES[name]
    except KeyError:
        raise ValueError(f"unknown sandbox profile {name!r}; choose one of {', '.join(PROFILES)}") from None
