"""Near-duplicate texts across train / valid / test (research/text/near_duplicates.py, research/text/fortunes.py):
found on hand-made texts, and absent from the default fortune splits."""

import numpy as np

from research.text import fortunes, near_duplicates

QUOTE = "Those who do not understand Unix are condemned to reinvent it, poorly.\n"


def test_near_duplicates_are_found_and_collapsed():
    rewrapped = "those who do not understand UNIX are condemned\nto reinvent it -- poorly\n"
    attributed = QUOTE.rstrip("\n") + "\n\t\t-- Henry Spencer\n"  # same first 60 normalised characters
    other = "Those who can, do; those who cannot, write about it.\n"
    assert near_duplicates.normalise(rewrapped) == near_duplicates.normalise(QUOTE)
    assert near_duplicates.collapse([QUOTE, other, rewrapped, attributed, QUOTE]) == [QUOTE, other]
    counts = near_duplicates.cross_split_counts(train=[QUOTE, other], valid=[attributed, "New.\n"],
                                                test=[QUOTE, rewrapped, "Fresh.\n"])
    assert counts == {"valid_in_train_exact": 0, "valid_in_train_near": 1, "test_in_train_exact": 1,
                      "test_in_train_near": 2, "test_in_valid_exact": 0, "test_in_valid_near": 2}


def write_topics(directory, topics: dict[str, list[str]]) -> None:
    for name, texts in topics.items():
        (directory / name).write_text("%\n".join(texts))


def test_fortune_splits_share_no_near_duplicate(tmp_path):
    """Topic files where the same quotes appear re-wrapped in other files: without de-duplication they land in
    two splits, with it (the default) they do not; the topic classifier drops a quote filed under two topics."""
    rng = np.random.default_rng(0)
    words = ["alpha", "beta", "gamma", "delta", "omega", "kappa", "sigma", "theta"]
    unique = [" ".join(rng.choice(words, 12)) + f" number {i}.\n" for i in range(120)]
    quotes = [f"Quote {i}: " + " ".join(rng.choice(words, 10)) + ".\n" for i in range(30)]
    copies = [q.upper().replace(" ", "\n", 2) for q in quotes]  # re-wrapped, shouted: near, not exact
    write_topics(tmp_path, {"one": unique[:60] + quotes, "two": unique[60:] + copies})
    plain = fortunes.lm_split(str(tmp_path), seed=0, test_fraction=0.3, valid_fraction=0.2, dedup=False)
    counts = near_duplicates.cross_split_counts(*plain)
    assert counts["test_in_train_near"] > 0 and counts["test_in_train_exact"] == 0
    deduped = fortunes.lm_split(str(tmp_path), seed=0, test_fraction=0.3, valid_fraction=0.2)
    assert set(near_duplicates.cross_split_counts(*deduped).values()) == {0}
    assert sum(map(len, deduped)) == 150  # one of each pair of copies kept
    topics, names = fortunes.topic_split(str(tmp_path), num_topics=2, seed=0)
    assert names == ["one", "two"]
    kept = [t for part in topics for t in part.texts]
    assert len(kept) == 120 and not any(t.startswith(("Quote", "QUOTE")) for t in kept)  # ambiguous labels


def test_default_fortune_splits_have_no_cross_split_duplicates():
    split = fortunes.lm_split(seed=0)
    assert set(near_duplicates.cross_split_counts(*split).values()) == {0}
    topics, _ = fortunes.topic_split(seed=0)
    counts = near_duplicates.cross_split_counts(topics.train.texts, topics.valid.texts, topics.test.texts)
    assert set(counts.values()) == {0}
