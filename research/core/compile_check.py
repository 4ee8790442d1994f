"""The compile-once check: while on, every train step `trainer.train` jits and every evaluation step
`research/core/evaluation.py` jits is recorded, and `problems()` names any that compiled more than once (a changed
shape, dtype, sharding or weak type) or a training that compiled no step at all.

tests/conftest.py turns it on around every test; `FASTJAX_CHECK_COMPILES=1` turns it on in scripts/train.py, which
then fails with the problem in one line (the suite sets it, so training in subprocesses is checked too)."""

ENV = "FASTJAX_CHECK_COMPILES"

_recorded: list | None = None  # (kind, jitted function) while on


def start() -> list:
    """Turns recording on; returns the live record of (kind, jitted) pairs, kind "train" or "eval"."""
    global _recorded
    _recorded = []
    return _recorded


def stop() -> list:
    """Turns recording off; returns what was recorded."""
    global _recorded
    recorded, _recorded = _recorded or [], None
    return recorded


def record(kind: str, jitted) -> None:
    if _recorded is not None:
        _recorded.append((kind, jitted))


def problems(recorded: list) -> str | None:
    """One line naming the steps compiled more than once, or a training that compiled none; None when fine."""
    counts = [(kind, jitted._cache_size()) for kind, jitted in recorded]
    again = [f"{kind} step compiled {n} times" for kind, n in counts if n > 1]
    if again:
        return f"compile-once check: {'; '.join(again)} (once expected); all counts: {counts}"
    trained = [n for kind, n in counts if kind == "train"]
    if trained and not any(trained):
        return f"compile-once check: trainer.train ran {len(trained)} time(s) and compiled no train step"
    return None
