"""``ImageRouter``: one Sandbox over several images, each run sent to the image that has what it imports.

    with ImageRouter("auto") as sb:                    # what the agent opens (sandbox_image = "auto")
        sb.run("print(sum(range(10)))")                # the standard image
        sb.run("import pandas as pd; print(pd.__version__)")  # the scientific image, if built
        r = sb.run("import torch")                     # no image has it:
        r.missing  # 'needs torch; add "torch" to sandbox_packages in ragcoder.toml (...)'

The default image is opened at once (set-up errors raise here); the others lazily, on the first
run that needs them. A project's ``sandbox_packages`` image (built once, cached by hash) replaces
the default. With a fixed choice ("standard", "scientific" or a tag) every run goes to that image.
Without Docker (the local backends) there is one environment and no routing; the one-line note
on a missing package still comes back.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from ragcoder.sandbox.base import ErrorInfo, ExecResult, Sandbox, TestReport
from ragcoder.sandbox.profiles import (
    PROFILES,
    SCIENTIFIC,
    imported_modules,
    missing_message,
    missing_module,
)
from ragcoder.sandbox.session import Session
from ragcoder.sandbox.settings import DEFAULT_IMAGE

from ragcoder.errors import ImageMissing

log = logging.getLogger(__name__)
IMAGE_CHOICES = ("auto", *PROFILES)  # or any image tag


class ImageRouter(Sandbox):
    """A Sandbox that routes each run to the image providing its imports (see the module doc)."""

    sessions_are_whole = True  # session() returns a Session already (session.open_session)

    def __init__(
        self,
        kind: str = "auto",
        *,
        image: str = "auto",
        packages: Sequence[str] = (),
        **settings: Any,
    ) -> None:
        from ragcoder.sandbox.factory import open_sandbox
        from ragcoder.sandbox.images import ImageInfo

        self.kind = kind
        self.choice = image
        self._settings = settings
        self._lock = threading.Lock()
        self._opened: dict[str, Sandbox] = {}
        self.candidates: list[ImageInfo] = []  # images runs may go to, besides the default
        self.default_modules: frozenset[str] = frozenset()
        self.built: frozenset[str] = frozenset()  # tags known to exist (for the missing-package note)
        # files written into /work before every run (and when a session starts): `--file` inputs
        self.inputs: dict[str, bytes | str] = {}
        project = self._project_image(kind, packages)
        default_tag = self._default_tag(project.tag if project else None)
        self._check_profile_built(kind, default_tag)
        self.default = open_sandbox(kind, image=default_tag, **settings)
        self.name = self.default.name
        self.default_tag = default_tag if self.name == "docker" else ""
        self._opened[self.default_tag] = self.default
        if self.name == "docker":
            self._find_images(project)

    # -- choosing -------------------------------------------------------------------------------
    def _project_image(self, kind: str, packages: Sequence[str]) -> Any:
        if not packages or kind not in ("auto", "docker"):
            return None
        from ragcoder.sandbox.image import engine_available
        from ragcoder.sandbox.images import ensure_packages_image

        if kind == "auto" and not engine_available():
            log.warning("sandbox_packages needs Docker; the local sandbox runs without them")
            return None
        return ensure_packages_image(packages)

    def _default_tag(self, project_tag: str | None) -> str:
        if self.choice == "auto":
            return project_tag or DEFAULT_IMAGE
        if self.choice in PROFILES:
            return PROFILES[self.choice].tag
        return self.choice

    def _check_profile_built(self, kind: str, tag: str) -> None:
        """A pinned profile whose image is missing: say how to build it (rather than fall back)."""
        if self.choice not in PROFILES or self.choice == "standard" or kind not in ("auto", "docker"):
            return
        from ragcoder.sandbox.image import engine_available
        from ragcoder.sandbox.images import image_info

        if engine_available() and image_info(tag) is None:
            raise ImageMissing(
                f'sandbox_image = "{self.choice}" but {tag} is not built',
                hint=f"build it with `ragcoder sandbox build-image --profile {self.choice}`, "
                'or set sandbox_image = "auto"',
            )

    def _find_images(self, project: Any) -> None:
        from ragcoder.sandbox.images import image_info

        found = [project] if project is not None else []
        scientific = image_info(SCIENTIFIC.tag)
        if scientific is not None:
            found.append(scientific)
        default_info = image_info(self.default_tag)
        self.default_modules = default_info.modules if default_info else frozenset()
        self.built = frozenset({i.tag for i in found} | {self.default_tag})
        if self.choice == "auto":
            self.candidates = [i for i in found if i.tag != self.default_tag]

    def image_for(self, *sources: str) -> str:
        """The tag a run of ``sources`` (code, tests) goes to ('' without Docker)."""
        needs = set().union(*(imported_modules(source) for source in sources))
        if not needs or not self.candidates or needs <= self.default_modules:
            return self.default_tag
        best, covered = self.default_tag, len(needs & self.default_modules)
        for info in self.candidates:
            have = len(needs & info.modules)
            if have == len(needs):
                return info.tag
            if have > covered:
                best, covered = info.tag, have
        return best

    def richest_tag(self) -> str:
        """Where a session goes: it cannot know its later imports, so the image with the most."""
        if not self.candidates:
            return self.default_tag
        return max(self.candidates, key=lambda info: len(info.modules)).tag

    def sandbox_for(self, tag: str) -> Sandbox:
        with self._lock:
            sandbox = self._opened.get(tag)
            if sandbox is None:
                sandbox = self._open(tag)
                self._opened[tag] = sandbox
            return sandbox

    def _open(self, tag: str, **overrides: Any) -> Sandbox:
        from ragcoder.sandbox.factory import open_sandbox

        settings = {**self._settings, **overrides}
        if not tag:
            return open_sandbox(self.name, **settings)
        if settings.get("hosts"):  # docker_hosts: the image on each engine, spread as for the default
            return open_sandbox("docker", image=tag, **settings)
        settings.pop("hosts", None)
        from ragcoder.sandbox.docker_sandbox import DockerSandbox

        return DockerSandbox(image=tag, reap=False, **settings)

    # -- running --------------------------------------------------------------------------------
    def run(
        self,
        code: str,
        *,
        stdin: str | None = None,
        files: Mapping[str, bytes | str] | None = None,
        timeout: float | None = None,
    ) -> ExecResult:
        sandbox = self.sandbox_for(self.image_for(code))
        merged = {**self.inputs, **(files or {})} or None
        return self.annotate(sandbox.run(code, stdin=stdin, files=merged, timeout=timeout))

    def run_tests(
        self,
        code: str,
        tests: str | Sequence[str],
        *,
        entry_point: str | None = None,
        timeout: float | None = None,
        files: Mapping[str, bytes | str] | None = None,
    ) -> TestReport:
        # Routed on the code and tests themselves: the test program carries them as string literals.
        source = tests if isinstance(tests, str) else "\n".join(tests)
        sandbox = self.sandbox_for(self.image_for(code, source))
        merged = {**self.inputs, **(files or {})} or None
        report = sandbox.run_tests(code, tests, entry_point=entry_point, timeout=timeout, files=merged)
        # An import error while loading the code is caught by the test program: report.error.
        note = self.missing_note(report.error or report.result.error)
        return replace(report, result=replace(report.result, missing=note)) if note else report

    def annotate(self, result: ExecResult) -> ExecResult:
        """``result`` with its one-line note when it failed for want of a package."""
        note = self.missing_note(result.error)
        return replace(result, missing=note) if note else result

    def missing_note(self, error: ErrorInfo | None) -> str:
        module = missing_module(error)
        if module is None:
            return ""
        return missing_message(module, built=self.built, backend=self.name)

    def session(self, inputs: Mapping[str, bytes | str] | None = None) -> Session:
        """A stateful session in the richest image, on a server of its own (closed with it)."""
        tag = self.richest_tag()
        box: dict[str, Sandbox] = {}

        def open_inner() -> Any:
            if "sandbox" not in box:
                box["sandbox"] = self._open(tag, pool_size=1)
            return box["sandbox"].session()  # type: ignore[attr-defined]

        def on_close() -> None:
            if "sandbox" in box:
                box.pop("sandbox").close()

        merged = {**self.inputs, **(inputs or {})}
        return Session(open_inner, on_close=on_close, annotate=self.annotate, inputs=merged, image=tag)

    def close(self) -> None:
        with self._lock:
            opened = list(self._opened.values())
            self._opened.clear()
        for sandbox in opened:
            sandbox.close()
