"""Elman RNN, LSTM and GRU: written out from their equations, or on torch's fused kernels.

``ReferenceRecurrent`` registers the same parameters, in the same order and gate layout, as
``nn.RNN`` / ``nn.LSTM`` / ``nn.GRU`` (``batch_first=True``), so a state_dict moves between the two
variants unchanged and the same seed gives the same weights.

Equations, per layer and time step t, with x_t the input and h_{t-1} the previous state
(W_i* rows of ``weight_ih``, W_h* rows of ``weight_hh``, b the matching biases):

Elman:  h_t = tanh(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh)

LSTM (gate order i, f, g, o, no peepholes):
    i = sigmoid(W_ii x_t + b_ii + W_hi h_{t-1} + b_hi)     input gate
    f = sigmoid(W_if x_t + b_if + W_hf h_{t-1} + b_hf)     forget gate
    g = tanh(W_ig x_t + b_ig + W_hg h_{t-1} + b_hg)        candidate cell
    o = sigmoid(W_io x_t + b_io + W_ho h_{t-1} + b_ho)     output gate
    c_t = f * c_{t-1} + i * g
    h_t = o * tanh(c_t)
  The output gate reads x_t and h_{t-1}; some printed versions feed it c_t (a peephole variant,
  not the standard LSTM, and not what cuDNN computes).

GRU (gate order r, z, n):
    r = sigmoid(W_ir x_t + b_ir + W_hr h_{t-1} + b_hr)     reset gate
    z = sigmoid(W_iz x_t + b_iz + W_hz h_{t-1} + b_hz)     update gate
    n = tanh(W_in x_t + b_in + r * (W_hn h_{t-1} + b_hn))  candidate state
    h_t = (1 - z) * n + z * h_{t-1}
  The state is an interpolation between h_{t-1} and the candidate; versions printed without it
  are wrong. This is torch's and cuDNN's convention: z weights the previous state, which is the
  textbook form (1 - z) h_{t-1} + z n with z renamed 1 - z; and r multiplies (W_hn h + b_hn)
  after the matrix product (Cho et al. apply it before), which lets all gates share one matmul.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from carbonbench.models.config import GATES, RecurrentConfig

Kind = Literal["rnn", "lstm", "gru"]
State = Tensor | tuple[Tensor, Tensor]


def elman_step(xw: Tensor, h: Tensor, w_hh: Tensor, b_hh: Tensor) -> Tensor:
    """One Elman step; ``xw`` is the precomputed W_ih x_t + b_ih."""
    return torch.tanh(xw + F.linear(h, w_hh, b_hh))


def lstm_step(
    xw: Tensor, h: Tensor, c: Tensor, w_hh: Tensor, b_hh: Tensor
) -> tuple[Tensor, Tensor]:
    """One LSTM step; returns (h_t, c_t)."""
    i, f, g, o = (xw + F.linear(h, w_hh, b_hh)).chunk(4, dim=-1)
    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    return torch.sigmoid(o) * torch.tanh(c), c


def gru_step(xw: Tensor, h: Tensor, w_hh: Tensor, b_hh: Tensor) -> Tensor:
    """One GRU step."""
    x_r, x_z, x_n = xw.chunk(3, dim=-1)
    h_r, h_z, h_n = F.linear(h, w_hh, b_hh).chunk(3, dim=-1)
    r = torch.sigmoid(x_r + h_r)
    z = torch.sigmoid(x_z + h_z)
    n = torch.tanh(x_n + r * h_n)
    return (1 - z) * n + z * h


class ReferenceRecurrent(nn.Module):
    """Stacked Elman/LSTM/GRU layers as a Python loop over time; the readable variant.

    Inputs and outputs follow ``nn.LSTM(batch_first=True)``: ``forward(x, state)`` with
    x ``[batch, time, input]`` returns ``(output [batch, time, hidden], state)``, the state being
    ``h_n`` (or ``(h_n, c_n)`` for the LSTM) of shape ``[layers, batch, hidden]``.
    """

    def __init__(
        self, kind: Kind, input_size: int, hidden_size: int, num_layers: int, dropout: float
    ) -> None:
        super().__init__()
        self.kind = kind
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.dropout = dropout
        rows = GATES[kind] * hidden_size
        for k in range(num_layers):  # nn.LSTM's registration order: the same seed, same weights
            cols = input_size if k == 0 else hidden_size
            self.register_parameter(f"weight_ih_l{k}", nn.Parameter(torch.empty(rows, cols)))
            self.register_parameter(f"weight_hh_l{k}", nn.Parameter(torch.empty(rows, hidden_size)))
            self.register_parameter(f"bias_ih_l{k}", nn.Parameter(torch.empty(rows)))
            self.register_parameter(f"bias_hh_l{k}", nn.Parameter(torch.empty(rows)))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """U(-1/sqrt(hidden), 1/sqrt(hidden)) for every weight, as torch's recurrent modules."""
        bound = 1.0 / math.sqrt(self.hidden_size)
        for p in self.parameters():
            nn.init.uniform_(p, -bound, bound)

    def forward(self, x: Tensor, state: State | None = None) -> tuple[Tensor, State]:
        batch = x.shape[0]
        if state is None:
            zeros = x.new_zeros(self.num_layers, batch, self.hidden_size)
            state = (zeros, zeros) if self.kind == "lstm" else zeros
        h0, c0 = state if isinstance(state, tuple) else (state, None)
        final_h, final_c = [], []
        for k in range(self.num_layers):
            w_ih, w_hh = getattr(self, f"weight_ih_l{k}"), getattr(self, f"weight_hh_l{k}")
            b_ih, b_hh = getattr(self, f"bias_ih_l{k}"), getattr(self, f"bias_hh_l{k}")
            xw = F.linear(x, w_ih, b_ih)  # input projections for every time step in one matmul
            h = h0[k]
            c = c0[k] if c0 is not None else None
            outputs = []
            for t in range(x.shape[1]):
                if self.kind == "lstm":
                    h, c = lstm_step(xw[:, t], h, c, w_hh, b_hh)
                elif self.kind == "gru":
                    h = gru_step(xw[:, t], h, w_hh, b_hh)
                else:
                    h = elman_step(xw[:, t], h, w_hh, b_hh)
                outputs.append(h)
            x = torch.stack(outputs, dim=1)
            if self.dropout and self.training and k < self.num_layers - 1:
                x = F.dropout(x, self.dropout, training=True)
            final_h.append(h)
            final_c.append(c)
        h_n = torch.stack(final_h)
        return x, ((h_n, torch.stack(final_c)) if self.kind == "lstm" else h_n)


def recurrent_stack(
    kind: Kind, input_size: int, hidden_size: int, num_layers: int, dropout: float, impl: str
) -> nn.Module:
    """The recurrent layers of one variant: reference loop or torch's fused module."""
    if impl == "reference":
        return ReferenceRecurrent(kind, input_size, hidden_size, num_layers, dropout)
    fused = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}[kind]
    return fused(input_size, hidden_size, num_layers, batch_first=True, dropout=dropout)


class RecurrentLM(nn.Module):
    """Language model: embedding -> stacked recurrent layers -> vocabulary projection."""

    def __init__(self, kind: Kind, config: RecurrentConfig, impl: str) -> None:
        super().__init__()
        self.embed = nn.Embedding(config.vocab, config.d_model)
        self.rnn = recurrent_stack(
            kind, config.d_model, config.hidden, config.layers, config.dropout, impl
        )
        self.head = nn.Linear(config.hidden, config.vocab)

    def forward(self, tokens: Tensor) -> Tensor:
        """tokens ``[batch, time]`` -> next-token logits ``[batch, time, vocab]``."""
        output, _ = self.rnn(self.embed(tokens))
        return self.head(output)


class Seq2SeqLSTM(nn.Module):
    """LSTM encoder-decoder (Sutskever et al., 2014): the encoder's final (h, c) of every layer
    initialises the decoder, which reads the target shifted right (teacher forcing)."""

    def __init__(self, config: RecurrentConfig, impl: str) -> None:
        super().__init__()
        c = config
        self.src_embed = nn.Embedding(c.vocab, c.d_model)
        self.tgt_embed = nn.Embedding(c.vocab, c.d_model)
        self.encoder = recurrent_stack("lstm", c.d_model, c.hidden, c.layers, c.dropout, impl)
        self.decoder = recurrent_stack("lstm", c.d_model, c.hidden, c.layers, c.dropout, impl)
        self.head = nn.Linear(c.hidden, c.vocab)

    def forward(self, src: Tensor, tgt_in: Tensor) -> Tensor:
        """src ``[batch, src_len]``, tgt_in ``[batch, tgt_len]`` -> ``[batch, tgt_len, vocab]``."""
        _, state = self.encoder(self.src_embed(src))
        output, _ = self.decoder(self.tgt_embed(tgt_in), state)
        return self.head(output)


# -- the builders the records in carbonbench.models.catalog name -------------------------


def rnn_reference(c: RecurrentConfig) -> RecurrentLM:
    return RecurrentLM("rnn", c, "reference")


def rnn_fused(c: RecurrentConfig) -> RecurrentLM:
    return RecurrentLM("rnn", c, "fused")


def lstm_reference(c: RecurrentConfig) -> RecurrentLM:
    return RecurrentLM("lstm", c, "reference")


def lstm_fused(c: RecurrentConfig) -> RecurrentLM:
    return RecurrentLM("lstm", c, "fused")


def gru_reference(c: RecurrentConfig) -> RecurrentLM:
    return RecurrentLM("gru", c, "reference")


def gru_fused(c: RecurrentConfig) -> RecurrentLM:
    return RecurrentLM("gru", c, "fused")


def seq2seq_lstm_reference(c: RecurrentConfig) -> Seq2SeqLSTM:
    return Seq2SeqLSTM(c, "reference")


def seq2seq_lstm_fused(c: RecurrentConfig) -> Seq2SeqLSTM:
    return Seq2SeqLSTM(c, "fused")
