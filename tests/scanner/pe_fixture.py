"""PE files with a real version resource, built here (never downloaded, never committed).

    build_version_dll(path, (5, 2, 3790, 134), product="Windows Rights Management Services")

writes a resource-only 32-bit DLL whose VERSIONINFO carries that file version, as Windows'
GetFileVersionInfo and pefile read it: an `.rc` file compiled by `i686-w64-mingw32-windres`
(Debian's binutils-mingw-w64-i686; `--preprocessor=cat` because there is no mingw C preprocessor,
and the script needs none) and linked by `i686-w64-mingw32-ld --dll -e 0`. Fixtures name such a
file `ntoskrnl.exe`, `msdrm.dll` or the RMS server's `Plugin.DirectoryServices.dll`: what the
scanner reads from them is the version resource, which is all these files share with the real ones.

Run as a script to write one: `python tests/scanner/pe_fixture.py OUT 5.2.3790.134 [PRODUCT]`.
Built files are cached by content in `cache_dir` when given (windres and ld take a while, and
a test run builds the same few versions again and again).
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

WINDRES = "i686-w64-mingw32-windres"
LD = "i686-w64-mingw32-ld"
PACKAGE = "binutils-mingw-w64-i686"

Version = tuple[int, int, int, int]


def parse_version(text: str) -> Version:
    problem = ValueError(f"expected a version of four numbers 0..65535 like 5.2.3790.134, got {text!r}")
    try:
        parts = [int(part) for part in text.split(".")]
    except ValueError:
        raise problem from None
    if len(parts) != 4 or any(not 0 <= part <= 0xFFFF for part in parts):
        raise problem
    return (parts[0], parts[1], parts[2], parts[3])


def version_rc(version: Version, product: str, original_name: str) -> str:
    """The resource script: VS_VERSIONINFO with the fixed file/product version and the usual
    strings (US English, Unicode)."""
    commas = ",".join(str(part) for part in version)
    dotted = ".".join(str(part) for part in version)

    def quoted(text: str) -> str:
        return '"' + text.replace('"', '""') + '"'

    return f"""1 VERSIONINFO
FILEVERSION {commas}
PRODUCTVERSION {commas}
FILEFLAGSMASK 0x3f
FILEFLAGS 0x0
FILEOS 0x40004
FILETYPE 0x2
FILESUBTYPE 0x0
BEGIN
  BLOCK "StringFileInfo"
  BEGIN
    BLOCK "040904b0"
    BEGIN
      VALUE "CompanyName", "Microsoft Corporation"
      VALUE "FileVersion", {quoted(dotted)}
      VALUE "OriginalFilename", {quoted(original_name)}
      VALUE "ProductName", {quoted(product)}
      VALUE "ProductVersion", {quoted(dotted)}
    END
  END
  BLOCK "VarFileInfo"
  BEGIN
    VALUE "Translation", 0x409, 1200
  END
END
"""


def tools_available() -> bool:
    return shutil.which(WINDRES) is not None and shutil.which(LD) is not None


def build_version_dll(
    path: Path, version: Version, product: str = "Microsoft Windows", cache_dir: Path | None = None
) -> Path:
    """Write a PE file at `path` whose version resource says `version`. Returns `path`.
    Raises RuntimeError naming the missing package when the mingw tools are not installed."""
    if not tools_available():
        raise RuntimeError(f"`{WINDRES}` and `{LD}` not found on PATH (install Debian's `{PACKAGE}` package)")
    script = version_rc(version, product, path.name)
    cached: Path | None = None
    if cache_dir is not None:
        cached = cache_dir / (hashlib.sha256(script.encode()).hexdigest()[:24] + ".dll")
        if cached.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(cached, path)
            return path
    with tempfile.TemporaryDirectory(prefix="pe-fixture-") as scratch:
        work = Path(scratch)
        (work / "v.rc").write_text(script, encoding="ascii")
        _run([WINDRES, "--preprocessor=cat", "v.rc", "-O", "coff", "-o", "v.o"], work)
        _run([LD, "--dll", "-e", "0", "-o", "out.dll", "v.o"], work)
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(work / "out.dll", path)
    if cached is not None:
        cached.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, cached)
    return path


def _run(command: list[str], cwd: Path) -> None:
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{command[0]} failed ({done.returncode}): {done.stderr.strip() or done.stdout.strip()}")


def main(argv: list[str]) -> int:
    if len(argv) not in (2, 3):
        print("usage: pe_fixture.py OUT VERSION [PRODUCT]", file=sys.stderr)
        return 2
    try:
        version = parse_version(argv[1])
        product = argv[2] if len(argv) == 3 else "Microsoft Windows"
        build_version_dll(Path(argv[0]), version, product)
    except (ValueError, RuntimeError, OSError) as exc:
        print(f"pe_fixture.py: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
