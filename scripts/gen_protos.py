"""Regenerate the committed protobuf and gRPC stubs from proto/rmsfleet/v1/*.proto.

The one script that writes generated code: `python scripts/gen_protos.py` rewrites the stubs in
place; `--check` regenerates into a scratch folder and exits 1 naming every file that differs,
so CI catches a .proto edited without regenerating.
"""

from __future__ import annotations

import argparse
import filecmp
import os
import shutil
import sys
import tempfile
from pathlib import Path

from grpc_tools import protoc

PROTO_ROOT = Path(__file__).resolve().parent.parent / "proto"
PACKAGE_DIR = Path("rmsfleet") / "v1"
GENERATED_SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py", "_pb2_grpc.pyi")


def generate(out_root: Path) -> None:
    protos = sorted(str(p.relative_to(PROTO_ROOT)) for p in (PROTO_ROOT / PACKAGE_DIR).glob("*.proto"))
    include = Path(protoc.__file__).parent / "_proto"
    args = [
        "grpc_tools.protoc",
        f"-I{PROTO_ROOT}",
        f"-I{include}",
        f"--python_out={out_root}",
        f"--grpc_python_out={out_root}",
        f"--mypy_out={out_root}",
        f"--mypy_grpc_out={out_root}",
        *protos,
    ]
    # The mypy-protobuf plugins live next to this interpreter, which need not be on PATH.
    os.environ["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed; see the message above")


def generated_files(root: Path) -> set[str]:
    return {p.name for p in (root / PACKAGE_DIR).iterdir() if p.name.endswith(GENERATED_SUFFIXES)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail if the committed stubs are stale")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        scratch_root = Path(scratch)
        (scratch_root / PACKAGE_DIR).mkdir(parents=True)
        generate(scratch_root)
        fresh = generated_files(scratch_root)
        if args.check:
            committed = generated_files(PROTO_ROOT) if (PROTO_ROOT / PACKAGE_DIR).exists() else set()
            stale = sorted(
                name
                for name in fresh | committed
                if name not in fresh
                or name not in committed
                or not filecmp.cmp(scratch_root / PACKAGE_DIR / name, PROTO_ROOT / PACKAGE_DIR / name, shallow=False)
            )
            if stale:
                print("stale generated stubs (run: python scripts/gen_protos.py): " + ", ".join(stale), file=sys.stderr)
                return 1
            print(f"generated stubs are current ({len(fresh)} files)")
            return 0
        for name in generated_files(PROTO_ROOT):
            (PROTO_ROOT / PACKAGE_DIR / name).unlink()
        for name in fresh:
            shutil.copyfile(scratch_root / PACKAGE_DIR / name, PROTO_ROOT / PACKAGE_DIR / name)
        print(f"wrote {len(fresh)} files under {PROTO_ROOT / PACKAGE_DIR}")
        return 0


if __name__ == "__main__":
    raise SystemExit(main())
