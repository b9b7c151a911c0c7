"""examples/quickstart.py in local mode, as ``make demo`` runs it, end to end.

It starts the emulator and a private Covalent server and runs its workflow; everything it writes
must stay under its ``--home``. The test runs it with HOME pointing at a directory that holds only
a covalent.conf of the "user's": afterwards that file is byte for byte what it was (``import
covalent`` rewrites the config file it reads, filling in every default, so reading it would show)
and nothing else appeared under HOME.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.covalent, pytest.mark.timeout(600)]

ROOT = Path(__file__).resolve().parent.parent
USER_CONF = '[sdk]\nlog_level = "warning"\n'


def snapshot(root: Path) -> dict[str, str]:
    """Every file and directory under ``root``, with a digest of each file's bytes."""
    seen = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        seen[rel] = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "dir"
    return seen


def test_local_mode_keeps_out_of_the_users_covalent_files(tmp_path: Path) -> None:
    home = tmp_path / "home"
    (home / ".config" / "covalent").mkdir(parents=True)
    (home / ".config" / "covalent" / "covalent.conf").write_text(USER_CONF)
    before = snapshot(home)
    # A user's shell: no COVALENT_* variables (the test session sets its own), no XDG overrides.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COVALENT_", "XDG_"))}
    env["HOME"] = str(home)
    local = tmp_path / "byoc-local"
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "quickstart.py"), "--home", str(local)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=540, stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "covalent: started a private server at 127.0.0.1:" in done.stdout
    assert "workflow COMPLETED" in done.stdout
    assert "square_of_sum: 49" in done.stdout
    assert "[matmul_checksum] no GPU:" in done.stdout  # the GPU electron says where it ran
    assert snapshot(home) == before, "local mode wrote to (or rewrote a file in) the user's HOME"
    # Where the client's configuration went instead.
    assert (local / "client" / "config" / "covalent.conf").is_file()
    assert (local / "covalent" / "config" / "covalent.conf").is_file()  # the private server's
