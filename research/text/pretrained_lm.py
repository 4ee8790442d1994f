"""Where ULMFiT's stage 2 starts: a pretrained language model (fastai's WT103 weights, one of our named artifacts,
or a language-model run's workdir) moved onto the target texts' vocabulary (research/text/vocab_transfer.py),
ready to be fine-tuned.

A named artifact is stage 1's product (scripts/pretrain_lm.py): a finished language-model run's best checkpoint
stored once under ~/.cache/fastjax/pretrained/NAME/ (or $FASTJAX_CACHE/pretrained/NAME/) as params.npz (the
encoder and output bias), vocab.json, model.json (the AWDLSTM's sizes) and manifest.json (the files' SHA-256, the
run's metrics and config). Later runs name it (`--config.pretrained=NAME`); every load checks the digests.
"""

import datetime
import json
import os
import shutil
import tempfile

import numpy as np

from research.core import torch_files
from research.core.errors import InputError
from research.text import classifier, tokens, vocab_transfer, wt103

FILES = ("params.npz", "vocab.json", "model.json")


def artifacts_dir() -> str:
    return os.path.join(torch_files.cache_root(), "pretrained")


def available() -> list[str]:
    root = artifacts_dir()
    return sorted(n for n in os.listdir(root) if os.path.isfile(os.path.join(root, n, "manifest.json"))) \
        if os.path.isdir(root) else []


def flatten(tree: dict, prefix: str = "") -> dict[str, np.ndarray]:
    """{"encoder/rnn_0/bias": array, ...} of a nested dict of arrays."""
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}/"))
        else:
            flat[prefix + key] = np.asarray(value)
    return flat


def unflatten(flat: dict[str, np.ndarray]) -> dict:
    tree = {}
    for path, value in flat.items():
        *parents, leaf = path.split("/")
        node = tree
        for parent in parents:
            node = node.setdefault(parent, {})
        node[leaf] = value
    return tree


def publish(workdir: str, name: str, directory: str | None = None) -> dict:
    """Stores the best checkpoint of the language-model run in `workdir` as the artifact `name` and returns its
    manifest. Written into a temporary folder and renamed into place, so a crash never leaves half an artifact
    and an existing artifact of that name is replaced only by a complete one."""
    if not name or os.sep in name or name.startswith("."):
        raise InputError(f"pretrained artifact name {name!r} must be a plain folder name")
    lm = classifier.load_language_model(workdir)
    root = directory or artifacts_dir()
    os.makedirs(root, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=f".{name}.", dir=root)
    np.savez(os.path.join(staging, "params.npz"),
             **flatten({"encoder": lm.encoder_params, "output_bias": lm.output_bias}))
    lm.vocab.save(os.path.join(staging, "vocab.json"))
    with open(os.path.join(staging, "model.json"), "w") as f:
        json.dump(lm.model_config, f, indent=1)
    results_file = os.path.join(workdir, "results.json")
    results = json.load(open(results_file)) if os.path.exists(results_file) else {}
    manifest = {"name": name, "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                "vocab_size": len(lm.vocab), "model": lm.model_config,
                "sha256": {f: torch_files.sha256(os.path.join(staging, f)) for f in FILES},
                "metrics": results.get("metrics", {}), "config": results.get("config", {})}
    with open(os.path.join(staging, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)
    target = os.path.join(root, name)
    if os.path.exists(target):
        old = target + ".old"
        shutil.rmtree(old, ignore_errors=True)
        os.replace(target, old)
        os.replace(staging, target)
        shutil.rmtree(old)
    else:
        os.replace(staging, target)
    return manifest


def load_artifact(name: str, directory: str | None = None) -> wt103.Pretrained:
    """The artifact `name`, its files checked against the manifest's SHA-256."""
    folder = os.path.join(directory or artifacts_dir(), name)
    manifest_file = os.path.join(folder, "manifest.json")
    if not os.path.isfile(manifest_file):
        raise InputError(f"no pretrained artifact {name!r} in {directory or artifacts_dir()} "
                         f"(have: {', '.join(available()) or 'none'}; scripts/pretrain_lm.py makes one)")
    with open(manifest_file) as f:
        manifest = json.load(f)
    for file in FILES:
        path = os.path.join(folder, file)
        if not os.path.isfile(path) or torch_files.sha256(path) != manifest["sha256"][file]:
            raise InputError(f"{path} is missing or does not match its SHA-256 in {manifest_file}: "
                             "publish the artifact again")
    with np.load(os.path.join(folder, "params.npz")) as stored:
        params = unflatten({k: stored[k] for k in stored.files})
    with open(os.path.join(folder, "model.json")) as f:
        model_config = json.load(f)
    return wt103.Pretrained(tokens.Vocab.load(os.path.join(folder, "vocab.json")), model_config, params)


def load(source: str) -> wt103.Pretrained:
    """A pretrained AWD-LSTM language model: "WT103_FWD" / "WT103_BWD" (fastai's, downloaded once), the name of
    an artifact in the cache (scripts/pretrain_lm.py), or the workdir of a finished
    experiments/fortunes_lm.py-style run (its vocab.json, run.json and best checkpoint)."""
    if source in wt103.ARCHIVES:
        return wt103.load_named(source)
    if source in available():
        return load_artifact(source)
    if os.path.isdir(source):
        lm = classifier.load_language_model(source)
        return wt103.Pretrained(lm.vocab, lm.model_config, {"encoder": lm.encoder_params,
                                                            "output_bias": lm.output_bias})
    raise InputError(f"pretrained language model {source!r} is none of {sorted(wt103.ARCHIVES)}, no artifact in "
                     f"{artifacts_dir()} (have: {', '.join(available()) or 'none'}) and no run's workdir")


def for_vocab(pretrained: wt103.Pretrained, vocab: tokens.Vocab) -> vocab_transfer.Transfer:
    """The pretrained params re-indexed for `vocab` (known tokens keep their rows, new ones get the means)."""
    return vocab_transfer.transfer_vocab(pretrained.params, pretrained.vocab.itos, vocab.itos)
