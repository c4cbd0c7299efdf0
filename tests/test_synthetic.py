"""bench.synthetic: the sampler and log p(x|z) agree exactly, the corpus is reproducible byte for byte,
and its latent carries information (the true generator's MI bounds)."""

from __future__ import annotations

import itertools
import json
import math
from dataclasses import replace

import pytest
import torch
from vae_collapse_bench.bench import data, synthetic
from vae_collapse_bench.bench.synthetic import GeneratorConfig

SMALL = GeneratorConfig(seed=7, train=120, valid=30, test=30, vocab_size=50, mi_sentences=16, mi_samples=32)


def all_sentences(vocab_size: int, max_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Every word sequence of 1..max_len words, as (words [n, max_len] zero-padded, lengths [n])."""
    rows, lengths = [], []
    for n in range(1, max_len + 1):
        for seq in itertools.product(range(1, vocab_size + 1), repeat=n):
            rows.append(list(seq) + [0] * (max_len - n))
            lengths.append(n)
    return torch.tensor(rows), torch.tensor(lengths)


def test_log_prob_is_a_distribution_and_matches_the_sampler():
    cfg = GeneratorConfig(seed=3, vocab_size=3, max_len=3, z_scale=1.0)
    gen = synthetic.build_generator(cfg)
    words, lengths = all_sentences(3, 3)  # 3 + 9 + 27 sentences: the whole support
    z = torch.randn(1, cfg.latent_dim, generator=torch.Generator().manual_seed(0))
    p = synthetic.log_prob(gen, words, lengths, z.expand(len(words), -1)).exp()
    assert float(p.sum()) == pytest.approx(1.0, abs=1e-5)

    n = 20000
    drawn, _ = synthetic.sample(gen, z.expand(n, -1), torch.Generator().manual_seed(1))
    place = 4 ** torch.arange(3)  # words 1..3 and padding 0 as base-4 digits: a code per sentence
    codes = (words * place).sum(1)
    counts = (((drawn * place).sum(1)[:, None]) == codes[None, :]).sum(0)
    assert int(counts.sum()) == n
    assert (counts / n - p).abs().max() < 0.015  # binomial sd <= 0.0036


def test_sample_respects_length_cap_and_vocabulary():
    gen = synthetic.build_generator(SMALL)
    words, lengths = synthetic.sample(gen, torch.randn(500, SMALL.latent_dim), torch.Generator().manual_seed(2))
    assert int(lengths.min()) >= 1 and int(lengths.max()) <= SMALL.max_len
    for w, k in zip(words, lengths.tolist()):
        assert bool((w[:k] >= 1).all() and (w[:k] <= SMALL.vocab_size).all()) and not w[k:].any()


def test_pseudo_words_are_distinct_and_pronounceable():
    words = synthetic.pseudo_words(300, seed=1)
    assert len(set(words)) == 300 and all(w.isalpha() and w.islower() for w in words)
    assert words == synthetic.pseudo_words(300, seed=1) != synthetic.pseudo_words(300, seed=2)


def test_same_seed_gives_identical_bytes(tmp_path):
    a = synthetic.ensure(SMALL, tmp_path / "a")
    b = synthetic.ensure(SMALL, tmp_path / "b")
    names = sorted(p.name for p in a.iterdir())
    assert names == ["generator.json", "test.txt", "train.txt", "valid.txt"]
    assert all((a / n).read_bytes() == (b / n).read_bytes() for n in names)
    c = synthetic.ensure(replace(SMALL, seed=8), tmp_path / "c")
    assert (c / "train.txt").read_bytes() != (a / "train.txt").read_bytes()
    assert len((a / "valid.txt").read_text().splitlines()) == SMALL.valid


def test_split_streams_are_independent_of_other_sizes(tmp_path):
    a = synthetic.ensure(SMALL, tmp_path / "a")
    b = synthetic.ensure(replace(SMALL, train=60), tmp_path / "b")
    assert (a / "test.txt").read_bytes() == (b / "test.txt").read_bytes()
    assert (a / "valid.txt").read_bytes() == (b / "valid.txt").read_bytes()


def test_ensure_caches_and_regenerates_on_new_config(tmp_path):
    target = synthetic.ensure(SMALL, tmp_path / "synthetic")
    stamp = (target / "train.txt").stat().st_mtime_ns
    assert synthetic.ensure(SMALL, target) == target and (target / "train.txt").stat().st_mtime_ns == stamp
    synthetic.ensure(replace(SMALL, seed=9), target)
    assert synthetic.read_info(target)["config"]["seed"] == 9
    assert sorted(p.name for p in tmp_path.iterdir()) == ["synthetic"]  # no temp dirs left


def test_default_corpus_loads_and_its_latent_carries_information(tmp_path):
    corpus = data.load_corpus("synthetic", tmp_path)
    cfg = GeneratorConfig.from_dict(data.get_manifest("synthetic").generator)
    assert {s: len(corpus.splits[s]) for s in data.SPLITS} == cfg.sizes()
    assert corpus.family == "synthetic" and len(corpus.vocab) <= cfg.vocab_size + len(data.SPECIALS)

    mi = json.loads((tmp_path / "synthetic" / "generator.json").read_text())["mutual_information_nats"]
    assert mi["K"] == cfg.mi_samples and mi["log_K"] == pytest.approx(math.log(cfg.mi_samples), abs=1e-3)
    assert mi["infonce_lower"] > 1.0  # z clearly shapes the sentences
    assert mi["infonce_lower"] <= mi["log_K"] + 1e-6 and mi["prior_is_upper"] >= mi["infonce_lower"]

    stats = data.corpus_stats("synthetic", tmp_path)  # cached now: no regeneration
    assert stats["generator"]["mutual_information_nats"] == mi
    assert 5 < stats["splits"]["train"]["mean_length"] < cfg.max_len + 2


def test_unknown_generator_parameter_is_rejected():
    with pytest.raises(ValueError, match="unknown generator parameter"):
        GeneratorConfig.from_dict({"seed": 1, "temperature": 2.0})
