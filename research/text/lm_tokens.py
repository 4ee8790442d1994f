"""What a language model's tokens are, for research/text/lm_recipe.py: words (research/text/tokens.py, each
document opened by xxbos) or characters (research/text/documents.CharVocab, documents joined by a separator
line). Each kind turns the documents of a split into one id stream with the training vocabulary, a prompt into
ids, and sampled ids back into text.
"""

import numpy as np

from research.text import documents, tokens


class Words:
    """Word tokens: the config's `vocab.max_size` and `vocab.min_freq` bound the vocabulary."""
    @staticmethod
    def encode_splits(config, split, separator: str) -> tuple[dict[str, np.ndarray], tokens.Vocab]:
        del separator  # xxbos opens every document
        tokenized = {name: [tokens.tokenize(doc) for doc in docs] for name, docs in split._asdict().items()}
        vocab = tokens.Vocab.build(tokenized["train"], config.vocab.max_size, config.vocab.min_freq)
        return {name: np.concatenate([vocab.numericalize(t) for t in docs]) for name, docs in tokenized.items()}, vocab

    @staticmethod
    def encode_documents(vocab: tokens.Vocab, docs: list[str]) -> np.ndarray:
        return np.concatenate([vocab.numericalize(tokens.tokenize(doc)) for doc in docs])

    load_vocab = staticmethod(tokens.Vocab.load)

    @staticmethod
    def prompt_ids(vocab: tokens.Vocab, prompt: str) -> np.ndarray:
        return vocab.numericalize(tokens.tokenize(prompt))  # an empty prompt starts a new document

    @staticmethod
    def written(vocab: tokens.Vocab, prompt: str, ids) -> str:
        """The prompt and the sampled words, detokenised."""
        return tokens.detokenize(tokens.tokenize(prompt) + vocab.textify(np.asarray(ids)))

    @staticmethod
    def continuation(prompt: str, written: str) -> str:
        """What `written` adds after the prompt (the prompt's own spacing is normalised by detokenising)."""
        return " " + written[len(tokens.detokenize(tokens.tokenize(prompt))):].lstrip(" ") if prompt else written

    @staticmethod
    def scores(count: int, found: dict) -> dict:
        return {"tokens": count, "loss": round(found["loss"], 4), "perplexity": round(found["perplexity"], 2)}


class Characters:
    """Characters: the vocabulary is every character of the training text."""
    @staticmethod
    def encode_splits(config, split, separator: str) -> tuple[dict[str, np.ndarray], documents.CharVocab]:
        del config
        vocab = documents.CharVocab.build(split.train)
        return {name: vocab.encode(documents.join_documents(docs, separator))
                for name, docs in split._asdict().items()}, vocab

    @staticmethod
    def encode_documents(vocab: documents.CharVocab, docs: list[str]) -> np.ndarray:
        return vocab.encode(documents.join_documents(docs, "\n"))

    load_vocab = staticmethod(documents.CharVocab.load)

    @staticmethod
    def prompt_ids(vocab: documents.CharVocab, prompt: str) -> np.ndarray:
        return vocab.encode(prompt or "%\n")  # an empty prompt starts after a document's end

    @staticmethod
    def written(vocab: documents.CharVocab, prompt: str, ids) -> str:
        return prompt + vocab.decode(np.asarray(ids))

    @staticmethod
    def continuation(prompt: str, written: str) -> str:
        return written[len(prompt):]

    @staticmethod
    def scores(count: int, found: dict) -> dict:
        return {"characters": count, "loss_nats_per_char": round(found["loss"], 4)}
