"""Runs (or, with --dry-run, only prints) a launcher's shell commands, one per line, in order."""

import shlex
import subprocess
from typing import Sequence

Command = list[str]


def quote(command: Command) -> str:
    return shlex.join(command)


# The longest any one command may run (the training step on the machine included); a hung ssh or copy ends there.
TIMEOUT_S = 72 * 3600


def run(commands: Sequence[Command], dry_run: bool, cleanup: Sequence[Command] = ()) -> None:
    """Runs `commands`, stopping at the first that fails, then every `cleanup` command whatever happened (fetching
    the workdir, then deleting the machine: a failed training still brings back its checkpoints before the machine
    goes). A cleanup command that fails is reported and the next one still runs; the first failure is raised at the
    end. Each command is printed first, as `+ command`; with `dry_run` nothing else happens."""
    failure = None
    try:
        for command in commands:
            _run_one(command, dry_run)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as e:
        failure = e
    for command in cleanup:
        try:
            _run_one(command, dry_run)
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as e:
            print(f"cleanup: {quote(command)} failed: {e}", flush=True)
            failure = failure or e
    if failure is not None:
        raise SystemExit(f"error: {failure}")


def _run_one(command: Command, dry_run: bool) -> None:
    print("+ " + quote(command), flush=True)
    if not dry_run:
        subprocess.run(command, check=True, timeout=TIMEOUT_S)


def train_command(config: str, workdir: str, overrides: Sequence[str], distributed: bool = False) -> str:
    """The remote shell command that trains `config` into `workdir` from the project's directory."""
    flags = ["--distributed"] if distributed else []
    return quote([".venv/bin/python", "scripts/train.py", "--config", config, "--workdir", workdir, *flags,
                  *overrides])


def check_overrides(overrides: Sequence[str]) -> list[str]:
    """Only `--config.KEY=VALUE` arguments pass through to scripts/train.py."""
    for arg in overrides:
        if not arg.startswith("--config."):
            raise SystemExit(f"error: unknown argument {arg!r} (only --config.KEY=VALUE passes to train.py)")
    return list(overrides)
