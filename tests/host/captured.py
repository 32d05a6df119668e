"""The files captured from real guest kernels (data/<arch>-<kernel>/, made by data/capture.sh)
that the host tests parse."""
from __future__ import annotations

import re
from pathlib import Path

DATA = Path(__file__).parent / "data"
# Directories named <arch>-<kernel>; other parts of kpctl keep captures of their own here.
CAPTURES = sorted(p for p in DATA.iterdir() if re.fullmatch(r"(x86_64|arm64)-\d+\.\d+", p.name))
