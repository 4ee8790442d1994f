"""A pretrained language model moved onto a new vocabulary, the way fastai does it (ULMFiT's stage 2): a token
the pretrained vocabulary knows keeps its embedding row and its output bias; a new token gets the mean embedding
row and the mean output bias. Everything else (the recurrent layers) is unchanged. With the decoder tied to the
embedding, the output weights move with the rows.
"""

from typing import NamedTuple, Sequence

import numpy as np


class Transfer(NamedTuple):
    params: dict  # the AWDLSTM params for the new vocabulary
    known: int  # new tokens found in the old vocabulary
    new: int  # new tokens given the mean row


def transfer_vocab(params: dict, old_itos: Sequence[str], new_itos: Sequence[str]) -> Transfer:
    """`params` of an AWDLSTM over `old_itos` ({"encoder": {"embed": {"embedding": VxE}, ...}, "output_bias": V})
    re-indexed for `new_itos`. The embedding parameter is used as stored (its fixed offset commutes with the
    mean)."""
    embedding_VxE = np.asarray(params["encoder"]["embed"]["embedding"])
    bias_V = np.asarray(params["output_bias"])
    if embedding_VxE.shape[0] != len(old_itos) or bias_V.shape[0] != len(old_itos):
        raise ValueError(f"the params hold {embedding_VxE.shape[0]} rows, the old vocabulary {len(old_itos)}")
    old_index = {token: i for i, token in enumerate(old_itos)}
    rows_N = np.asarray([old_index.get(token, -1) for token in new_itos], np.int64)
    known_N = rows_N >= 0
    new_embedding_NxE = np.where(known_N[:, None], embedding_VxE[np.maximum(rows_N, 0)],
                                 embedding_VxE.mean(axis=0, keepdims=True))
    new_bias_N = np.where(known_N, bias_V[np.maximum(rows_N, 0)], bias_V.mean())
    encoder = {**params["encoder"], "embed": {**params["encoder"]["embed"],
                                              "embedding": new_embedding_NxE.astype(embedding_VxE.dtype)}}
    new_params = {**params, "encoder": encoder, "output_bias": new_bias_N.astype(bias_V.dtype)}
    return Transfer(new_params, int(known_N.sum()), int((~known_N).sum()))
