"""Runs (or, with --dry-run, only prints) a launcher's shell commands, one per line, in order."""

import shlex
import subprocess
from typing import Sequence

Command = list[str]


def quote(command: Command) -> str:
    return shlex.join(command)


def run(commands: Sequence[Command], dry_run: bool, cleanup: Sequence[Command] = ()) -> None:
    """Runs `commands`, stopping at the first that fails, then `cleanup` whatever happened (e.g. deleting the
    machine). Each command is printed first, as `+ command`; with `dry_run` nothing else happens."""
    try:
        for command in commands:
            _run_one(command, dry_run)
    finally:
        for command in cleanup:
            _run_one(command, dry_run)


def _run_one(command: Command, dry_run: bool) -> None:
    print("+ " + quote(command), flush=True)
    if not dry_run:
        subprocess.run(command, check=True)


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
