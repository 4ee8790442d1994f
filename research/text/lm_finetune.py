"""ULMFiT's stage 2: a pretrained language model fine-tuned on the target task's own texts (its training texts,
labelled or not; never its validation or test texts), after its vocabulary is moved onto theirs
(research/text/pretrained_lm.for_vocab: a known token keeps its row and output bias, a new one gets the means).
Discriminative rates as fastai groups a language model (each recurrent layer from the top down at lr / 2.6 of
the one above, the tied embedding and decoder at lr) and slanted triangular (1cycle) rates. Started from a
fresh initialisation instead (`pretrained=None`), it is ULMFiT without stage 1: the ablation that shows what
general pretraining buys. The perplexity on the target's validation texts is reported before and after; the
epoch with the lowest validation loss is kept (a small target corpus overfits within a few epochs).

The config's `lm_finetune` holds epochs, learning_rate, batch_size, bptt, vocab_size and min_freq; its
`optimizer` and `one_cycle` are the run's.
"""

from typing import NamedTuple

import jax
import numpy as np

from research.core import experiment, inference, optimizers, steps, trainer
from research.core.train_state import TrainState
from research.text import classifier, language_model, lm_recipe, lm_tokens, pretrained_lm, tokens, wt103
from research.text.awd_lstm import AWDLSTM
from research.text.lm_stream import LMStream


def layer_groups(num_layers: int) -> list[str]:
    """A language model's groups from input to output: the recurrent layers, then the tied embedding/decoder."""
    return [*(f"^encoder/rnn_{i}/" for i in range(num_layers)), "^(encoder/embed/|output_bias)"]


class FineTuned(NamedTuple):
    lm: classifier.LanguageModel  # the target vocabulary, the sizes, the fine-tuned encoder and output bias
    metrics: dict  # valid perplexity before and after, steps, tokens, vocabulary sizes


def target_vocab(texts: list[str], max_size: int, min_freq: int) -> tokens.Vocab:
    return tokens.Vocab.build([tokens.tokenize(t) for t in texts], max_size, min_freq)


def fine_tune(config, train_texts: list[str], valid_texts: list[str], vocab: tokens.Vocab, model_config: dict,
              pretrained: wt103.Pretrained | None, mesh, workdir: str) -> FineTuned:
    """The language model over `vocab` (sizes `model_config`) from `pretrained` (None: a fresh initialisation)
    fine-tuned on `train_texts` for `config.lm_finetune.epochs` epochs in `workdir` (resumable there)."""
    f = config.lm_finetune
    model = AWDLSTM(len(vocab), **model_config)
    train_ids = lm_tokens.Words.encode_documents(vocab, train_texts)
    valid_ids = lm_tokens.Words.encode_documents(vocab, valid_texts)
    batches = LMStream(train_ids, f.batch_size, f.bptt, mesh, config.seed)
    num_steps = f.epochs * batches.steps_per_epoch
    groups = layer_groups(model_config["num_layers"])
    tx = experiment.one_cycle_optimizer(config, f.learning_rate, num_steps,
                                        lr_multipliers=optimizers.discriminative_multipliers(groups, 2.6))
    params = lm_recipe.init_variables(model, f.batch_size, batches.window, jax.random.key(config.seed))["params"]
    metrics = {}
    if pretrained is not None:
        moved = pretrained_lm.for_vocab(pretrained, vocab)
        params = jax.tree.map(lambda like, value: np.asarray(value, like.dtype), params, moved.params)
        metrics.update(known_tokens=moved.known, new_tokens=moved.new)
    state = TrainState.create(apply_fn=model.apply, params=params, batch_stats={}, tx=tx,
                              carry=model.initial_carry(f.batch_size))
    rows = max(1, min(config.eval_batch_size, len(valid_ids) // f.bptt))  # few rows for a short validation text
    evaluate = language_model.make_evaluator(model.apply, model.initial_carry, valid_ids, rows, f.bptt, "valid_")
    metrics.update({f"before_{k}": v for k, v in evaluate(state).items()})
    task = language_model.task(config.get("ar", 2.0), config.get("tar", 1.0))
    state = trainer.train(state=state, train_step=steps.make_train_step(task), batches=batches, num_steps=num_steps,
                          mesh=mesh, seed=config.seed, workdir=workdir, evaluate=evaluate,
                          checkpoint_every=batches.steps_per_epoch, log_every=config.log_every, keep_checkpoints=1,
                          best_metric="valid_loss", best_mode="min")
    state = inference.restore_trained(workdir, state, "valid_loss", "min")  # the epoch best on validation
    metrics.update({f"after_{k}": v for k, v in evaluate(state).items()})
    metrics.update(steps=num_steps, train_tokens=int(len(train_ids)), vocab_size=len(vocab))
    params = jax.device_get(state.params)
    return FineTuned(classifier.LanguageModel(vocab, model_config, params["encoder"], params["output_bias"]),
                     metrics)
