"""An architecture added from outside the package: one file and one registry line.

Bengio et al.'s (2003) neural language model: each next token is predicted from the
embeddings of the ``context`` tokens before it, concatenated, through one tanh layer. Only a
reference variant (``builders`` has one entry); FLOPs written out by hand in the record.

To add it, this file and one line::

    carbonbench.models.register(MLP_LM)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor, nn

from carbonbench.models import Architecture


@dataclass(frozen=True)
class MLPConfig:
    vocab: int
    d_model: int
    context: int  # tokens the prediction sees
    hidden: int
    dropout: float = 0.0


class MLPLanguageModel(nn.Module):
    def __init__(self, c: MLPConfig) -> None:
        super().__init__()
        self.context = c.context
        self.embed = nn.Embedding(c.vocab, c.d_model)
        self.hidden = nn.Linear(c.context * c.d_model, c.hidden)
        self.head = nn.Linear(c.hidden, c.vocab)

    def forward(self, tokens: Tensor) -> Tensor:
        """tokens ``[batch, time]`` -> next-token logits ``[batch, time, vocab]``."""
        padded = F.pad(tokens, (self.context - 1, 0))  # token 0 before the start
        windows = padded.unfold(1, self.context, 1)  # [batch, time, context]
        x = self.embed(windows).flatten(2)
        return self.head(self.hidden(x).tanh())


def mlp_flops(c: MLPConfig, batch_size: int, seq_len: int) -> int:
    tokens = batch_size * seq_len
    return tokens * (2 * c.context * c.d_model * c.hidden + 2 * c.hidden * c.vocab)


MLP_LM = Architecture(
    name="mlp-lm",
    description="MLP language model over a fixed context (Bengio et al., 2003)",
    kind="language-model",
    config_cls=MLPConfig,
    sizes={
        "tiny": MLPConfig(vocab=512, d_model=32, context=4, hidden=128),
        "small": MLPConfig(vocab=8192, d_model=256, context=8, hidden=1024),
    },
    builders={"reference": MLPLanguageModel},
    analytic_flops=mlp_flops,
    source="tests.examples.mlp_lm",
)
