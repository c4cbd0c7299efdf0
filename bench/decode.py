"""Greedy decoding from latent codes, batched over rows, with one host synchronisation per step.

For latent codes z [R, D] the decoder of design.md §6 runs one step at a time from <s>:

    c = decoder_input(z),   (h_0, c_0) = (tanh(W c), W c)
    h_t = LSTM([embed(y_{t-1}) ; c], h_{t-1}),   y_t = argmax_v (W_out decoder_output(h_t, z))_v

the same computation as the teacher-forced `Method.decoder_logits`, fed its own argmax instead of the
data. A row ends when it emits </s> or after its `max_words` words (then it is cut). The rows of a
chunk that are still running advance together as one batch, and rows that end leave it; the one host
synchronisation per step is finding which rows go on. No Python loop over rows.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor
from vae_collapse_bench.bench.data import BOS, EOS
from vae_collapse_bench.bench.model import Method


@dataclass
class Decoded:
    """Greedy outputs of R rows: `tokens` [R, S] (only the first `lengths[r]` entries of row r are its
    words; </s> is not included), `lengths` [R], `ended` [R] (True: the row emitted </s>; False: it was
    cut after max_words words), `steps`: decoder steps run (the most of any chunk's), and `row_steps`:
    tokens computed (each step of each running row), the work done."""

    tokens: Tensor
    lengths: Tensor
    ended: Tensor
    steps: int = 0
    row_steps: int = 0

    def words(self) -> list[list[int]]:
        """Each row's words as token ids (one transfer to the host for the whole batch)."""
        tokens, lengths = self.tokens.tolist(), self.lengths.tolist()
        return [row[:n] for row, n in zip(tokens, lengths)]


@torch.no_grad()
def greedy_decode(model: Method, z: Tensor, max_words: int | Tensor, max_rows: int | None = None) -> Decoded:
    """Greedy decoding of every row of z [R, D]; `max_words` is one limit for all rows or one per row
    ([R]). Rows are decoded in chunks of at most `max_rows` (bounding the [rows, V] logits of a step);
    within a chunk, one host sync per step. The model must be in eval mode (dropout off), as the
    evaluator leaves it."""
    if model.training:
        raise ValueError("greedy_decode needs the model in eval mode (dropout off): call model.eval()")
    rows = z.shape[0]
    limits = torch.as_tensor(max_words, device=z.device).expand(rows) if not isinstance(max_words, Tensor) \
        else max_words.to(z.device)
    if rows == 0:
        empty = torch.zeros(0, dtype=torch.long, device=z.device)
        return Decoded(empty.view(0, 0), empty, empty.bool())
    step = max_rows or rows
    parts = [_decode_chunk(model, z[s:s + step], limits[s:s + step]) for s in range(0, rows, step)]
    width = max(p.tokens.shape[1] for p in parts)
    tokens = torch.cat([torch.nn.functional.pad(p.tokens, (0, width - p.tokens.shape[1])) for p in parts])
    return Decoded(tokens, torch.cat([p.lengths for p in parts]), torch.cat([p.ended for p in parts]),
                   max(p.steps for p in parts), sum(p.row_steps for p in parts))


def _decode_chunk(model: Method, z: Tensor, limits: Tensor) -> Decoded:
    """One chunk: the rows still running are kept together (`live`, their indices into the chunk);
    rows that end are dropped from the next step's batch, so the work follows the tokens actually
    decoded. Finding the rows that go on (`nonzero`) is the step's one host sync."""
    dec = model.decoder
    rows, device = z.shape[0], z.device
    c = model.decoder_input(z)
    c0 = dec.init_c(c).unsqueeze(0)
    state = (torch.tanh(c0), c0)
    c_step = c.unsqueeze(1)
    max_steps = int(limits.max()) + 1  # the longest row's words and its </s>
    tokens = torch.zeros(rows, max_steps, dtype=torch.long, device=device)
    lengths = torch.zeros(rows, dtype=torch.long, device=device)
    ended = torch.zeros(rows, dtype=torch.bool, device=device)
    live = (limits > 0).nonzero().squeeze(1)
    y = torch.full((len(live),), BOS, dtype=torch.long, device=device)
    c_step, z, state = c_step[live], z[live], (state[0][:, live], state[1][:, live])
    steps = row_steps = 0
    while len(live) and steps < max_steps:
        row_steps += len(live)
        emb = dec.dropout_in(dec.embed(y)).unsqueeze(1)
        h, state = dec.lstm(torch.cat([emb, c_step], -1), state)
        y = dec.out(model.decoder_output(dec.dropout_out(h), z))[:, 0].argmax(-1)
        tokens[live, steps] = y
        eos = y == EOS
        lengths[live] += ~eos
        ended[live] = eos
        steps += 1
        going = (~eos & (lengths[live] < limits[live])).nonzero().squeeze(1)  # the one host sync
        if len(going) < len(live):
            live, y, c_step, z = live[going], y[going], c_step[going], z[going]
            state = (state[0][:, going], state[1][:, going])
    return Decoded(tokens[:, :steps], lengths, ended, steps, row_steps)
