"""Generates the Python stubs (messages, ``.pyi`` type stubs and gRPC stubs) from ``protos/``.

``python -m cjo_platform.protogen`` writes them to ``libs/``; the drift test generates into a
temporary directory and compares, so committed stubs always match the protos.
"""

from __future__ import annotations

import sys
from importlib import resources
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PROTOS = REPO / "protos"
OUTPUT = REPO / "libs"
PACKAGE_ROOT = "cjo"


def proto_files(root: Path = PROTOS) -> list[Path]:
    return sorted((root / PACKAGE_ROOT).rglob("*.proto"))


def generate(out: Path = OUTPUT, protos: Path = PROTOS) -> list[Path]:
    """Generate stubs for every cjo proto into ``out``; returns the files written."""
    from grpc_tools import protoc

    well_known = resources.files("grpc_tools") / "_proto"
    files = proto_files(protos)
    args = [
        "protoc",
        f"-I{protos}",
        f"-I{well_known}",
        f"--python_out={out}",
        f"--pyi_out={out}",
        f"--grpc_python_out={out}",
        *(str(f.relative_to(protos)) for f in files),
    ]
    if protoc.main(args) != 0:
        raise RuntimeError("protoc failed; see the errors above")
    package_dir = out / PACKAGE_ROOT
    for directory in [package_dir, *(p for p in package_dir.rglob("*") if p.is_dir())]:
        if directory.name == "__pycache__":
            continue
        init = directory / "__init__.py"
        if not init.exists():
            init.write_text('"""Generated from protos/ by `make protos`; do not edit."""\n')
    return sorted(p for p in package_dir.rglob("*") if p.is_file() and "__pycache__" not in p.parts)


if __name__ == "__main__":
    written = generate()
    print(f"generated {len(written)} files under {OUTPUT / PACKAGE_ROOT}", file=sys.stderr)
