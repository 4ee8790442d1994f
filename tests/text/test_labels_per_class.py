"""ULMFiT's few-label setting (`data.labels_per_class`): N labelled training documents per class, the rest of the
training texts returned as unlabelled text, validation and test untouched."""

import numpy as np

from experiments import fortunes_classifier
from research.text import labelled_text, tokens, ulmfit
from research.text.fortunes import LabelledTexts


def test_n_documents_per_class_and_the_rest_unlabelled():
    texts = [f"text {i}" for i in range(20)]
    labels = np.asarray([0] * 12 + [1] * 5 + [2] * 3, np.int32)
    kept, rest = labelled_text.labels_per_class(LabelledTexts(texts, labels), 4, seed=0)
    assert np.bincount(kept.labels).tolist() == [4, 4, 3]  # a class with fewer keeps all of them
    assert sorted(kept.texts + rest, key=lambda t: int(t.split()[1])) == texts
    assert [t for t in kept.texts if t in texts[17:]] == texts[17:]  # the original order
    again, _ = labelled_text.labels_per_class(LabelledTexts(texts, labels), 4, seed=0)
    assert again.texts == kept.texts
    other, _ = labelled_text.labels_per_class(LabelledTexts(texts, labels), 4, seed=1)
    assert other.texts != kept.texts


def test_the_classifier_config_trains_on_n_per_class():
    config = fortunes_classifier.get_config("cpu")
    config.data.num_topics = 3
    config.data.labels_per_class = 10
    split, unlabelled, class_names = ulmfit.load_split(config)
    ids = ulmfit.encode(split, tokens.Vocab(tokens.SPECIALS))
    assert np.bincount(split.train.labels).tolist() == [10, 10, 10] and len(ids["train"]) == 30
    config.data.labels_per_class = 0
    full, none, _ = ulmfit.load_split(config)
    assert len(full.train.texts) > 300 and full.test.texts == split.test.texts and none == []
    assert set(split.train.texts) <= set(full.train.texts)
    # The labels not used still serve stage 2: the kept and the unlabelled texts are the whole training split.
    assert sorted(split.train.texts + unlabelled) == sorted(full.train.texts)


def test_an_aclimdb_folder_gives_its_unsup_reviews_to_stage2_not_a_class(tmp_path):
    """The aclImdb layout: train/pos, train/neg, train/unsup (unlabelled reviews), test/pos, test/neg. unsup is not
    a class: its texts are stage 2's, at most `lm_finetune.max_unlabelled` of them; HTML line breaks are new lines."""
    for split, name, count in (("train", "pos", 10), ("train", "neg", 10), ("train", "unsup", 7), ("test", "pos", 3),
                               ("test", "neg", 3)):
        (tmp_path / split / name).mkdir(parents=True)
        for i in range(count):
            (tmp_path / split / name / f"{i}_7.txt").write_text(f"{name} review {i}<br /><br />the end")
    (tmp_path / "train" / "labeledBow.feat").write_text("0 0:1")  # aclImdb's other files are not reviews
    config = fortunes_classifier.get_config("cpu")
    config.data.source, config.data.path, config.data.valid_fraction = "folder", str(tmp_path), 0.2
    split, unlabelled, class_names = ulmfit.load_split(config)
    assert class_names == ["neg", "pos"] and len(split.train.texts) + len(split.valid.texts) == 20
    assert sorted(unlabelled) == sorted(f"unsup review {i}\n\nthe end" for i in range(7))
    assert all("<br" not in t for t in split.train.texts + split.test.texts)
    config.lm_finetune.max_unlabelled = 4
    _, fewer, _ = ulmfit.load_split(config)
    assert len(fewer) == 4 and set(fewer) <= set(unlabelled)
