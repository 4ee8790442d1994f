"""Bad input to scripts/train.py gets a one-line `error: ...` naming the problem and exit 1, and leaves the
workdir's existing checkpoints exactly as they were (every file hashed before and after)."""

import os
import re
import shutil
import subprocess

import pytest

from conftest import REPO_ROOT
from research.core.errors import InputError
from research.text.documents import load_text
from test_faults import TIMEOUT, cli_env, file_hashes, shared_run, train_command


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tfds_dir):
    """(compilation cache dir, a workdir holding the checkpoints of a finished TINY run)."""
    cache_dir, reference = shared_run(tmp_path_factory, tfds_dir)
    workdir = tmp_path_factory.mktemp("bad_input") / "run"
    shutil.copytree(reference, workdir)
    return cache_dir, workdir


def fails_cleanly(trained, tfds_dir, *overrides, **env) -> str:
    """Runs the TINY command on the trained workdir; checks exit 1, one `error:` line and no traceback, and
    that no checkpoint file changed. Returns the error line."""
    cache_dir, workdir = trained
    before = file_hashes(workdir / "checkpoints")
    run = subprocess.run(train_command(workdir, tfds_dir, *overrides), capture_output=True, text=True,
                         timeout=TIMEOUT, env=cli_env(cache_dir, **env))
    assert run.returncode == 1, run.stderr[-2000:]
    assert "Traceback" not in run.stderr, run.stderr[-2000:]
    errors = [line for line in run.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and run.stderr.strip().endswith(errors[0]), run.stderr[-2000:]
    assert file_hashes(workdir / "checkpoints") == before
    return errors[0]


def test_missing_data_directory(trained, tmp_path):
    missing = tmp_path / "no_such_dir"
    line = fails_cleanly(trained, missing)
    assert line == f"error: config.data_dir={missing} does not exist (the TFDS data directory)"
    assert not missing.exists()  # not created, nothing downloaded


def test_unknown_config_key(trained, tfds_dir):
    line = fails_cleanly(trained, tfds_dir, "--config.checkpoint.kep=5")
    assert line.startswith("error: bad command-line flag") and "kep" in line
    assert "keep" in line  # the suggestion


def test_checkpoint_from_a_different_model(trained, tfds_dir):
    line = fails_cleanly(trained, tfds_dir, "--config.model.stage_widths=(8,16,48)")
    checkpoints = trained[1] / "checkpoints"
    found = re.fullmatch(rf"error: checkpoint {checkpoints}/\d+ is from a different model: (\S+) has shape "
                         r"\((.*)\) in the checkpoint but \((.*)\) in this model", line)
    assert found, line
    name, saved, wanted = found.groups()
    assert name.startswith("params/") and "32" in saved and "48" in wanted


def test_batch_that_does_not_divide_across_devices(trained, tfds_dir):
    xla_flags = f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count=8".strip()
    line = fails_cleanly(trained, tfds_dir, "--config.batch_size=60", XLA_FLAGS=xla_flags)
    assert line == "error: batch_size=60 does not divide across 8 devices"


def test_empty_text_corpus(tmp_path):
    """The character corpus (research/data/text.py) has no command-line entry point yet; its loader raises the
    InputError that scripts print as one line."""
    (tmp_path / "a.txt").write_text("")
    (tmp_path / "b.txt").write_text("")
    with pytest.raises(InputError) as empty:
        load_text([str(tmp_path / "a.txt"), str(tmp_path / "b.txt")])
    assert str(empty.value) == f"the text corpus is empty: no characters in {tmp_path}/a.txt, {tmp_path}/b.txt"
    (tmp_path / "empty_dir").mkdir()
    with pytest.raises(InputError, match=r"^the text corpus is empty: no files in .*empty_dir$"):
        load_text(str(tmp_path / "empty_dir"))
    with pytest.raises(InputError, match=r"^text file or directory not found: .*missing.txt$"):
        load_text([str(tmp_path / "missing.txt")])
    readme = os.path.join(REPO_ROOT, "README.md")  # an empty file beside real text is fine
    corpus = load_text([str(tmp_path / "a.txt"), readme])
    with open(readme, encoding="utf-8") as f:
        assert corpus.decode(corpus.ids_N) == f.read()
