#!/usr/bin/env python3
"""Sets up (once) the virtual environment the Python producer runs in.

    python3 tests/python/setup_venv.py VENV_DIR

Creates ``VENV_DIR`` with the pinned packages of ``requirements.txt`` beside
this file, and prints the path of its Python. A stamp file holds the hash of
the requirements: the venv is rebuilt only when they change. An exclusive
lock on ``VENV_DIR.lock`` makes concurrent callers (tests of several
processes) wait for one another instead of installing into the same
folder at once.

Exit codes: 0 ready, 3 the packages could not be installed (the message
says how to provide them), 2 usage.
"""

from __future__ import annotations

import fcntl
import hashlib
import pathlib
import subprocess
import sys
import venv

HERE = pathlib.Path(__file__).resolve().parent
REQUIREMENTS = HERE / "requirements.txt"

HOW_TO_PROVIDE = (
    "provide them in one of three ways: let pip reach PyPI, or a mirror named by "
    "PIP_INDEX_URL; or put their wheels in a folder and set PIP_NO_INDEX=1 "
    "PIP_FIND_LINKS=/that/folder; or set CELERIAC_PYTHON to a Python 3.11+ that "
    "already has them installed (then no venv is made)"
)


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    target = pathlib.Path(argv[1]).resolve()
    target.parent.mkdir(parents=True, exist_ok=True)
    want = hashlib.sha256(REQUIREMENTS.read_bytes()).hexdigest()
    stamp = target / ".requirements.sha256"
    python = target / "bin" / "python"
    with open(target.with_name(target.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if python.exists() and stamp.exists() and stamp.read_text().strip() == want:
            print(python)
            return 0
        print(f"setting up {target} with {REQUIREMENTS}", file=sys.stderr)
        venv.EnvBuilder(clear=True, with_pip=True).create(target)
        pip = subprocess.run(
            [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "-r", str(REQUIREMENTS)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        if pip.returncode != 0:
            pinned = " ".join(l.strip() for l in REQUIREMENTS.read_text().splitlines() if l.strip() and not l.startswith("#"))
            print(
                f"cannot install {pinned} into {target} (pip exited {pip.returncode}):\n"
                f"{pip.stdout[-4000:]}\n{HOW_TO_PROVIDE}",
                file=sys.stderr,
            )
            return 3
        stamp.write_text(want + "\n")
    print(python)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
