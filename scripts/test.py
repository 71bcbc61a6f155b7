"""Set up and run the whole test suite: `python3 scripts/test.py [pytest arguments]`."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bootstrap import ROOT, ensure_venv

ensure_venv("dev")

import pytest  # noqa: E402

raise SystemExit(pytest.main(["-p", "no:cacheprovider", "--rootdir", str(ROOT), str(ROOT / "tests"), *sys.argv[1:]]))
