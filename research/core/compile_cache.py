"""JAX's persistent compilation cache, on by default in every script: a rerun, a resumed run, the fit after the
range test and the prediction after training load compiled programs from disk instead of compiling them again.

On the multi-label experiment's cut-down test config, a second call in one process took 26 s without the
cache and 7 s with it (the same programs, recompiled because each call builds new closures); a fresh process
with a warm cache took 8 s. Compiled programs are keyed by their HLO, options, JAX version and device, so a
stale entry is never used.

Where: $JAX_COMPILATION_CACHE_DIR when set, else $FASTJAX_CACHE/jax_compilation_cache (default
~/.cache/fastjax/jax_compilation_cache). JAX_ENABLE_COMPILATION_CACHE=false turns it off.
"""

import os

import jax

# Programs that compile faster than this are not written (JAX's default is 1 s; most of an experiment's
# evaluation and initialisation programs compile in 0.1-1 s on a CPU, and together they cost seconds).
MIN_COMPILE_SECONDS = 0.1


def default_directory() -> str:
    root = os.environ.get("FASTJAX_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "fastjax")
    return os.path.join(root, "jax_compilation_cache")


def enable(directory: str | None = None) -> str | None:
    """Turns the cache on in `directory` (default: as the module says) before anything compiles; returns the
    directory, or None when JAX_ENABLE_COMPILATION_CACHE=false."""
    if not jax.config.jax_enable_compilation_cache:
        return None
    directory = directory or jax.config.jax_compilation_cache_dir or default_directory()
    jax.config.update("jax_compilation_cache_dir", directory)
    if "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS" not in os.environ:
        jax.config.update("jax_persistent_cache_min_compile_time_secs", MIN_COMPILE_SECONDS)
    return directory
