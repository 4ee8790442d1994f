"""scripts/setup.sh and .ci/run under CI: a failed download stops them with one `error:` line and exit status 1;
outside CI it is a warning and setup goes on. pip is a stand-in that fails to download (no network here)."""

import os
import shutil
import subprocess

from conftest import REPO_ROOT


def test_a_failed_wheel_download_fails_setup_and_ci_only_under_ci(tmp_path):
    (tmp_path / "scripts").mkdir()
    (tmp_path / ".ci").mkdir()
    shutil.copy(os.path.join(REPO_ROOT, "scripts", "setup.sh"), tmp_path / "scripts" / "setup.sh")
    shutil.copy(os.path.join(REPO_ROOT, ".ci", "run"), tmp_path / ".ci" / "run")
    bin_dir = tmp_path / ".venv" / "bin"
    bin_dir.mkdir(parents=True)
    (bin_dir / "python").write_text("#!/bin/sh\nexit 0\n")  # pytest would run here: it must not be reached
    (bin_dir / "pip").write_text('#!/bin/sh\ncase "$*" in *download*) echo "pip: no network" >&2; exit 1;; esac\n')
    for tool in ("python", "pip"):
        (bin_dir / tool).chmod(0o755)
    env = {**os.environ, "FASTJAX_CACHE": str(tmp_path / "cache")}
    setup = lambda ci, *command: subprocess.run(["bash", *command], cwd=tmp_path, env={**env, "CI": ci},
                                                capture_output=True, text=True, timeout=120)
    warned = setup("", "scripts/setup.sh")
    assert warned.returncode == 0 and "setup: could not fetch the recbole/plotnine wheels" in warned.stdout
    failed = setup("true", "scripts/setup.sh")
    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert failed.stderr.strip().splitlines()[-1].startswith("setup: error: could not fetch the recbole/plotnine")
    ci = setup("true", ".ci/run")
    assert ci.returncode == 1 and ci.stderr.strip().splitlines()[-1].startswith("ci: error: scripts/setup.sh failed")
