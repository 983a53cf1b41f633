"""The package layout: every package directory is installed, and the optimizers load nothing of the analyses.

The full layer contract (import-linter, pyproject's ``[tool.importlinter]``) runs in ``.ci/layers`` on an
installed copy; these two checks are the cheap part of it that every ``pytest`` run keeps.
"""

import subprocess
import sys
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]


def test_every_package_directory_is_listed_for_installation():
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    found = {".".join((name, *init.parent.relative_to(ROOT / folder).parts))
             for name, folder in setuptools["package-dir"].items() for init in (ROOT / folder).rglob("__init__.py")}
    assert found == set(setuptools["packages"]), f"unlisted: {found - set(setuptools['packages'])}"


def test_importing_the_optimizers_loads_no_analysis_or_cli_module():
    code = ("import sys, landscape.optim; "
            "print(sorted(m for m in sys.modules if m.startswith(('landscape.analysis', 'landscape.cli'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
