"""Shared fixtures: the real Fashion-MNIST data, built once per test session into a temporary TFDS dir.

The raw files come from $FASHION_MNIST_DIR or Debian's dataset-fashion-mnist package; tests never download.
Without them, every test that needs the data is skipped for one stated reason (one line in pytest's summary,
and one in its header). Under CI (`CI=true`) missing data is an error instead: the session stops at once with
one line naming what is missing, and any test that would skip fails with its reason."""

import fcntl
import glob
import os
import shutil
import tempfile

# One persistent compilation cache for the whole session, this process and the scripts it starts (they read the
# environment): the same programs (a model's step, its evaluation) are compiled by many tests.
_CACHE_DIR = None if "JAX_COMPILATION_CACHE_DIR" in os.environ else tempfile.mkdtemp(prefix="fastjax_jax_cache_")
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", _CACHE_DIR or "")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
# Data built once per session for all pytest-xdist workers (they inherit the environment): see `tfds_dir`.
_SHARED_DIR = None if "FASTJAX_TEST_SHARED_DIR" in os.environ else tempfile.mkdtemp(prefix="fastjax_test_data_")
os.environ.setdefault("FASTJAX_TEST_SHARED_DIR", _SHARED_DIR or "")
os.environ["FASTJAX_CHECK_COMPILES"] = "1"  # scripts/train.py checks its own steps compile once (compile_check)
# XLA's CPU backend at optimisation level 1 for the suite (and its subprocesses): the tests' programs are small and
# compiled once each, so compiling is most of their time, and level 1 compiles about twice as fast (the suite
# 2167 s -> 1621 s, docs/tests.md); every number a test compares is taken under the same flags. Benchmarks and
# experiments keep the default.
if "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=1").strip()

import pytest  # noqa: E402

from research.collab import ratings  # noqa: E402
from research.core import compile_check  # noqa: E402
from research.vision import fashion_mnist  # noqa: E402

CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def missing_data() -> list[str]:
    """What the suite's real data lacks here: the Fashion-MNIST files, the fortunes texts, the data wheels."""
    missing = [f"Fashion-MNIST ({', '.join(fashion_mnist.missing_local_files())} in {fashion_mnist.local_dir()})"
               ] if fashion_mnist.missing_local_files() else []
    fortunes = os.environ.get("FORTUNES_DIR", "/usr/share/games/fortunes")
    if not os.path.isdir(fortunes):
        missing.append(f"the fortunes texts ({fortunes})")
    wheels = os.path.join(ratings.cache_dir(), "wheels")
    for wheel in (ratings.RECBOLE_WHEEL, "plotnine-*.whl"):
        if not glob.glob(os.path.join(wheels, wheel)):
            missing.append(f"{wheel} in {wheels}")
    return missing


def pytest_configure(config):
    """Under CI, missing data stops pytest with one line (exit status 4, a usage error) before any test runs."""
    missing = missing_data() if CI else []
    if missing:
        pytest_unconfigure(config)
        raise pytest.UsageError(f"CI=true and the test data is missing: {'; '.join(missing)} (run scripts/setup.sh)")


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    """Units of work for pytest-xdist (`-n 2 --dist loadgroup`, what CI runs): a test file is one unit, so its
    module fixtures are set up once, unless its tests name their own groups (tests/test_experiments.py: the runs
    that a group of tests shares). Runs before xdist reads the marks."""
    for item in items:
        if item.get_closest_marker("xdist_group") is None:
            item.add_marker(pytest.mark.xdist_group(item.nodeid.split("::")[0]))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Under CI a skip is a failure with the skip's reason: a green CI run ran every test."""
    outcome = yield
    report = outcome.get_result()
    if CI and report.skipped and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        reason = report.longrepr[-1] if isinstance(report.longrepr, tuple) else report.longrepr
        report.outcome, report.longrepr = "failed", f"CI=true: a test may not skip: {reason}"


def pytest_unconfigure(config):
    for owned in (_CACHE_DIR, _SHARED_DIR):
        if owned:
            shutil.rmtree(owned, ignore_errors=True)


REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(autouse=True)
def train_steps_compile_once():
    """Every test that trains in this process (every experiment's step: classification, multi-label, transfer,
    segmentation, tabular, collaborative filtering, language models, seeds) also checks that each call of the
    trainer compiled its step exactly once over all the steps it ran, and each evaluator its step at most once:
    no recompilation from a changed shape, dtype, sharding or weak type (research/core/compile_check.py). The
    scripts a test runs check their own (FASTJAX_CHECK_COMPILES, set above) and fail with the problem. Yields the
    live record of (kind, jitted step) pairs (tests/core/test_compile_once.py checks the check)."""
    recorded = compile_check.start()
    yield recorded
    problem = compile_check.problems(compile_check.stop())
    assert problem is None, problem


def _no_data_reason() -> str | None:
    missing = fashion_mnist.missing_local_files()
    if not missing:
        return None
    return (f"Fashion-MNIST is not in {fashion_mnist.local_dir()} (missing {', '.join(missing)}): install "
            "Debian's dataset-fashion-mnist or set FASHION_MNIST_DIR; the tests that need it are skipped")


def pytest_report_header(config):
    return _no_data_reason() or f"Fashion-MNIST: {fashion_mnist.local_dir()}"


@pytest.fixture(scope="session")
def fashion_mnist_dir() -> str:
    """The directory holding the four raw Fashion-MNIST files (skips the test when there is none)."""
    reason = _no_data_reason()
    if reason:
        pytest.skip(reason)
    return fashion_mnist.local_dir()


@pytest.fixture(scope="session")
def tfds_dir(tmp_path_factory, fashion_mnist_dir):
    """A TFDS data dir for this process's tests, holding Fashion-MNIST. The dataset is built once per session in
    the directory every pytest-xdist worker shares (under a lock; about 25 s) and linked in; the datasets derived
    from it (mosaics, canvases) are built in each process's own dir."""
    data_dir = str(tmp_path_factory.mktemp("tensorflow_datasets"))
    shared = os.path.join(os.environ["FASTJAX_TEST_SHARED_DIR"], "tensorflow_datasets")
    os.makedirs(shared, exist_ok=True)
    with open(os.path.join(shared, ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # the other worker waits for the build, then reuses it
        fashion_mnist.FashionMnistIdx(data_dir=shared, file_format="array_record").download_and_prepare()
    os.symlink(os.path.join(shared, "fashion_mnist_idx"), os.path.join(data_dir, "fashion_mnist_idx"))
    return data_dir


@pytest.fixture(scope="session")
def fashion_test_split(tfds_dir):
    """The real 10k Fashion-MNIST test images (uint8 Nx28x28x1) and labels."""
    return fashion_mnist.load("test", tfds_dir)
