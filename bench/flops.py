"""The floating-point work of one training step of the shared backbone (design.md §6), for `bench perf`.

A FLOP is one multiply or one add; a multiply-add counts 2. Forward work of a batch of B sentences of
T tokens (<s> and </s> included), the encoder reading all T, the decoder predicting T' = T - 1:

    embedding           B T E + B T' E                   one gather per element: no arithmetic, counted
                                                         so that its (tiny) share is visible
    encoder LSTM        2 B T  4 H_e (E + H_e)           the four gates' input and recurrent products
    decoder LSTM        2 B T' 4 H_d (E + C + H_d)       C = what the decoder conditions on (default D)
    output projection   2 B T' F V                       F = the projection's input (default H_d)
    latent layers       2 B H_e P + 2 B C H_d            encoder head (P = 2 D for a Gaussian) and c0 = W c

and the step costs 3 x forward: the backward pass of every product computes two products of the same
size (the gradient for the input and for the weight). Gate nonlinearities, biases, dropout, softmax
and the regularizer are left out: O(B T H) or O(B T V) elementwise work beside O(B T H^2) and
O(B T H V) products. This is the yardstick the issue's "achieved GFLOP/s" uses: at the Yahoo backbone
(512/1024/1024, D = 32, B = 32, T = 82, V = 20,001) it gives 519 GFLOP per step.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

BACKWARD_FACTOR = 3  # forward + the two products of each backward


@dataclass(frozen=True)
class StepFlops:
    """Forward FLOPs of one training step by part; `total` is BACKWARD_FACTOR x their sum."""

    embedding: int
    encoder_lstm: int
    decoder_lstm: int
    output_projection: int
    latent_layers: int

    @property
    def forward(self) -> int:
        return sum(asdict(self).values())

    @property
    def total(self) -> int:
        return BACKWARD_FACTOR * self.forward

    def shares(self) -> dict[str, float]:
        """Each part's fraction of the forward work."""
        return {name: value / self.forward for name, value in asdict(self).items()}


def lstm_flops(tokens: int, input_size: int, hidden: int) -> int:
    """One LSTM layer over `tokens` (batch x steps) inputs: 2 tokens 4 hidden (input_size + hidden)."""
    return 2 * tokens * 4 * hidden * (input_size + hidden)


def step_flops(batch: int, seq_len: int, vocab: int, emb: int, enc_hidden: int, dec_hidden: int,
               latent: int, cond_dim: int | None = None, out_dim: int | None = None,
               encoder_out: int | None = None) -> StepFlops:
    """The forward FLOPs of one step (module docstring) of a batch [batch, seq_len]; cond_dim (C),
    out_dim (F) and encoder_out (P) default to the plain Gaussian backbone's D, H_d and 2 D."""
    if min(batch, vocab, emb, enc_hidden, dec_hidden, latent) < 1 or seq_len < 2:
        raise ValueError("step_flops needs positive sizes and seq_len >= 2 (<s> and </s>)")
    cond = latent if cond_dim is None else cond_dim
    feat = dec_hidden if out_dim is None else out_dim
    head = 2 * latent if encoder_out is None else encoder_out
    predicted = seq_len - 1
    return StepFlops(
        embedding=batch * seq_len * emb + batch * predicted * emb,
        encoder_lstm=lstm_flops(batch * seq_len, emb, enc_hidden),
        decoder_lstm=lstm_flops(batch * predicted, emb + cond, dec_hidden),
        output_projection=2 * batch * predicted * feat * vocab,
        latent_layers=2 * batch * enc_hidden * head + 2 * batch * cond * dec_hidden,
    )


def model_step_flops(model, batch: int, seq_len: int) -> StepFlops:
    """`step_flops` with the sizes read off a built `bench.model.Method` (its decoder's conditioning
    and projection widths, e.g. skip-VAE's [h ; z], and its encoder head)."""
    enc, dec = model.encoder, model.decoder
    return step_flops(batch, seq_len, dec.out.out_features, enc.embed.embedding_dim, enc.lstm.hidden_size,
                      dec.lstm.hidden_size, model.backbone.latent_dim,
                      cond_dim=dec.init_c.in_features, out_dim=dec.out.in_features,
                      encoder_out=enc.out.out_features)


def matmul_flops(m: int, k: int, n: int) -> int:
    """[m, k] @ [k, n]: 2 m k n."""
    return 2 * m * k * n


def log_px_z_flops(model, seq_len: int) -> int:
    """Forward FLOPs of log p(x|z) for one sentence of `seq_len` tokens and one z (what the evaluator
    repeats K times per sentence): the decoder LSTM over T' steps, the output projection and
    c0 = W c; the softmax and the encoder (once per sentence, not per sample) are left out."""
    f = model_step_flops(model, 1, seq_len)
    dec = model.decoder
    return f.decoder_lstm + f.output_projection + 2 * dec.init_c.in_features * dec.init_c.out_features
