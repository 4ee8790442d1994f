"""Runs an experiment on a GPU machine you can ssh into (a Google Cloud GPU VM, an AWS or Paperspace GPU
machine, ...): copy the project with rsync, set it up with CUDA jax, train, fetch the workdir into --fetch-into (default runs/).

  .venv/bin/python scripts/cloud/gpu_vm.py --host ubuntu@203.0.113.7 [--ssh-key ~/.ssh/aws.pem] \\
      --config experiments/fashion_mnist.py:long --workdir runs/fashion_mnist_long [--config.num_epochs=20] \\
      [--dry-run]

--dry-run prints every command (rsync, ssh) without running any. The machine needs python3 (with venv) and an
NVIDIA driver; creating and deleting it is the provider's (e.g. `gcloud compute instances create ...
--accelerator=type=nvidia-l4,count=1`). Training runs in the foreground of the ssh session: if the connection
drops, rerun the command, and the run resumes from its last checkpoint.
"""

import argparse
import os
import shlex

from scripts.cloud import commands

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
JAX_EXTRA = "jax[cuda12]==0.10.2"


def parse(argv=None) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", required=True, help="user@address of the GPU machine")
    parser.add_argument("--ssh-key", default=None, help="private key file (ssh -i)")
    parser.add_argument("--port", type=int, default=22)
    parser.add_argument("--remote-dir", default="fastjax", help="project directory on the machine")
    parser.add_argument("--config", required=True, help="experiments/NAME.py[:preset]")
    parser.add_argument("--workdir", required=True, help="workdir on the machine, relative to the project")
    parser.add_argument("--fetch-into", default="runs", help="local directory that receives the workdir's folder")
    parser.add_argument("--dry-run", action="store_true", help="print every command, run none")
    args, overrides = parser.parse_known_args(argv)
    return args, commands.check_overrides(overrides)


def plan(args: argparse.Namespace, overrides: list[str]) -> tuple[list[commands.Command], list[commands.Command]]:
    """(commands in order, the fetch of the workdir, run whatever happened)."""
    ssh = ["ssh", "-p", str(args.port), *(["-i", args.ssh_key] if args.ssh_key else [])]
    remote = args.remote_dir.rstrip("/")
    setup = f"cd {shlex.quote(remote)} && bash scripts/setup.sh && .venv/bin/pip install -q \"{JAX_EXTRA}\""
    train = f"cd {shlex.quote(remote)} && " + commands.train_command(args.config, args.workdir, overrides)
    return [
        ["rsync", "-az", "--exclude=/.venv", "--exclude=/.git", "--exclude=/runs", "-e", commands.quote(ssh),
         REPO_ROOT + "/", f"{args.host}:{remote}/"],
        [*ssh, args.host, setup],
        [*ssh, args.host, train],
    ], [
        ["mkdir", "-p", args.fetch_into],
        ["rsync", "-az", "-e", commands.quote(ssh), f"{args.host}:{remote}/{args.workdir.rstrip('/')}",
         args.fetch_into + "/"],
    ]


def main(argv=None) -> None:
    args, overrides = parse(argv)
    steps, fetch = plan(args, overrides)
    commands.run(steps, args.dry_run, fetch)


if __name__ == "__main__":
    import sys
    sys.path.insert(0, REPO_ROOT)
    main()
