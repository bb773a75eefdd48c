"""The committed gRPC code is exactly what the protos generate (stale code fails here)."""

from __future__ import annotations

import importlib.util
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parents[4]


def _genproto():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("genproto", ROOT / "scripts" / "genproto.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["genproto"] = module
    spec.loader.exec_module(module)
    return module


def test_generated_code_is_fresh(tmp_path: pathlib.Path) -> None:
    gen = _genproto()
    written = gen.generate(tmp_path)
    committed = ROOT / "streamer" / "api" / "v1"
    fresh_names = {p.name for p in written}
    committed_names = {p.name for p in committed.iterdir() if p.suffix in (".py", ".pyi")}
    assert fresh_names == committed_names, "run `make proto`: generated file set differs"
    for path in written:
        assert path.read_text() == (committed / path.name).read_text(), (
            f"run `make proto`: {path.name} is stale"
        )


def test_every_message_and_field_is_documented() -> None:
    """Each message, field, service and rpc in proto/ has a comment right above it."""
    for proto in sorted((ROOT / "proto" / "streamer" / "v1").glob("*.proto")):
        lines = proto.read_text().splitlines()
        for i, line in enumerate(lines):
            text = line.strip()
            is_decl = text.startswith(("message ", "service ", "rpc ", "oneof ")) or (
                text.endswith(";")
                and "=" in text
                and not text.startswith(("syntax", "package", "import", "option", "//"))
            )
            if is_decl:
                above = lines[i - 1].strip() if i else ""
                assert above.startswith("//"), f"{proto.name}:{i + 1} undocumented: {text}"
