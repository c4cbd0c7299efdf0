"""The embedded default corpus: text sampled from a seeded latent-variable LSTM, no download.

The true generator is a randomly initialised (seeded) one-layer LSTM language model whose initial
state and every input step are conditioned on a latent z ~ N(0, I_D):

    h_0 = tanh(A_h z),  c_0 = A_c z
    [i, f, g, o]_t = W_x e(x_{t-1}) + W_z z + W_h h_{t-1} + b          (x_0 = <s>)
    c_t = sigmoid(f) * c_{t-1} + sigmoid(i) * tanh(g),   h_t = sigmoid(o) * tanh(c_t)
    p(x_t | x_<t, z) = softmax(W_o h_t + U_o z + b_o)

over a vocabulary of pronounceable pseudo-words plus </s>. z enters with large weights so that it
changes the sentences a lot: a VAE that learns this corpus well has to use its latent. `</s>` is
forbidden at the first step (no empty sentences) and forced after `max_len` words, and log p(x|z)
below applies the same two rules, so it is the exact likelihood of the sampler.

Because the generator is known, the corpus comes with the true mutual information I(x; z), bracketed
with K importance samples per sentence x_n (true latent z_n, prior draws z'_{n,k}):

    lower (InfoNCE) = E_n[ log p(x_n|z_n) - log (1/K) (p(x_n|z_n) + sum_{k=1}^{K-1} p(x_n|z'_{n,k})) ]
    upper (prior IS) = E_n[ log p(x_n|z_n) - log (1/K) sum_{k=1}^{K} p(x_n|z'_{n,k}) ]

The lower bound holds for every K and never exceeds log K. The upper one holds in expectation,
because E log (1/K) sum_k p(x|z'_k) <= log p(x) (Jensen); both tighten as K grows.

Everything is drawn from torch.Generator objects seeded from the manifest's seed, so the same seed
gives byte-identical files on the same machine. Each split has its own stream, so changing the
train size leaves valid and test unchanged.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
from torch import Tensor

EOS_ID = 0  # generator-internal id; also the input row used for <s> (</s> is never an input)
SPLITS = ("train", "valid", "test")
INFO_FILE = "generator.json"


@dataclass(frozen=True)
class GeneratorConfig:
    """Parameters of the true generator and of the corpus drawn from it (the manifest's [generator]).

    train/valid/test: sentences per split. vocab_size: pseudo-words (</s> comes on top). latent_dim:
    D of z. emb_dim, hidden_dim: the LSTM's sizes. max_len: words per sentence at most. z_scale: the
    scale of every weight that reads z; larger means sentences depend more on z (higher I(x;z), but
    looser bounds once I(x;z) nears log K). weight_scale: multiplies the 1/sqrt(fan_in) scale of the
    recurrent weights. out_scale: spread of the output logits (peakier word choice when larger).
    zipf: exponent of the unigram bias b_o, so a few words are frequent as in real text. eos_bias,
    eos_slope: the </s> logit is eos_bias + eos_slope * t at position t; they set the length
    distribution. mi_sentences, mi_samples: N and K of the MI bounds.
    """

    seed: int = 1234
    train: int = 5000
    valid: int = 1000
    test: int = 1000
    vocab_size: int = 300
    latent_dim: int = 4
    emb_dim: int = 16
    hidden_dim: int = 32
    max_len: int = 30
    z_scale: float = 0.5
    weight_scale: float = 1.0
    out_scale: float = 4.0
    zipf: float = 1.0
    eos_bias: float = -2.0
    eos_slope: float = 0.3
    mi_sentences: int = 128
    mi_samples: int = 256

    @classmethod
    def from_dict(cls, table: dict) -> GeneratorConfig:
        known = {f.name for f in fields(cls)}
        extra = sorted(set(table) - known)
        if extra:
            raise ValueError(f"unknown generator parameter(s) {extra}; known: {sorted(known)}")
        return cls(**table)

    def sizes(self) -> dict[str, int]:
        return {"train": self.train, "valid": self.valid, "test": self.test}


@dataclass(frozen=True)
class Generator:
    """Weights of the true generator (see the module docstring for the equations)."""

    emb: Tensor  # [V+1, E]; row 0 is the <s> input
    a_h: Tensor  # [D, H]
    a_c: Tensor  # [D, H]
    w_x: Tensor  # [E, 4H]
    w_z: Tensor  # [D, 4H]
    w_h: Tensor  # [H, 4H]
    b: Tensor  # [4H]
    w_o: Tensor  # [H, V+1]
    u_o: Tensor  # [D, V+1]
    b_o: Tensor  # [V+1]
    eos_slope: float
    max_len: int


def sub_seed(seed: int, tag: str) -> int:
    """An independent, platform-stable seed per purpose (Python's hash() is salted per process)."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{tag}".encode()).digest()[:8], "little") >> 1


def pseudo_words(n: int, seed: int) -> list[str]:
    """n distinct pronounceable words built from consonant-vowel(-consonant) syllables.

    Sorted by length (stable), so the Zipf bias makes the short words frequent, as in real text.
    """
    rng = random.Random(sub_seed(seed, "words"))
    onsets = list("bdfgklmnprstvz") + ["ch", "sh", "th", "br", "tr", "pl"]
    vowels = ["a", "e", "i", "o", "u", "ai", "ou"]
    codas = ["", "", "", "n", "r", "s", "l", "m", "k"]
    words: list[str] = []
    seen: set[str] = set()
    while len(words) < n:
        syllables = rng.choice([1, 1, 2, 2, 2, 3])
        word = "".join(rng.choice(onsets) + rng.choice(vowels) + rng.choice(codas) for _ in range(syllables))
        if word not in seen:
            seen.add(word)
            words.append(word)
    return sorted(words, key=len)


def build_generator(cfg: GeneratorConfig) -> Generator:
    """Draw the generator's weights from the seed.

    Recurrent weights get a 1/sqrt(fan_in) scale (times weight_scale) so the LSTM neither saturates
    nor dies; every z weight gets z_scale, which is what makes z matter.
    """
    g = torch.Generator().manual_seed(sub_seed(cfg.seed, "weights"))
    V1, E, H, D = cfg.vocab_size + 1, cfg.emb_dim, cfg.hidden_dim, cfg.latent_dim

    def randn(*shape: int, scale: float) -> Tensor:
        return torch.randn(*shape, generator=g) * scale

    ws = cfg.weight_scale
    ranks = torch.arange(1, V1, dtype=torch.float32)
    b_o = torch.cat([torch.tensor([cfg.eos_bias]), -cfg.zipf * torch.log(ranks)])
    return Generator(
        emb=randn(V1, E, scale=1.0),
        a_h=randn(D, H, scale=cfg.z_scale),
        a_c=randn(D, H, scale=cfg.z_scale),
        w_x=randn(E, 4 * H, scale=ws / math.sqrt(E)),
        w_z=randn(D, 4 * H, scale=cfg.z_scale),
        w_h=randn(H, 4 * H, scale=ws / math.sqrt(H)),
        b=torch.zeros(4 * H),
        w_o=randn(H, V1, scale=cfg.out_scale / math.sqrt(H)),
        u_o=randn(D, V1, scale=cfg.z_scale),
        b_o=b_o,
        eos_slope=cfg.eos_slope,
        max_len=cfg.max_len,
    )


def _initial_state(gen: Generator, z: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(h, c, z's gate input, z's output bias): everything z contributes, computed once."""
    return torch.tanh(z @ gen.a_h), z @ gen.a_c, z @ gen.w_z + gen.b, z @ gen.u_o + gen.b_o


def _step(gen: Generator, inp: Tensor, h: Tensor, c: Tensor, z_gates: Tensor) -> tuple[Tensor, Tensor]:
    i, f, gg, o = (gen.emb[inp] @ gen.w_x + h @ gen.w_h + z_gates).chunk(4, dim=-1)
    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(gg)
    return torch.sigmoid(o) * torch.tanh(c), c


def _logits(gen: Generator, h: Tensor, z_out: Tensor, t: int) -> Tensor:
    """Logits at output position t (0-based): no </s> first, only </s> after max_len words.

    The </s> logit grows by eos_slope per position, so lengths have a mode instead of being geometric.
    """
    logits = h @ gen.w_o + z_out
    logits[:, EOS_ID] += gen.eos_slope * t
    if t == 0:
        logits[:, EOS_ID] = -math.inf
    elif t == gen.max_len:
        keep = logits[:, EOS_ID].clone()
        logits.fill_(-math.inf)
        logits[:, EOS_ID] = keep
    return logits


@torch.no_grad()
def sample(gen: Generator, z: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """Ancestral sampling for all rows of z [B, D] at once: one loop over time, none over rows.

    Inverse-CDF draws from uniforms u [B, max_len+1] drawn up front, so each sentence is a function
    of its own row of z and u only. Finished rows are dropped from the batch, so the cost is
    proportional to the tokens drawn. Returns words [B, max_len] (ids 1..V, 0 after the end) and
    lengths [B] (words before </s>).
    """
    B = z.shape[0]
    uniforms = torch.rand(B, gen.max_len + 1, generator=generator)
    words = torch.zeros(B, gen.max_len, dtype=torch.long)
    lengths = torch.full((B,), gen.max_len, dtype=torch.long)
    rows = torch.arange(B)  # the rows still being written, in batch order
    h, c, z_gates, z_out = _initial_state(gen, z)
    inp = torch.full((B,), EOS_ID, dtype=torch.long)
    for t in range(gen.max_len + 1):
        h, c = _step(gen, inp, h, c, z_gates)
        cdf = torch.softmax(_logits(gen, h, z_out, t), dim=-1).cumsum(-1)
        u = uniforms[rows, t, None] * cdf[:, -1:]
        tok = torch.searchsorted(cdf, u).squeeze(1).clamp_max(cdf.shape[1] - 1)
        ended = tok == EOS_ID
        lengths[rows[ended]] = t
        if t < gen.max_len:
            words[rows, t] = tok
        go = ~ended
        if not go.any():
            break
        rows, inp, h, c, z_gates, z_out = rows[go], tok[go], h[go], c[go], z_gates[go], z_out[go]
    return words, lengths


@torch.no_grad()
def log_prob(gen: Generator, words: Tensor, lengths: Tensor, z: Tensor) -> Tensor:
    """Exact log p(x|z) in nats of rows words [B, T] with lengths [B] under latents z [B, D] -> [B].

    Teacher forcing: inputs <s> x_1 .. x_{L}, targets x_1 .. x_L then </s> at position L. Rows
    whose </s> has been scored are dropped, as in `sample`.
    """
    B, T = words.shape
    total = torch.zeros(B)
    rows = torch.arange(B)
    h, c, z_gates, z_out = _initial_state(gen, z)
    inp = torch.full((B,), EOS_ID, dtype=torch.long)
    for t in range(gen.max_len + 1):
        h, c = _step(gen, inp, h, c, z_gates)
        logits = _logits(gen, h, z_out, t)
        done = lengths[rows] == t
        target = words[rows, t] if t < T else torch.zeros_like(rows)
        target = torch.where(done, EOS_ID, target)
        total[rows] += logits.gather(1, target[:, None]).squeeze(1) - torch.logsumexp(logits, -1)
        go = ~done
        if not go.any():
            break
        rows, inp, h, c, z_gates, z_out = rows[go], target[go], h[go], c[go], z_gates[go], z_out[go]
    return total


@torch.no_grad()
def mi_bounds(gen: Generator, cfg: GeneratorConfig, chunk_rows: int = 32768) -> dict:
    """InfoNCE lower and prior-IS upper bounds of I(x; z) in nats (formulas in the module docstring).

    Fresh sentences (their own seed stream), N = mi_sentences, K = mi_samples prior draws each;
    N*K teacher-forced rows, scored in chunks to bound memory.
    """
    g = torch.Generator().manual_seed(sub_seed(cfg.seed, "mi"))
    N, K, D = cfg.mi_sentences, cfg.mi_samples, cfg.latent_dim
    z_true = torch.randn(N, D, generator=g)
    words, lengths = sample(gen, z_true, g)
    # Sorted by length, each chunk of rows stops at about its own longest sentence.
    order = lengths.argsort(stable=True)
    z_true, words, lengths = z_true[order], words[order], lengths[order]
    z_prior = torch.randn(N, K, D, generator=g)
    lp_true = log_prob(gen, words, lengths, z_true)
    rows_w = words.repeat_interleave(K, dim=0)
    rows_l = lengths.repeat_interleave(K, dim=0)
    rows_z = z_prior.reshape(N * K, D)
    lp_prior = torch.cat([
        log_prob(gen, rows_w[s:s + chunk_rows], rows_l[s:s + chunk_rows], rows_z[s:s + chunk_rows])
        for s in range(0, N * K, chunk_rows)
    ]).reshape(N, K)
    log_k = math.log(K)
    lower = lp_true - (torch.logsumexp(torch.cat([lp_true[:, None], lp_prior[:, : K - 1]], 1), 1) - log_k)
    upper = lp_true - (torch.logsumexp(lp_prior, 1) - log_k)
    return {
        "infonce_lower": round(float(lower.mean()), 4),
        "prior_is_upper": round(float(upper.mean()), 4),
        "infonce_lower_stderr": round(float(lower.std() / math.sqrt(N)), 4),
        "prior_is_upper_stderr": round(float(upper.std() / math.sqrt(N)), 4),
        "K": K,
        "N": N,
        "log_K": round(log_k, 4),
        "mean_log_p_x_given_z": round(float(lp_true.mean()), 4),
    }


def to_lines(words: Tensor, lengths: Tensor, vocab: list[str]) -> list[str]:
    """Sentences as space-joined text lines (vocab[i-1] is word id i)."""
    rows = words.tolist()
    return [" ".join(vocab[i - 1] for i in row[:n]) for row, n in zip(rows, lengths.tolist())]


@contextmanager
def _one_thread():
    """Run torch on one thread, then restore the caller's setting.

    The generator's matrices are tiny: under load, intra-op threads contend and run several times
    slower than one, and one thread makes the float results independent of the machine's core count.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def generate(cfg: GeneratorConfig) -> tuple[dict[str, list[str]], dict]:
    """The corpus ({split: lines}) and its generator.json record (config, sizes, MI bounds)."""
    with _one_thread():
        return _generate(cfg)


def _generate(cfg: GeneratorConfig) -> tuple[dict[str, list[str]], dict]:
    gen = build_generator(cfg)
    vocab = pseudo_words(cfg.vocab_size, cfg.seed)
    splits: dict[str, list[str]] = {}
    mean_len: dict[str, float] = {}
    for split, n in cfg.sizes().items():
        g = torch.Generator().manual_seed(sub_seed(cfg.seed, f"split:{split}"))
        words, lengths = sample(gen, torch.randn(n, cfg.latent_dim, generator=g), g)
        splits[split] = to_lines(words, lengths, vocab)
        mean_len[split] = round(float(lengths.float().mean()) + 2, 4) if n else 0.0
    info = {
        "config": asdict(cfg),
        "sizes": cfg.sizes(),
        "mean_length_with_boundaries": mean_len,
        "mutual_information_nats": mi_bounds(gen, cfg),
    }
    return splits, info


def write(cfg: GeneratorConfig, directory: Path) -> None:
    """Write {train,valid,test}.txt and generator.json into an existing directory."""
    splits, info = generate(cfg)
    for split, lines in splits.items():
        (directory / f"{split}.txt").write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    (directory / INFO_FILE).write_text(json.dumps(info, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def read_info(directory: Path) -> dict | None:
    try:
        return json.loads((directory / INFO_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def is_current(cfg: GeneratorConfig, directory: Path) -> bool:
    """True when directory holds a complete corpus made with exactly this config."""
    info = read_info(directory)
    return (
        info is not None
        and info.get("config") == asdict(cfg)
        and all((directory / f"{s}.txt").is_file() for s in SPLITS)
    )


def ensure(cfg: GeneratorConfig, directory: Path) -> Path:
    """Generate the corpus into `directory` unless it is already there with this config.

    Atomic: written into a temp dir beside it, then renamed. A stale corpus (other config) is moved
    aside first. If another process wins the race, its result (same config, same bytes) is kept.
    """
    if is_current(cfg, directory):
        return directory
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=directory.parent, prefix=f".{directory.name}-new-"))
    try:
        write(cfg, tmp)
        if directory.exists() and not is_current(cfg, directory):
            stale = Path(tempfile.mkdtemp(dir=directory.parent, prefix=f".{directory.name}-old-"))
            os.replace(directory, stale / "corpus")
            shutil.rmtree(stale, ignore_errors=True)
        try:
            os.replace(tmp, directory)
        except OSError:
            if not is_current(cfg, directory):  # lost a race to a different config: surface it
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return directory


__all__ = [
    "GeneratorConfig", "Generator", "build_generator", "pseudo_words", "sample", "log_prob", "mi_bounds",
    "generate", "write", "ensure", "read_info", "is_current", "sub_seed",
]
