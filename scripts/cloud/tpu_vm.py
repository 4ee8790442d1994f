"""Runs an experiment on a Google Cloud TPU VM: create it, copy the project to every worker, set up and train
on all workers at once (jax's multi-host runtime: --distributed; the TPU VM tells each worker its peers),
fetch the workdir from worker 0 into --fetch-into (default runs/), delete the VM (also when a step fails; --keep keeps it).

  .venv/bin/python scripts/cloud/tpu_vm.py --name fastjax-1 --zone us-central2-b --accelerator-type v4-8 \\
      --config experiments/fashion_mnist.py:long --workdir runs/fashion_mnist_long [--config.num_epochs=20] \\
      [--dry-run]

--dry-run prints every command (gcloud, tar) without running any. Needs the gcloud CLI, logged in, with a
project that has TPU quota. A slice of more than one worker (e.g. v4-32) needs the workdir on storage that
every worker reads and writes (orbax writes each worker's shards; a gs:// bucket, mounted e.g. with gcsfuse).
"""

import argparse
import os

from scripts.cloud import commands

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
JAX_EXTRA = "jax[tpu]==0.10.2"


def parse(argv=None) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--name", required=True, help="TPU VM name")
    parser.add_argument("--zone", required=True)
    parser.add_argument("--accelerator-type", default="v4-8")
    parser.add_argument("--version", default="tpu-ubuntu2204-base", help="TPU VM software version")
    parser.add_argument("--project", default=None, help="gcloud project (default: gcloud's configured one)")
    parser.add_argument("--spot", action="store_true", help="a spot (preemptible) VM")
    parser.add_argument("--config", required=True, help="experiments/NAME.py[:preset]")
    parser.add_argument("--workdir", required=True, help="workdir on the VM, relative to the project")
    parser.add_argument("--fetch-into", default="runs", help="local directory that receives the workdir's folder")
    parser.add_argument("--keep", action="store_true", help="do not delete the VM at the end")
    parser.add_argument("--dry-run", action="store_true", help="print every command, run none")
    args, overrides = parser.parse_known_args(argv)
    return args, commands.check_overrides(overrides)


def plan(args: argparse.Namespace, overrides: list[str]) -> tuple[list[commands.Command], list[commands.Command]]:
    """(commands in order, cleanup commands run at the end whatever happened: fetch the workdir, delete the VM)."""
    archive = f"/tmp/fastjax-{args.name}.tar.gz"
    project = [f"--project={args.project}"] if args.project else []
    tpu_vm = ["gcloud", "compute", "tpus", "tpu-vm"]
    where = [f"--zone={args.zone}", *project]
    setup = ("mkdir -p fastjax && tar xzf fastjax.tar.gz -C fastjax && cd fastjax && bash scripts/setup.sh && "
             f".venv/bin/pip install -q \"{JAX_EXTRA}\"")
    train = "cd fastjax && " + commands.train_command(args.config, args.workdir, overrides, distributed=True)
    steps = [
        ["tar", "czf", archive, "--exclude=./.venv", "--exclude=./.git", "--exclude=./runs", "-C", REPO_ROOT, "."],
        [*tpu_vm, "create", args.name, *where, f"--accelerator-type={args.accelerator_type}",
         f"--version={args.version}", *(["--spot"] if args.spot else [])],
        [*tpu_vm, "scp", archive, f"{args.name}:fastjax.tar.gz", *where, "--worker=all"],
        [*tpu_vm, "ssh", args.name, *where, "--worker=all", f"--command={setup}"],
        [*tpu_vm, "ssh", args.name, *where, "--worker=all", f"--command={train}"],
    ]
    fetch = [["mkdir", "-p", args.fetch_into],
             [*tpu_vm, "scp", "--recurse", f"{args.name}:fastjax/{args.workdir.rstrip('/')}", args.fetch_into,
              *where, "--worker=0"]]
    return steps, fetch + ([] if args.keep else [[*tpu_vm, "delete", args.name, *where, "--quiet"]])


def main(argv=None) -> None:
    args, overrides = parse(argv)
    steps, cleanup = plan(args, overrides)
    commands.run(steps, args.dry_run, cleanup)


if __name__ == "__main__":
    import sys
    sys.path.insert(0, REPO_ROOT)
    main()
