"""Imports an experiment module from the path part of a --config flag value (experiments/NAME.py[:preset])."""

import importlib.util
import os
import sys


def experiment_path(config_path: str) -> str:
    """The experiment file of a --config value (without its preset), absolute."""
    return os.path.abspath(config_path.split(":")[0])


def load_experiment(config_path: str):
    path = experiment_path(config_path)
    spec = importlib.util.spec_from_file_location(os.path.splitext(os.path.basename(path))[0], path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def parse_flags(argv: list[str]) -> list[str]:
    """absl's flag parsing, with a one-line error and a non-zero exit for a bad --config (unknown or misspelt
    key, bad value, unknown preset) instead of a traceback. Pass as `app.run(main, flags_parser=parse_flags)`."""
    from absl import flags

    try:
        remaining = flags.FLAGS(argv)
        if "config" in flags.FLAGS and flags.FLAGS["config"].present:
            flags.FLAGS["config"].value  # applies the --config.KEY overrides now, not inside main
        return remaining
    except (flags.Error, AttributeError, KeyError, TypeError, ValueError) as e:
        lines = [line.strip() for line in str(e).replace("\\n", "\n").strip("'\"").splitlines() if line.strip()]
        detail = lines[-1] if any(line.startswith("Traceback") for line in lines) else " ".join(lines)
        sys.exit(f"error: bad command-line flag: {detail.replace(chr(92), '')}")
