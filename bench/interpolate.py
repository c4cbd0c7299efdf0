"""Interpolation between test sentences (DG-VAE, Eq. 14 and Figure 5) and its Rouge-L curve.

For a pair of test sentences (a, b) of equal length with posterior centres mu_a, mu_b
(`Posterior.mode`: the mean of a Gaussian, the unit mean direction of a vMF) and
lambda in {0, 0.1, ..., 1}:

    z_lambda = (1 - lambda) mu_a + lambda mu_b                                          (Eq. 14)

is decoded greedily (`bench.decode.greedy_decode`) into s_lambda. With F(s, r) the Rouge-L F1 of s
against r (LCS-based: P = LCS / |s|, R = LCS / |r|, F = 2PR / (P + R); 0 when either is empty),
over the P pairs of the selection:

    R_a(lambda) = (1/P) sum_p F(s_lambda^p, a^p),   R_b(lambda) = (1/P) sum_p F(s_lambda^p, b^p)
    C(lambda)   = (R_a(lambda) + R_b(lambda)) / 2
    Rouge-L     = min_lambda C(lambda)           (the board's column: higher is better)

C is what the public DG-VAE code computes per lambda (one Rouge-L average over the hypotheses
s_lambda against both endpoints). A latent space without holes moves from a to b through sentences
that keep sharing words with both, so C stays high across the path; a hole on the path (or a
collapsed posterior, whose codes all decode to one generic sentence) gives a low minimum. The
paper's code scores with the `rouge` package (a different F for Rouge-L); we use Google's
`rouge-score` with a tokenizer that keeps the corpus's tokens (whitespace split, no lower-casing, no
stripping of non-alphanumerics). Sentences are compared as token ids: the vocabulary is one-to-one,
so this equals comparing its tokens (a test word outside the vocabulary is <unk> on both sides,
as in the public code). <s> and </s> are not words.

Pairs (`select_pairs`): the test sentences grouped by length, each group's distinct sentences
shuffled and paired off in order, all pairs shuffled, the first N kept: a function of the split and
the seed alone, so every run on a board is measured on the same pairs. (The public code pairs
neighbours within each length-sorted batch, every pair of the test set.) A decoded row ends at </s>
or after `max_words` = 2 L + 10 words for endpoints of L words.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor
from vae_collapse_bench.bench.data import BOS, EOS, Split, Vocab
from vae_collapse_bench.bench.decode import Decoded, greedy_decode
from vae_collapse_bench.bench.errors import BenchError
from vae_collapse_bench.bench.model import Method

LAMBDAS: tuple[float, ...] = tuple(k / 10 for k in range(11))
ENCODE_BATCH = 256


def max_words(length: int) -> int:
    """The decoding limit for endpoints of `length` words: a greedy row that has not ended by twice
    their length (plus ten) is looping, and its Rouge-L is already low."""
    return 2 * length + 10


# --------------------------------------------------------------------------------------- pairs
def select_pairs(sentences: Sequence[Tensor], n_pairs: int, seed: int) -> list[tuple[int, int]]:
    """Up to `n_pairs` pairs (i, j) of indices of distinct sentences of equal length (module
    docstring); [] when no length has two distinct sentences. Deterministic in (sentences, seed)."""
    if n_pairs < 1:
        return []
    gen = torch.Generator().manual_seed(seed)
    groups: dict[int, dict[tuple[int, ...], int]] = {}
    for i, s in enumerate(sentences):
        groups.setdefault(len(s), {}).setdefault(tuple(s.tolist()), i)  # first index of each distinct sentence
    pairs = []
    for length in sorted(groups):
        idx = list(groups[length].values())
        idx = [idx[k] for k in torch.randperm(len(idx), generator=gen).tolist()]
        pairs += [(idx[k], idx[k + 1]) for k in range(0, len(idx) - 1, 2)]
    order = torch.randperm(len(pairs), generator=gen).tolist()
    return [pairs[k] for k in order[:n_pairs]]


def interpolation_codes(mu_a: Tensor, mu_b: Tensor, lambdas: Sequence[float] = LAMBDAS) -> Tensor:
    """Eq. 14: z[p, k] = (1 - lambda_k) mu_a[p] + lambda_k mu_b[p]; [P, D] x 2 -> [P, K, D]. Written
    as the two-term sum so that lambda = 0 and 1 give mu_a and mu_b exactly."""
    lam = torch.tensor(lambdas, dtype=mu_a.dtype, device=mu_a.device).view(1, -1, 1)
    return (1 - lam) * mu_a.unsqueeze(1) + lam * mu_b.unsqueeze(1)


@torch.no_grad()
def centres(model: Method, sentences: Sequence[Tensor], device: torch.device | str = "cpu") -> Tensor:
    """Posterior centres mu (`Posterior.mode`) of the sentences, [N, D] in their order; encoded in
    batches of one length each (no padding), as everywhere else."""
    order = sorted(range(len(sentences)), key=lambda i: (len(sentences[i]), i))
    out: list[Tensor | None] = [None] * len(sentences)
    start = 0
    while start < len(order):
        length = len(sentences[order[start]])
        stop = start
        while stop < len(order) and stop - start < ENCODE_BATCH and len(sentences[order[stop]]) == length:
            stop += 1
        chunk = order[start:stop]
        mu = model.encode(torch.stack([sentences[i] for i in chunk]).to(device)).mode
        for i, row in zip(chunk, mu):
            out[i] = row
        start = stop
    return torch.stack(out)


# --------------------------------------------------------------------------------------- Rouge-L
def _corpus_tokenizer():
    from rouge_score.tokenizers import Tokenizer

    class CorpusTokens(Tokenizer):
        """The corpus's own tokens: split on whitespace only (the corpus is whitespace-tokenised), no
        lower-casing and no stripping of non-alphanumerics (rouge-score's default does both)."""

        def tokenize(self, text):
            return text.split()

    return CorpusTokens()


class RougeL:
    """Rouge-L F1 by `rouge_score.rouge_scorer.RougeScorer(["rougeL"])` over token sequences, with the
    corpus tokenizer; identical (prediction, reference) pairs are scored once."""

    def __init__(self):
        from rouge_score.rouge_scorer import RougeScorer

        self.scorer = RougeScorer(["rougeL"], tokenizer=_corpus_tokenizer())
        self.cache: dict[tuple[tuple, tuple], float] = {}

    def __call__(self, prediction: Sequence, reference: Sequence) -> float:
        key = (tuple(prediction), tuple(reference))
        if key not in self.cache:
            text = [" ".join(map(str, words)) for words in key]
            self.cache[key] = self.scorer.score(text[1], text[0])["rougeL"].fmeasure  # score(target, prediction)
        return self.cache[key]


def rouge_l_f1(prediction: Sequence, reference: Sequence) -> float:
    """Rouge-L F1 of one prediction against one reference (sequences of tokens or token ids)."""
    return RougeL()(prediction, reference)


# --------------------------------------------------------------------------------------- the curve
@dataclass
class Interpolation:
    """Every decoded interpolant of the selected pairs: `endpoints[p]` = (a words, b words) as token
    ids, `decoded[p][k]` the words of s_{lambda_k}, `rouge_a`/`rouge_b` [P, K] their F1 to a and b,
    `ended` the fraction of rows that emitted </s>, the decoding effort (`steps` run, `rows`, tokens
    computed `row_steps`, `words` decoded) and `seconds` spent encoding, decoding and scoring."""

    lambdas: tuple[float, ...]
    endpoints: list[tuple[list[int], list[int]]]
    decoded: list[list[list[int]]]
    rouge_a: np.ndarray
    rouge_b: np.ndarray
    seed: int
    ended: float
    steps: int = 0
    rows: int = 0
    row_steps: int = 0
    words: int = 0
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def curve(self) -> np.ndarray:
        """C(lambda) = (R_a + R_b) / 2, [K]."""
        return (self.rouge_a.mean(0) + self.rouge_b.mean(0)) / 2

    @property
    def minimum(self) -> float:
        """min over lambda of C: the board's Rouge-L."""
        return float(self.curve.min())

    def record(self) -> dict:
        """What the evaluation record stores (JSON-able)."""
        curve = self.curve
        return {"lambdas": list(self.lambdas), "rouge_a": self.rouge_a.mean(0).tolist(),
                "rouge_b": self.rouge_b.mean(0).tolist(), "rouge": curve.tolist(), "minimum": self.minimum,
                "argmin_lambda": self.lambdas[int(curve.argmin())], "pairs": len(self.endpoints),
                "seed": self.seed, "ended": self.ended}


@torch.no_grad()
def interpolate(model: Method, sentences: Sequence[Tensor], pairs: list[tuple[int, int]], seed: int = 0,
                device: torch.device | str = "cpu", max_logits: int = 2**26,
                lambdas: Sequence[float] = LAMBDAS) -> Interpolation:
    """Decode Eq. 14 for every pair and lambda in batches of pairs x lambdas, and score each row.
    `sentences` hold <s> ... </s> (as a Split); `max_logits` bounds one decoding step's [rows, V]."""
    if not pairs:
        raise ValueError("interpolate needs at least one pair (select_pairs found none)")
    model.eval().to(device)
    clock = [time.perf_counter()]
    used = sorted({i for p in pairs for i in p})
    where = {i: k for k, i in enumerate(used)}
    mu = centres(model, [sentences[i] for i in used], device)
    _sync(mu.device, clock)
    ia = torch.tensor([where[a] for a, _ in pairs], device=mu.device)
    ib = torch.tensor([where[b] for _, b in pairs], device=mu.device)
    z = interpolation_codes(mu[ia], mu[ib], lambdas)  # [P, K, D]
    k = len(lambdas)
    # decoded shortest pairs first, so that the rows of one chunk end at about the same step
    order = sorted(range(len(pairs)), key=lambda p: (len(sentences[pairs[p][0]]), p))
    limits = torch.tensor([max_words(len(sentences[pairs[p][0]]) - 2) for p in order], device=mu.device)
    vocab = model.decoder.out.out_features
    out: Decoded = greedy_decode(model, z[order].flatten(0, 1), limits.repeat_interleave(k),
                                 max_rows=max(1, max_logits // vocab))
    words = out.words()  # the transfer to the host waits for the device
    clock.append(time.perf_counter())
    rows: list[list[int]] = [[]] * (len(pairs) * k)
    for slot, p in enumerate(order):
        rows[p * k:(p + 1) * k] = words[slot * k:(slot + 1) * k]
    endpoints = [(sentences[a][1:-1].tolist(), sentences[b][1:-1].tolist()) for a, b in pairs]
    decoded = [rows[p * k:(p + 1) * k] for p in range(len(pairs))]
    rouge = RougeL()
    rouge_a = np.array([[rouge(s, a) for s in row] for (a, _), row in zip(endpoints, decoded)])
    rouge_b = np.array([[rouge(s, b) for s in row] for (_, b), row in zip(endpoints, decoded)])
    clock.append(time.perf_counter())
    seconds = dict(zip(("encode", "decode", "rouge"), np.diff(clock).tolist()))
    return Interpolation(tuple(lambdas), endpoints, decoded, rouge_a, rouge_b, seed,
                         float(out.ended.float().mean()), out.steps, len(rows), out.row_steps,
                         int(out.lengths.sum()), seconds)


def _sync(device: torch.device, clock: list[float]) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    clock.append(time.perf_counter())


def interpolate_split(model: Method, split: Split, n_pairs: int, seed: int, device: torch.device | str = "cpu",
                      max_logits: int = 2**26) -> Interpolation | None:
    """The evaluator's entry: `n_pairs` pairs of `split` chosen by `seed`; None when the split has no
    two distinct sentences of equal length (or n_pairs is 0): Rouge-L is then left out of the record."""
    pairs = select_pairs(split.sentences, n_pairs, seed)
    return interpolate(model, split.sentences, pairs, seed, device, max_logits) if pairs else None


def pairs_or_error(split: Split, n_pairs: int, seed: int, dataset: str) -> list[tuple[int, int]]:
    """`select_pairs` for a user's request: every way of getting no pair is one clear BenchError."""
    if n_pairs < 1:
        raise BenchError(f"--pairs must be at least 1, got {n_pairs}")
    pairs = select_pairs(split.sentences, n_pairs, seed)
    if not pairs:
        raise BenchError(f"the test split of {dataset} ({len(split)} sentences) has no two different sentences "
                         "of equal length, so nothing can be interpolated (DG-VAE Eq. 14 pairs equal lengths); "
                         "use a dataset with a larger test split")
    return pairs


# --------------------------------------------------------------------------------------- text
def format_curve(label: str, record: dict) -> str:
    """A run's curve as four short lines (fits 80 columns): lambda, R_a, R_b and C."""
    head = f"{label}: Rouge-L {record['minimum']:.3f} (min of C at lambda {record['argmin_lambda']:g}), " \
           f"{record['pairs']:,} pairs, {100 * record['ended']:.0f}% of rows ended with </s>"

    def line(name, values):
        return f"  {name:<7}" + "".join(f"{v:>6.2f}" for v in values)

    return "\n".join([head, line("lambda", record["lambdas"]), line("to a", record["rouge_a"]),
                      line("to b", record["rouge_b"]), line("C", record["rouge"])])


def format_examples(interp: Interpolation, vocab: Vocab, count: int) -> str:
    """The first `count` pairs as text: a, each lambda's sentence with its F1 to a and b, then b."""
    blocks = []
    for p in range(min(count, len(interp.endpoints))):
        a, b = (" ".join(vocab.decode(words)) for words in interp.endpoints[p])
        lines = [f"  a: {a}"]
        for k, lam in enumerate(interp.lambdas):
            text = " ".join(vocab.decode(interp.decoded[p][k])) or "(empty)"
            lines.append(f"  {lam:.1f} [{interp.rouge_a[p, k]:.2f} {interp.rouge_b[p, k]:.2f}] {text}")
        lines.append(f"  b: {b}")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def curves_table(records: list[dict]) -> dict[str, list[float]]:
    """Mean and sample std (ddof 1; nan with one run) of C over several runs' records, per lambda."""
    curves = np.array([r["rouge"] for r in records], dtype=float)
    std = curves.std(0, ddof=1) if len(curves) > 1 else np.full(curves.shape[1], math.nan)
    return {"lambdas": list(records[0]["lambdas"]), "mean": curves.mean(0).tolist(), "std": std.tolist(),
            "minimum": [float(r["minimum"]) for r in records]}


# --------------------------------------------------------------------------------------- speed
def speed(method: str, n_pairs: int = 1000, backbone=None, vocab: int = 10_000, words: int = 10,
          device: str = "cpu", seed: int = 0) -> dict:
    """Time `interpolate` for `n_pairs` pairs (11 rows each) of random sentences of `words` words on an
    untrained `method` (its default setting) at `backbone` (default: the quick profile's). Untrained, no
    row emits </s>: every row runs to its limit 2 L + 10, the worst case. Tokens/s: tokens computed (one
    step of one row) over the decoding time. A function of its arguments, for `bench perf`."""
    from vae_collapse_bench.bench import registry
    from vae_collapse_bench.bench.config import PROFILES

    backbone = backbone or PROFILES["quick"].backbone
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    spec = registry.get(method)
    model = spec.cls(vocab, backbone, spec.resolve()).to(device).eval()
    body = torch.randint(4, vocab, (2 * n_pairs, words), generator=gen)
    frame = torch.tensor([BOS, EOS]).expand(2 * n_pairs, 2)
    sentences = list(torch.cat([frame[:, :1], body, frame[:, 1:]], 1))
    interp = interpolate(model, sentences, select_pairs(sentences, n_pairs, seed), seed, device)
    decode_s = interp.seconds["decode"]
    return {"pairs": len(interp.endpoints), "rows": interp.rows, "steps": interp.steps,
            "row_steps": interp.row_steps, "sentence_words": words, "decoded_words": interp.words,
            "ended": interp.ended,
            "tokens_per_s": interp.row_steps / decode_s, **{f"{k}_s": v for k, v in interp.seconds.items()},
            "total_s": sum(interp.seconds.values()), "method": method, "device": str(device), "vocab": vocab,
            "backbone": f"{backbone.emb_dim}/{backbone.enc_hidden}/{backbone.dec_hidden}/{backbone.latent_dim}",
            "threads": torch.get_num_threads()}
