"""The protos are the contract polyglot users read: they lint clean and the committed Python
stubs are exactly what the protos generate."""

from __future__ import annotations

import filecmp
import shutil
import subprocess
import sys
from pathlib import Path

from cjo_platform.protogen import OUTPUT, PACKAGE_ROOT, PROTOS, generate

REPO = Path(__file__).resolve().parents[2]


def test_generated_stubs_match_the_protos(tmp_path: Path) -> None:
    generate(out=tmp_path)
    fresh = {p.relative_to(tmp_path) for p in (tmp_path / PACKAGE_ROOT).rglob("*") if p.is_file()}
    committed = {p.relative_to(OUTPUT) for p in (OUTPUT / PACKAGE_ROOT).rglob("*")
                 if p.is_file() and "__pycache__" not in p.parts}
    assert fresh == committed, "stubs missing or extra: run `make protos` and commit"
    drifted = [str(p) for p in sorted(fresh)
               if not filecmp.cmp(tmp_path / p, OUTPUT / p, shallow=False)]
    assert not drifted, f"stubs out of date (run `make protos`): {drifted}"


def test_buf_lint_passes() -> None:
    buf = shutil.which("buf", path=str(Path(sys.executable).parent))
    assert buf, "buf is installed by `make install` (buf-bin)"
    result = subprocess.run([buf, "lint", str(PROTOS)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_buf_lint_catches_an_uncommented_field(tmp_path: Path) -> None:
    """Guards the guard: the lint configuration really enforces comments."""
    shutil.copytree(PROTOS, tmp_path / "protos")
    target = tmp_path / "protos" / "cjo" / "common" / "v1" / "common.proto"
    target.write_text(target.read_text().replace("  // Subject line.\n", ""))
    buf = shutil.which("buf", path=str(Path(sys.executable).parent))
    assert buf
    result = subprocess.run([buf, "lint", str(tmp_path / "protos")], capture_output=True,
                            text=True)
    assert result.returncode != 0
    assert "subject" in result.stdout


def test_every_package_is_listed_in_pyproject() -> None:
    """A package missing from pyproject works in the editable checkout but not in the image."""
    import tomllib

    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    roots = {Path(v): k for k, v in config["package-dir"].items()}
    found = set()
    for root, name in roots.items():
        for init in (REPO / root).rglob("__init__.py"):
            rel = init.parent.relative_to(REPO / root)
            found.add(".".join([name, *rel.parts]))
    assert found - listed == set(), "add these to [tool.setuptools] packages"
