"""Create the peers' virtual environment (libpecos, napkinXC, omikuji), kept apart from the project venv."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

EXPERIMENTS = Path(__file__).resolve().parent.parent
PEERS_VENV = EXPERIMENTS / ".peers-venv"
# libpecos pins old numpy/scipy through its metadata in ways that clash with recent wheels, so it goes in
# with --no-deps and its real runtime needs are listed here (numpy<2 and scipy<1.14 for its C extension).
NO_DEPS = ["libpecos"]
DEPS = ["numpy<2", "scipy<1.14", "scikit-learn", "omikuji", "napkinxc", "psutil"]
CHECK = "import pecos.xmc.xlinear, omikuji, napkinxc.models, numpy, scipy, sklearn, psutil"


def peers_python(venv: Path = PEERS_VENV) -> Path:
    """Path of the python interpreter inside the peers' venv."""
    return venv / "bin" / "python"


def _works(venv: Path) -> bool:
    py = peers_python(venv)
    if not py.exists():
        return False
    return subprocess.run([str(py), "-c", CHECK], capture_output=True).returncode == 0


def ensure_peers_venv(venv: Path = PEERS_VENV, quiet: bool = False) -> Path:
    """Create (if missing or broken) the peers' venv and return its python interpreter."""
    if _works(venv):
        return peers_python(venv)
    out = subprocess.DEVNULL if quiet else None
    if not peers_python(venv).exists():
        # The base interpreter, not this venv's one: peers must not see the project's site-packages.
        base = getattr(sys, "_base_executable", None) or sys.executable
        subprocess.run([base, "-m", "venv", str(venv)], check=True, stdout=out)
    pip = [str(peers_python(venv)), "-m", "pip", "install", "--disable-pip-version-check"]
    env = dict(os.environ, PIP_NO_INPUT="1")
    subprocess.run(pip + ["--no-deps", *NO_DEPS], check=True, stdout=out, env=env)
    subprocess.run(pip + DEPS, check=True, stdout=out, env=env)
    res = subprocess.run([str(peers_python(venv)), "-c", CHECK], capture_output=True, text=True)
    if res.returncode != 0:
        raise RuntimeError(f"peers venv at {venv} is broken after install: {res.stderr.strip()}")
    return peers_python(venv)


def main(argv: list[str] | None = None) -> int:
    """CLI: `python -m experiments.peers.venv` creates the peers' venv and prints its python."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--venv", type=Path, default=PEERS_VENV, help="venv folder (default experiments/.peers-venv)")
    args = ap.parse_args(argv)
    print(ensure_peers_venv(args.venv))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
