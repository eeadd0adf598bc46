"""What clients in other languages get from protos/: the google.rpc files to decode rich errors,
the same ones Python uses, and a contract that does not break what the last release promised."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from importlib import resources
from pathlib import Path

import pytest

from cjo_platform.protogen import PROTOS, generate

REPO = Path(__file__).resolve().parents[2]


def buf() -> str:
    found = shutil.which("buf", path=str(Path(sys.executable).parent))
    assert found, "buf is installed by `make install` (buf-bin)"
    return found


def release_image() -> Path:
    release = re.search(r"^PROTO_RELEASE := (\S+)$", (REPO / "Makefile").read_text(), re.M)
    assert release, "the Makefile names the last released contract"
    return PROTOS / "releases" / f"{release.group(1)}.binpb"


def test_the_vendored_google_rpc_protos_are_the_ones_python_imports() -> None:
    """A Node or Go client decodes ErrorInfo and BadRequest with protos/google/rpc; the Python
    services encode them with googleapis-common-protos. Byte-identical files mean one contract,
    and Python keeps one copy of google.rpc on its import path."""
    installed = resources.files("google.rpc")
    for name in ("status.proto", "error_details.proto"):
        vendored = (PROTOS / "google" / "rpc" / name).read_text()
        assert vendored == (installed / name).read_text(), f"re-vendor google/rpc/{name}"
    assert "message BadRequest" in (PROTOS / "google" / "rpc" / "error_details.proto").read_text()


def test_make_protos_generates_no_second_google_rpc(tmp_path: Path) -> None:
    written = generate(out=tmp_path)
    assert written and not (tmp_path / "google").exists()


def test_buf_breaking_passes_against_the_last_release() -> None:
    result = subprocess.run([buf(), "breaking", str(PROTOS), "--against", str(release_image())],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_buf_breaking_catches_a_deleted_field(tmp_path: Path) -> None:
    """Guards the guard: removing a released field fails `make lint`."""
    shutil.copytree(PROTOS, tmp_path / "protos")
    common = tmp_path / "protos" / "cjo" / "common" / "v1" / "common.proto"
    text = common.read_text()
    assert "  string subject = 1;\n" in text
    common.write_text(text.replace("  string subject = 1;\n", "  reserved 1;\n", 1))
    result = subprocess.run(
        [buf(), "breaking", str(tmp_path / "protos"), "--against", str(release_image())],
        capture_output=True, text=True)
    assert result.returncode != 0
    assert 'field "1" with name "subject"' in result.stdout, result.stdout + result.stderr


# A protoc plugin that writes, for each file it is asked to generate, the options code would be
# generated with (its parameter, go_package, java_package) and those of the google.rpc files it
# imports: enough to check what each buf.gen.yaml in docs/clients.md asks of the real plugins.
STUB_PLUGIN = '''
import os, sys
from google.protobuf.compiler import plugin_pb2
request = plugin_pb2.CodeGeneratorRequest.FromString(sys.stdin.buffer.read())
response = plugin_pb2.CodeGeneratorResponse(
    supported_features=plugin_pb2.CodeGeneratorResponse.FEATURE_PROTO3_OPTIONAL)
files = {f.name: f for f in request.proto_file}
imported = "".join(f"import {n} go_package={f.options.go_package}\\n"
                   for n, f in files.items() if n.startswith("google/rpc/"))
for name in request.file_to_generate:
    options = files[name].options
    response.file.add(name=f"{name}.{os.path.basename(sys.argv[0])}", content=(
        f"parameter={request.parameter}\\ngo_package={options.go_package}\\n"
        f"java_package={options.java_package}\\n{imported}"))
sys.stdout.buffer.write(response.SerializeToString())
'''
PLUGINS = ("protoc-gen-ts_proto", "protoc-gen-es", "protoc-gen-go", "protoc-gen-go-grpc",
           "protoc-gen-java", "protoc-gen-grpc-java")


def documented_templates() -> dict[str, str]:
    """The buf.gen.yaml files of docs/clients.md, by their first line's title."""
    text = (REPO / "docs" / "clients.md").read_text()
    blocks = re.findall(r"```yaml\n(.*?)```", text, re.S)
    return {b.splitlines()[0]: b for b in blocks if "version: v2" in b and "plugins:" in b}


def generated(tmp_path: Path, template: str) -> dict[str, str]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for plugin in PLUGINS:
        script = bin_dir / plugin
        script.write_text(f"#!{sys.executable}\n{STUB_PLUGIN}")
        script.chmod(0o755)
    # `protoc_builtin: java` runs protoc; grpc_tools' protoc has no Java generator built in, so
    # it runs protoc-gen-java from the PATH -- the stub.
    protoc = bin_dir / "protoc"
    protoc.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m grpc_tools.protoc "$@"\n')
    protoc.chmod(0o755)
    shutil.copytree(PROTOS, tmp_path / "protos")
    (tmp_path / "buf.gen.yaml").write_text(template)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    result = subprocess.run([buf(), "generate"], cwd=tmp_path, env=env, capture_output=True,
                            text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    return {str(p.relative_to(tmp_path)): p.read_text()
            for p in tmp_path.rglob("*.protoc-gen-*") if p.is_file()}


def test_the_documented_buf_gen_files_cover_every_language() -> None:
    assert {title.split(":")[1].split(" with ")[0].strip()
            for title in documented_templates()} == {"TypeScript", "Go", "Java"}


@pytest.mark.parametrize("title", sorted(documented_templates()))
def test_each_documented_buf_gen_file_generates_every_cjo_proto(tmp_path: Path,
                                                                  title: str) -> None:
    template = documented_templates()[title]
    files = generated(tmp_path, template)
    cjo_protos = {str(p.relative_to(PROTOS)) for p in (PROTOS / "cjo").rglob("*.proto")}
    plugins = re.findall(r"(?:local: |protoc_builtin: )(\S+)", template)
    assert plugins
    for plugin in plugins:
        name = plugin if plugin.startswith("protoc-gen-") else f"protoc-gen-{plugin}"
        # out/dir/cjo/identity/v1/event.proto.protoc-gen-go -> cjo/identity/v1/event.proto
        made = {re.sub(r"^.*?(?=(cjo|google)/)", "", f).removesuffix(f".{name}")
                for f in files if f.endswith(f".{name}")}
        assert cjo_protos <= made, (plugin, sorted(cjo_protos - made))
    any_cjo = next(c for f, c in files.items() if "identity_service.proto" in f)
    if "Go" in title:
        # cjo's code gets the team's import path; google.rpc stays genproto's, which Go code
        # already has (generating it again would give a second, incompatible ErrorInfo type).
        assert "go_package=example.com/acme/cjoclient/gen/cjo/identity/v1;identityv1" in any_cjo
        assert ("import google/rpc/status.proto go_package="
                "google.golang.org/genproto/googleapis/rpc/status;status") in any_cjo
        assert not any("google/rpc" in f for f in files)
    elif "Java" in title:
        assert "java_package=com.acme.cjoclient.cjo.identity.v1" in any_cjo
        assert not any("google/rpc" in f for f in files)
    else:
        # TypeScript has no package for google.rpc that the generated code would import:
        # the generators emit it beside cjo's.
        assert any("google/rpc/error_details.proto" in f for f in files)
