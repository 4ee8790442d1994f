"""scripts/device_check.py, the run prepared for a lent GPU, in its --dry_run form on this CPU: the plan is
written as the JSON the real run writes, fits the 8-minute budget, and every command in it names a script,
flags and a config preset that exist."""

import json
import os
import shlex
import subprocess
import sys

from conftest import REPO_ROOT

TIMEOUT = 300


def run(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *argv], cwd=REPO_ROOT, capture_output=True, text=True, timeout=TIMEOUT)


def test_dry_run_writes_a_plan_that_fits_the_budget_and_names_what_exists(tmp_path):
    out = tmp_path / "device_check.json"
    done = run("scripts/device_check.py", "--dry_run", f"--out={out}", f"--workdir={tmp_path / 'work'}")
    assert done.returncode == 0, done.stderr[-2000:]
    plan = json.loads(out.read_text())
    assert plan["dry_run"] is True
    assert [s["name"] for s in plan["stages"]] == ["gpu_matches_cpu", "bench", "lesson1_long"]
    assert all(s["status"] == "planned" for s in plan["stages"])
    assert sum(s["timeout_s"] for s in plan["stages"]) <= plan["budget_s"] == 480
    for stage in plan["stages"]:
        argv = shlex.split(stage["command"])
        assert os.path.isfile(os.path.join(REPO_ROOT, argv[1])), stage
        flags = [a.split("=")[0].lstrip("-") for a in argv[2:]]
        helped = run(argv[1], "--helpfull")
        for flag in flags:
            if not flag.startswith("config."):
                assert f"--{flag}" in helped.stdout, (stage["name"], flag)
    train = shlex.split(plan["stages"][2]["command"])
    config_file, preset = next(a.split("=", 1)[1] for a in train if a.startswith("--config=")).split(":")
    assert config_file == "experiments/fashion_mnist.py"
    from experiments import fashion_mnist
    config = fashion_mnist.get_config(preset)
    assert "mixed_precision" in config and config.num_epochs > 3


def test_a_bad_stage_name_is_refused():
    done = run("scripts/device_check.py", "--stage=nonexistent")
    assert done.returncode != 0 and "stage" in done.stderr
