"""Generate the Python gRPC code of ``proto/streamer/v1`` into ``streamer/api/v1``.

Run by ``make proto``; ``tests/unit/streamer/api/test_generated_code.py`` runs it into a temporary
folder and fails when the committed code differs (stale).

protoc names imports after the proto package path (``streamer.v1``); the code lives
in the ``streamer.api.v1`` package, so imports are rewritten after generation.
"""

from __future__ import annotations

import argparse
import pathlib
import re
import sys
import tempfile

from grpc_tools import protoc

ROOT = pathlib.Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "proto"
PROTO_DIR = PROTO_ROOT / "streamer" / "v1"
OUT_DIR = ROOT / "streamer" / "api" / "v1"
BIN = pathlib.Path(sys.executable).parent
HEADER = "# Generated from proto/streamer/v1 by scripts/genproto.py. Do not edit.\n"
IMPORT_RE = re.compile(r"^from streamer\.v1 import", re.MULTILINE)


def generate(out_dir: pathlib.Path) -> list[pathlib.Path]:
    """Generate every module into ``out_dir``; return the files written."""
    import grpc_tools

    protos = sorted(PROTO_DIR.glob("*.proto"))
    well_known = pathlib.Path(grpc_tools.__file__).parent / "_proto"
    with tempfile.TemporaryDirectory() as tmp:
        args = [
            "grpc_tools.protoc",
            f"-I{PROTO_ROOT}",
            f"-I{well_known}",
            f"--python_out={tmp}",
            f"--grpc_python_out={tmp}",
            f"--plugin=protoc-gen-mypy={BIN / 'protoc-gen-mypy'}",
            f"--plugin=protoc-gen-mypy_grpc={BIN / 'protoc-gen-mypy_grpc'}",
            f"--mypy_out={tmp}",
            f"--mypy_grpc_out={tmp}",
            *[str(p) for p in protos],
        ]
        if protoc.main(args) != 0:
            raise SystemExit("protoc failed")
        generated = pathlib.Path(tmp) / "streamer" / "v1"
        out_dir.mkdir(parents=True, exist_ok=True)
        written = []
        for src in sorted(generated.iterdir()):
            if src.suffix not in (".py", ".pyi"):
                continue
            text = IMPORT_RE.sub("from streamer.api.v1 import", src.read_text())
            dst = out_dir / src.name
            dst.write_text(HEADER + text)
            written.append(dst)
        init = out_dir / "__init__.py"
        init.write_text(HEADER + '"""Generated gRPC contracts of Streamer (package streamer.v1)."""\n')
        written.append(init)
        return written


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=pathlib.Path, default=OUT_DIR)
    opts = parser.parse_args()
    if opts.out == OUT_DIR and OUT_DIR.exists():
        for old in OUT_DIR.glob("*_pb2*"):
            old.unlink()
    for path in generate(opts.out):
        print(path.relative_to(ROOT) if path.is_relative_to(ROOT) else path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
