"""The wheel installs one import name, ``ragcoder``, and works in a clean venv.

``package-dir`` maps ``ragcoder.agent`` and the others onto the repository's top-level folders;
the editable install hides mistakes there (its finder maps names to folders), so this builds the
wheel from a copy of the sources, installs it into a fresh venv without pip or the editable
finder, and imports from it. The venv reaches the dependencies through a ``.pth`` naming the
site-packages they are installed in (a path line, so that folder's own .pth files, the editable
finder among them, are not run).
"""

from __future__ import annotations

import importlib.metadata
import json
import shutil
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import langchain_core
import pytest

REPO = Path(__file__).resolve().parents[1]
SOURCES = ("pyproject.toml", "README.md", "ragcoder", "agent", "chains", "sandbox", "finetune")
DESIGN_FOLDERS = ("agent", "chains", "sandbox", "finetune")

pytestmark = pytest.mark.slow  # a wheel build (isolated: setuptools < 68), a venv, an install


def _build_wheel(tmp: Path) -> Path:
    source = tmp / "src"
    for name in SOURCES:
        path = REPO / name
        if path.is_dir():
            shutil.copytree(path, source / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            source.mkdir(exist_ok=True)
            shutil.copy2(path, source / name)
    command = [
        sys.executable,
        "-m",
        "pip",
        "wheel",
        "--no-deps",
        "--no-cache-dir",
        "-q",
        "-w",
        str(tmp / "dist"),
    ]
    setuptools_major = int(importlib.metadata.version("setuptools").split(".")[0])
    if setuptools_major >= 68:  # what pyproject's build-system asks for: build offline with it
        command.append("--no-build-isolation")
    proc = subprocess.run([*command, str(source)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (wheel,) = (tmp / "dist").glob("ragcoder-*.whl")
    return wheel


def _clean_venv(tmp: Path, wheel: Path) -> Path:
    folder = tmp / "venv"
    venv.create(folder, with_pip=False)
    python = folder / "bin" / "python"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(python),
            "install",
            "-q",
            "--no-deps",
            "--no-index",
            str(wheel),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    dependencies = Path(langchain_core.__file__).resolve().parents[1]
    (Path(purelib) / "zz_dependencies.pth").write_text(f"{dependencies}\n")
    return folder


_PROBE = """
import json, sys
from importlib import resources
from ragcoder.agent import CodeAgent
import ragcoder, ragcoder.agent, ragcoder.cli.app
from ragcoder.errors import RagcoderError, SandboxError
from ragcoder.sandbox.workers import server_source
sandbox = resources.files("ragcoder.sandbox")
print(json.dumps({
    "files": [ragcoder.__file__, ragcoder.agent.__file__, ragcoder.cli.app.__file__],
    "agent": CodeAgent.__module__,
    "errors": issubclass(SandboxError, RagcoderError),
    "server": len(server_source()),
    "compiles": bool(compile(server_source(), "ragcoder-server", "exec")),
    "dockerfile": sandbox.joinpath("image", "Dockerfile").read_text(),
    "scripts": sorted(p.name for p in sandbox.joinpath("scripts").iterdir()),
    "finders": [type(f).__name__ for f in sys.meta_path],
}))
"""


def test_the_wheel_installs_ragcoder_only_and_imports_in_a_clean_venv(tmp_path: Path) -> None:
    wheel = _build_wheel(tmp_path)
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        tops = {name.split("/", 1)[0] for name in names}
        top_level = archive.read("ragcoder-0.1.0.dist-info/top_level.txt").decode().split()
    assert tops == {"ragcoder", "ragcoder-0.1.0.dist-info"} and top_level == ["ragcoder"]
    for folder in DESIGN_FOLDERS:  # each design folder lands under ragcoder/, whole
        on_disk = {p.relative_to(REPO).as_posix() for p in (REPO / folder).rglob("*.py")}
        assert {f"ragcoder/{name}" for name in on_disk} <= set(names), folder

    folder = _clean_venv(tmp_path, wheel)
    site = folder / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"
    assert not any((site / name).exists() for name in DESIGN_FOLDERS)
    proc = subprocess.run(
        [str(folder / "bin" / "python"), "-c", _PROBE],
        cwd=tmp_path,  # not the repository, whose ragcoder/ folder would shadow the install
        env={"PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1", "HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    probe = json.loads(proc.stdout.strip().splitlines()[-1])
    assert all(Path(f).is_relative_to(site / "ragcoder") for f in probe["files"]), probe["files"]
    assert probe["agent"].startswith("ragcoder.agent") and probe["errors"] and probe["compiles"]
    assert probe["server"] > 1000
    assert probe["dockerfile"] == (REPO / "sandbox" / "image" / "Dockerfile").read_text()
    assert probe["scripts"] == sorted(p.name for p in (REPO / "sandbox" / "scripts").iterdir())
    assert not any("Editable" in finder for finder in probe["finders"]), probe["finders"]

    help_run = subprocess.run(
        [str(folder / "bin" / "ragcoder"), "--help"],
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert help_run.returncode == 0 and "Usage" in help_run.stdout, help_run.stderr
