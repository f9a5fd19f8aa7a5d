"""The import contracts in pyproject.toml ([tool.importlinter]) hold, checked by import-linter.

import-linter finds subpackages by folder, and ``package-dir`` keeps ours at the repository top
(agent/, chains/, ...), so the check runs on a folder laid out as the installed package is: links
named ``ragcoder/agent`` and so on to the repository's folders. It runs in a child process so that
``ragcoder`` resolves there, not to the editable install already imported here.

``python tests/test_architecture.py`` prints import-linter's full report.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def installed_layout(root: Path) -> Path:
    """``root`` holding ``ragcoder/`` as installed, its parts linked to the repository's folders."""
    package_dir = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
    top = root / "ragcoder"
    top.mkdir(parents=True)
    for entry in (REPO / package_dir["ragcoder"]).iterdir():  # a real folder: the others go inside
        if entry.name != "__pycache__" and not entry.name.endswith(".egg-info"):
            (top / entry.name).symlink_to(entry)
    for name, folder in package_dir.items():
        if name != "ragcoder":
            (root / name.replace(".", "/")).symlink_to(REPO / folder, target_is_directory=True)
    return root


def _run_in_layout(layout: Path, code: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        cwd=layout,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(layout), "NO_COLOR": "1", "COLUMNS": "120"},
        capture_output=True,
        text=True,
        timeout=300,
    )


_LINT = "import sys; from importlinter.cli import lint_imports_command; sys.exit(lint_imports_command())"


def lint_imports(layout: Path) -> subprocess.CompletedProcess[str]:
    return _run_in_layout(layout, _LINT, str(REPO / "pyproject.toml"), "--no-cache")


def test_the_import_contracts_hold(tmp_path: Path) -> None:
    layout = installed_layout(tmp_path)
    proc = lint_imports(layout)
    report = proc.stdout + proc.stderr
    assert proc.returncode == 0, report
    contracts = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]
    for contract in contracts:  # every contract was read and checked, none silently dropped
        assert f"{contract['name']} KEPT" in report, report
    analyzed = int(report.split("Analyzed ", 1)[1].split(" files", 1)[0])
    on_disk = sum(
        1
        for folder in ("ragcoder", "agent", "chains", "sandbox", "finetune")
        for path in (REPO / folder).rglob("*.py")
        if (path.parent / "__init__.py").exists()  # sandbox/image/*.py: files for the image, not modules
    )
    assert analyzed == on_disk, f"import-linter saw {analyzed} modules, the folders hold {on_disk}"


def test_the_architecture_doc_states_the_contracts_and_every_package() -> None:
    doc = (REPO / "docs" / "architecture.md").read_text()
    contracts = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]
    for contract in contracts:
        if contract["type"] == "layers":
            assert f"`{' > '.join(contract['layers'])}`" in doc, (
                f"docs/architecture.md lacks {contract['name']}"
            )
    package_dir = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
    for name, folder in package_dir.items():
        for init in (REPO / folder).rglob("__init__.py"):
            package = ".".join([name, *init.parent.relative_to(REPO / folder).parts])
            assert f"`{package}`" in doc, f"docs/architecture.md does not say what {package} owns"


def test_the_in_sandbox_server_imports_the_standard_library_only(tmp_path: Path) -> None:
    # It runs inside the sandbox image, which has no site-packages (the contracts cover ragcoder.*).
    layout = installed_layout(tmp_path)
    code = (
        "import grimp, json\n"
        "g = grimp.build_graph('ragcoder', include_external_packages=True, cache_dir=None)\n"
        "server = [m for m in g.modules if m.startswith('ragcoder.sandbox.server')]\n"
        "print(json.dumps(sorted({i for m in server for i in g.find_modules_directly_imported_by(m)})))\n"
    )
    proc = _run_in_layout(layout, code)
    assert proc.returncode == 0, proc.stderr
    imported = json.loads(proc.stdout)
    outside = [m for m in imported if not m.startswith("ragcoder.") and m not in sys.stdlib_module_names]
    assert "os" in imported and outside == []


if __name__ == "__main__":
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        result = lint_imports(installed_layout(Path(folder)))
    print(result.stdout + result.stderr)
    sys.exit(result.returncode)
