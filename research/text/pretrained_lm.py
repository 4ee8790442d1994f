"""Where ULMFiT's stage 2 starts: a pretrained language model (fastai's WT103 weights, or one of our language-model
runs) moved onto the target texts' vocabulary (research/text/vocab_transfer.py), ready to be fine-tuned.
"""

import os

from research.core.errors import InputError
from research.text import classifier, tokens, vocab_transfer, wt103


def load(source: str) -> wt103.Pretrained:
    """A pretrained AWD-LSTM language model: "WT103_FWD" / "WT103_BWD" (fastai's, downloaded once) or the
    workdir of a finished experiments/fortunes_lm.py-style run (its vocab.json, run.json and best checkpoint)."""
    if source in wt103.ARCHIVES:
        return wt103.load_named(source)
    if os.path.isdir(source):
        lm = classifier.load_language_model(source)
        return wt103.Pretrained(lm.vocab, lm.model_config, {"encoder": lm.encoder_params,
                                                            "output_bias": lm.output_bias})
    raise InputError(f"pretrained language model {source!r} is neither one of {sorted(wt103.ARCHIVES)} nor a "
                     "run's workdir")


def for_vocab(pretrained: wt103.Pretrained, vocab: tokens.Vocab) -> vocab_transfer.Transfer:
    """The pretrained params re-indexed for `vocab` (known tokens keep their rows, new ones get the means)."""
    return vocab_transfer.transfer_vocab(pretrained.params, pretrained.vocab.itos, vocab.itos)
