"""Progress lines and report files shared by the benchmark scripts."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path


def log(msg: str) -> None:
    """Progress line on stderr, stamped with the UTC time."""
    print(f"[{time.strftime('%H:%M:%S', time.gmtime())} UTC] {msg}", file=sys.stderr, flush=True)


def write_atomically(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` in one rename, so an interrupted run never leaves half a report."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def publish(out: Path, report: str, payload: dict, failures: list[str], tag: str) -> int:
    """Write the markdown report and its .json twin, print the report and any failures; returns the exit code."""
    write_atomically(out, report)
    write_atomically(out.with_suffix(".json"), json.dumps(payload, indent=1) + "\n")
    print(report)
    log(f"[{tag}] wrote {out} and {out.with_suffix('.json')}")
    for f in failures:
        print(f"FAILED: {f}", file=sys.stderr)
    return 1 if failures else 0
