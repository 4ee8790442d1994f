"""Imports an experiment module from the path part of a --config flag value (experiments/NAME.py[:preset])."""

import importlib.util
import os


def load_experiment(config_path: str):
    path = os.path.abspath(config_path.split(":")[0])
    spec = importlib.util.spec_from_file_location(os.path.splitext(os.path.basename(path))[0], path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
