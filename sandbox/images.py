"""Building the package images (the ``scientific`` profile, a project's ``sandbox_packages``) offline.

The sandbox never reaches a network, at build time or run time. pip runs ON THE HOST: it
downloads manylinux wheels for the image's CPython 3.11 into a wheel cache
(``~/.cache/ragcoder/wheels``; a rebuild reuses them), installs them into a staging folder with
``--target``, and byte-compiles them (hash-checked .pyc: the image's rootfs is read-only, so
without them every import would compile from source). ``docker build`` then copies that folder
into an image derived from the standard one with a local ``FROM`` (sandbox/image/Dockerfile.packages:
no RUN step, so nothing runs during the build). Labels on the image record its modules and what
the run server preloads; :mod:`ragcoder.sandbox.routing` reads them to route runs.
"""

from __future__ import annotations

import compileall
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from ragcoder.sandbox.profiles import (
    STANDARD,
    normalise_requirements,
    packages_tag,
    profile_for,
)
from ragcoder.sandbox.settings import DEFAULT_IMAGE

from ragcoder.errors import SandboxError

# The image is Debian bookworm (glibc 2.36): any manylinux wheel up to 2.36 runs there. pip 23
# does not expand one manylinux tag into the older compatible ones, so all are listed.
WHEEL_PLATFORMS = (*(f"manylinux_2_{m}_x86_64" for m in range(36, 16, -1)), "manylinux2014_x86_64")
PYTHON_VERSION = "3.11"  # the image's CPython (bookworm's python3)
HEAVY_MODULES = ("numpy", "pandas", "matplotlib", "matplotlib.pyplot")  # worth preloading when present
WARMUP_MODULE = "_ragcoder_warmup"  # sandbox/image/ragcoder_warmup.py, installed under this name
LABEL_MODULES = "ragcoder.modules"
LABEL_PRELOAD = "ragcoder.preload"
LABEL_PROFILE = "ragcoder.profile"
LABEL_REQUIREMENTS = "ragcoder.requirements"
LABEL_WARMUP = "ragcoder.warmup"  # a hash of the warm-up module the image holds: a newer one rebuilds it
_SKIP_TOP = {"bin", "share", "include", "__pycache__"}


@dataclass(frozen=True)
class ImageInfo:
    """A built sandbox image and what it provides."""

    tag: str
    modules: frozenset[str]  # importable top-level names (standard library not included)
    preload: tuple[str, ...] = ()
    profile: str = ""
    size_bytes: int = 0
    build_seconds: float = 0.0
    warmup: str = ""  # LABEL_WARMUP


def wheel_cache() -> Path:
    env = os.environ.get("RAGCODER_CACHE_DIR")
    if env:
        return Path(env).expanduser() / "wheels"
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("ragcoder")) / "wheels"


def _say(message: str) -> None:
    print(f"build_image: {message}", file=sys.stderr, flush=True)


def image_info(tag: str, client: Any = None) -> ImageInfo | None:
    """What ``tag`` provides according to its labels; None when it is not built (or no engine)."""
    from docker.errors import ImageNotFound
    from ragcoder.sandbox.docker_sandbox import docker_client

    from ragcoder.errors import EngineUnavailable

    own = client is None
    try:
        client = client or docker_client()
    except EngineUnavailable:
        return None
    try:
        image = client.images.get(tag)
    except ImageNotFound:
        return None
    finally:
        if own:
            client.close()
    labels = image.labels or {}
    return ImageInfo(
        tag=tag,
        modules=frozenset(labels.get(LABEL_MODULES, "").split()),
        preload=tuple(p for p in labels.get(LABEL_PRELOAD, "").split(",") if p),
        profile=labels.get(LABEL_PROFILE, ""),
        size_bytes=int(image.attrs.get("Size", 0)),
        warmup=labels.get(LABEL_WARMUP, ""),
    )


def _pip(args: list[str], what: str) -> None:
    argv = [sys.executable, "-m", "pip", *args]
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        lines = [ln for ln in (proc.stderr + proc.stdout).splitlines() if "is ignored" not in ln]
        raise SandboxError(
            f"{what} failed: " + (" | ".join(lines[-4:]) or f"pip exited {proc.returncode}"),
            hint="pip on this machine must reach PyPI (or a mirror); each package needs a "
            f"manylinux x86_64 wheel for CPython {PYTHON_VERSION}",
        )


def _target_args() -> list[str]:
    args = ["--only-binary=:all:", "--python-version", PYTHON_VERSION, "--implementation", "cp"]
    args += ["--abi", "cp311"]
    for platform in WHEEL_PLATFORMS:
        args += ["--platform", platform]
    return args


def stage_packages(requirements: tuple[str, ...], site: Path, say: Callable[[str], None] = _say) -> set[str]:
    """Download wheels into the cache, install them into ``site`` and byte-compile them; returns
    the top-level module names installed."""
    cache = wheel_cache()
    cache.mkdir(parents=True, exist_ok=True)
    say(f"pip download {len(requirements)} package(s) and their dependencies -> {cache}")
    quiet = ["--quiet", "--disable-pip-version-check", "--progress-bar", "off"]
    _pip(["download", *quiet, "--dest", str(cache), *_target_args(), *requirements], "pip download")
    say(f"pip install --target (no index: only the cached wheels) -> {site}")
    _pip(
        [
            "install",
            *quiet,
            "--isolated",
            "--no-index",
            "--find-links",
            str(cache),
            "--target",
            str(site),
            "--no-compile",
            "--no-warn-script-location",
            *_target_args(),
            *requirements,
        ],
        "pip install",
    )
    for name in _SKIP_TOP:  # console scripts carry the host's interpreter path; headers are unused
        shutil.rmtree(site / name, ignore_errors=True)
    for tests in sorted(site.glob("**/tests")):  # test suites: about a fifth of the size, never imported
        if tests.is_dir():
            shutil.rmtree(tests, ignore_errors=True)
    say("byte-compiling (hash-checked .pyc: the image's rootfs is read-only)")
    from py_compile import PycInvalidationMode

    ok = compileall.compile_dir(
        str(site), quiet=2, workers=0, invalidation_mode=PycInvalidationMode.UNCHECKED_HASH
    )
    if not ok:
        say("some files did not byte-compile (they will compile on import)")
    for path in site.rglob("*"):  # readable by the sandbox user (uid 10001), whatever our umask
        path.chmod(0o755 if path.is_dir() else (0o755 if os.access(path, os.X_OK) else 0o644))
    return top_level_modules(site)


def top_level_modules(site: Path) -> set[str]:
    """Importable top-level names in a --target folder (packages, modules, extension modules)."""
    names = set()
    for entry in site.iterdir():
        name = entry.name
        if name in _SKIP_TOP or name.endswith((".dist-info", ".data", ".libs", ".pth")):
            continue
        if entry.is_dir() and name.isidentifier():
            names.add(name)
        elif entry.suffix == ".py":
            names.add(entry.stem)
        elif entry.suffix == ".so":
            names.add(name.split(".", 1)[0])
    return names


def _warmup_source() -> Path:
    return Path(str(resources.files("ragcoder.sandbox") / "image" / "ragcoder_warmup.py"))


def warmup_hash() -> str:
    """The warm-up module's content hash, as the images built with it carry it."""
    return hashlib.sha256(_warmup_source().read_bytes()).hexdigest()[:16]


def is_stale(image: ImageInfo) -> bool:
    """An image that preloads a warm-up module other than this version's (built before a change)."""
    return WARMUP_MODULE in image.preload and image.warmup != warmup_hash()


def _add_warmup(site: Path) -> None:
    source = _warmup_source()
    target = site / f"{WARMUP_MODULE}.py"
    shutil.copy(source, target)
    target.chmod(0o644)
    from py_compile import PycInvalidationMode, compile

    compile(str(target), invalidation_mode=PycInvalidationMode.UNCHECKED_HASH, doraise=True)
    for pyc in (site / "__pycache__").glob("*.pyc"):
        pyc.chmod(0o644)
    (site / "__pycache__").chmod(0o755)


def _site_dir(client: Any, base: str) -> str:
    """Where the base image's python3 looks for installed packages (Debian: dist-packages)."""
    out = client.containers.run(
        base,
        ["python3", "-I", "-c", "import site; print(site.getsitepackages()[0])"],
        network_mode="none",
        remove=True,
        user="10001:10001",
    )
    return out.decode().strip()


def build_derived_image(
    tag: str,
    requirements: tuple[str, ...],
    *,
    profile: str = "",
    base: str = DEFAULT_IMAGE,
    force: bool = False,
    say: Callable[[str], None] = _say,
) -> ImageInfo:
    """Build ``tag`` = ``base`` + ``requirements`` (see the module doc). Skips when it exists."""
    from docker.errors import APIError, BuildError
    from ragcoder.sandbox.docker_sandbox import docker_client
    from ragcoder.sandbox.image import build_image

    started = time.monotonic()
    client = docker_client()
    try:
        existing = image_info(tag, client)
        stale = existing is not None and is_stale(existing)
        if existing is not None and not force and not stale:
            say(f"{tag} already exists; nothing to do (use --force to rebuild)")
            return existing
        if stale:
            say(f"{tag} holds an older warm-up module: rebuilding it")
        if image_info(base, client) is None:
            say(f"the base image {base} is not built: building it first")
            build_image(base)
        with tempfile.TemporaryDirectory(prefix="ragcoder-image-") as ctx:
            site = Path(ctx) / "site"
            modules = stage_packages(requirements, site, say)
            preload = [m for m in HEAVY_MODULES if m.split(".", 1)[0] in modules]
            if preload:  # and use them once, so a run skips their first-use costs too
                _add_warmup(site)
                preload.append(WARMUP_MODULE)
            shutil.copy(
                Path(str(resources.files("ragcoder.sandbox") / "image" / "Dockerfile.packages")),
                Path(ctx) / "Dockerfile",
            )
            labels = {
                LABEL_MODULES: " ".join(sorted(modules)),
                LABEL_PRELOAD: ",".join(preload),
                LABEL_PROFILE: profile,
                LABEL_REQUIREMENTS: " ".join(requirements),
                LABEL_WARMUP: warmup_hash() if preload else "",
            }
            say(f"docker build -t {tag} (FROM {base}, {len(modules)} modules)")
            try:
                client.images.build(
                    path=ctx,
                    tag=tag,
                    rm=True,
                    forcerm=True,
                    network_mode="none",
                    buildargs={"BASE": base, "SITE": _site_dir(client, base), "PRELOAD": ",".join(preload)},
                    labels=labels,
                )
            except (BuildError, APIError) as exc:
                raise SandboxError(f"docker build of {tag} failed: {exc}") from exc
        info = image_info(tag, client)
        assert info is not None
        info = ImageInfo(**{**info.__dict__, "build_seconds": time.monotonic() - started})
        say(f"built {tag} ({info.size_bytes / 1e6:.0f} MB) in {info.build_seconds:.0f} s")
        return info
    finally:
        client.close()


def build_profile_image(name: str, *, force: bool = False, say: Callable[[str], None] = _say) -> ImageInfo:
    """Build the image of a named profile ("standard" builds the base image)."""
    profile = profile_for(name)
    if profile is STANDARD:
        from ragcoder.sandbox.image import build_image

        started = time.monotonic()
        build_image(profile.tag, force=force)
        info = image_info(profile.tag)
        if info is None:
            raise SandboxError(f"{profile.tag} was not built")
        return ImageInfo(**{**info.__dict__, "build_seconds": time.monotonic() - started})
    return build_derived_image(profile.tag, profile.requirements, profile=profile.name, force=force, say=say)


def ensure_packages_image(
    packages: list[str] | tuple[str, ...], *, say: Callable[[str], None] = _say
) -> ImageInfo:
    """The image for a project's ``sandbox_packages``: built once, found by its hash tag after."""
    requirements = normalise_requirements(packages)
    if not requirements:
        raise ValueError("sandbox_packages is empty")
    tag = packages_tag(requirements)
    info = image_info(tag)
    if info is not None:
        return info
    say(f"sandbox_packages changed or first use: building {tag} once (later runs reuse it)")
    return build_derived_image(tag, requirements, profile="packages", say=say)
