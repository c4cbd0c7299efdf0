"""Interpolation (DG-VAE Eq. 14): greedy decoding, pair selection, Rouge-L, the curve, the board's
Rouge-L column, and the commands `bench interpolate` and `bench plot interpolation`."""

import dataclasses
import math

import numpy as np
import pytest
import torch
from helpers import tiny_backbone
from vae_collapse_bench.bench import registry
from vae_collapse_bench.bench.data import BOS, EOS, Split, Vocab, encode_split
from vae_collapse_bench.bench.decode import greedy_decode
from vae_collapse_bench.bench.errors import BenchError
from vae_collapse_bench.bench.interpolate import (
    LAMBDAS,
    Interpolation,
    curves_table,
    interpolate,
    interpolation_codes,
    max_words,
    pairs_or_error,
    rouge_l_f1,
    select_pairs,
)

V = 9
BB = tiny_backbone(latent_dim=3, hidden=10, dec_dropout_in=0.0, dec_dropout_out=0.0)


def tiny_model(method: str = "vae", seed: int = 0, scale: float = 1.5):
    """A float64 model whose weights are large enough (N(0, scale^2)) that greedy choices are clear-cut
    and its rows both end with </s> and run into their limit."""
    torch.manual_seed(seed)
    spec = registry.get(method)
    model = spec.cls(V, BB, spec.resolve()).double()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, scale)
    return model.eval()


def reference_decode(model, z: torch.Tensor, limit: int) -> tuple[list[int], bool]:
    """One row, step by step, recomputing the teacher-forced logits of the whole prefix each step
    (Method.decoder_logits): the definition greedy_decode must reproduce."""
    prefix, words = [BOS], []
    while len(words) < limit:
        y = int(model.decoder_logits(torch.tensor([prefix]), z[None])[0, -1].argmax())
        if y == EOS:
            return words, True
        words.append(y)
        prefix.append(y)
    return words, False


# --- Rouge-L ---------------------------------------------------------------------------------------
def test_rouge_l_of_identical_sentences_is_1_and_of_disjoint_ones_0():
    assert rouge_l_f1(["the", "cat", "sat"], ["the", "cat", "sat"]) == 1.0
    assert rouge_l_f1(["the", "cat"], ["a", "dog", "ran"]) == 0.0
    assert rouge_l_f1([], ["a"]) == 0.0 and rouge_l_f1([5, 6], [5, 6]) == 1.0


def test_rouge_l_is_the_lcs_f1_on_the_corpus_tokens():
    # LCS("a b c d", "a c e") = 2: P = 2/4, R = 2/3, F = 2PR / (P + R) = 4/7
    assert rouge_l_f1("a b c d".split(), "a c e".split()) == pytest.approx(4 / 7, abs=1e-12)
    # the corpus's tokens as they are: no lower-casing, punctuation and <unk> are tokens
    # (rouge-score's default tokenizer would give 1.0 for the first and 0.0 for the second)
    assert rouge_l_f1(["The", "Cat"], ["the", "cat"]) == 0.0
    assert rouge_l_f1([",", "<unk>", "."], [",", "<unk>", "."]) == 1.0


# --- pairs and Eq. 14 --------------------------------------------------------------------------------
def make_split(lines: list[str]) -> tuple[Split, Vocab]:
    tokens = [line.split() for line in lines]
    vocab = Vocab.build(tokens)
    return encode_split("test", tokens, None, vocab), vocab


LINES = ["a b c", "b c a", "c c c", "a b c", "a", "b", "a b", "c a b c", "b b b b", "c", "a a", "b c"]


def test_pairs_are_distinct_sentences_of_equal_length_chosen_by_the_seed():
    split, _ = make_split(LINES)
    pairs = select_pairs(split.sentences, 100, seed=0)
    assert pairs == select_pairs(split.sentences, 100, seed=0)
    # lengths 3: three distinct ("a b c" twice) -> 1 pair; 1: three -> 1; 2: three -> 1; 4: two -> 1
    assert len(pairs) == 4
    for i, j in pairs:
        a, b = split.sentences[i], split.sentences[j]
        assert len(a) == len(b) and not torch.equal(a, b)
    assert len({i for p in pairs for i in p}) == 8
    assert select_pairs(split.sentences, 2, seed=0) == pairs[:2]
    others = {tuple(select_pairs(split.sentences, 100, seed=s)) for s in range(10)}
    assert len(others) > 1  # the seed chooses


def test_no_equal_length_pair_and_zero_pairs_are_clear_errors():
    split, _ = make_split(["a", "a b", "a b c", "a a", "a"])  # "a" twice: the same sentence, no pair
    assert select_pairs(split.sentences[:3], 10, 0) == []
    with pytest.raises(BenchError, match="no two different sentences of equal length"):
        pairs_or_error(Split("test", split.sentences[:3]), 10, 0, "tiny")
    with pytest.raises(BenchError, match="--pairs must be at least 1"):
        pairs_or_error(split, 0, 0, "tiny")


def test_eq_14_reaches_both_endpoints_exactly():
    gen = torch.Generator().manual_seed(0)
    mu_a, mu_b = torch.randn(4, 3, generator=gen), torch.randn(4, 3, generator=gen)
    z = interpolation_codes(mu_a, mu_b)
    assert z.shape == (4, 11, 3) and LAMBDAS[5] == 0.5
    assert torch.equal(z[:, 0], mu_a) and torch.equal(z[:, -1], mu_b)
    torch.testing.assert_close(z[:, 5], (mu_a + mu_b) / 2)
    torch.testing.assert_close(z[:, 3], 0.7 * mu_a + 0.3 * mu_b)


# --- greedy decoding ---------------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["vae", "skip-vae", "vmf-vae"])
def test_batched_greedy_decoding_equals_a_step_by_step_reference(method):
    model = tiny_model(method)
    z = torch.randn(24, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    if method == "vmf-vae":
        z = z / z.norm(dim=-1, keepdim=True)
    limits = torch.tensor([1, 2, 3, 5, 8, 12] * 4)
    out = greedy_decode(model, z, limits, max_rows=7)  # chunks of 7, 7, 7, 3 rows
    reference = [reference_decode(model, z[r], int(limits[r])) for r in range(len(z))]
    assert out.words() == [words for words, _ in reference]
    assert out.ended.tolist() == [ended for _, ended in reference]
    assert 0 < sum(out.ended.tolist()) < len(z)  # both kinds of ending are exercised
    assert (out.lengths <= limits).all()


def test_greedy_decoding_refuses_a_model_in_training_mode():
    with pytest.raises(ValueError, match="eval mode"):
        greedy_decode(tiny_model().train(), torch.zeros(1, 3, dtype=torch.float64), 3)


def test_lambda_0_and_1_decode_the_same_as_decoding_mu_a_and_mu_b():
    model = tiny_model("vae")
    split, _ = make_split(LINES)
    sentences = [s for s in split.sentences]
    pairs = select_pairs(sentences, 10, seed=3)
    interp = interpolate(model, sentences, pairs, seed=3)
    assert len(interp.decoded) == len(pairs) and all(len(row) == 11 for row in interp.decoded)
    for p, (i, j) in enumerate(pairs):
        for k, end in ((0, i), (-1, j)):
            mu = model.encode(sentences[end][None]).mean
            alone = greedy_decode(model, mu, max_words(len(sentences[end]) - 2)).words()[0]
            assert interp.decoded[p][k] == alone
    assert interp.endpoints[0] == (sentences[pairs[0][0]][1:-1].tolist(), sentences[pairs[0][1]][1:-1].tolist())


def test_the_curve_is_the_mean_rouge_to_both_endpoints_and_its_minimum():
    a, b = [1, 2, 3], [4, 5, 6]
    decoded = [[[1, 2, 3], [1, 2, 5], [4, 5, 6]]]  # lambda 0, 0.5, 1: a, a mixed sentence, b
    rouge = lambda s, r: rouge_l_f1(s, r)  # noqa: E731
    ra = np.array([[rouge(s, a) for s in decoded[0]]])
    rb = np.array([[rouge(s, b) for s in decoded[0]]])
    interp = Interpolation((0.0, 0.5, 1.0), [(a, b)], decoded, ra, rb, seed=0, ended=1.0)
    # F([1,2,5], a) = 2/3 and F([1,2,5], b) = 1/3: C = (1 + 0)/2, (2/3 + 1/3)/2, (0 + 1)/2
    np.testing.assert_allclose(interp.curve, [0.5, 0.5, 0.5])
    ra[0, 1], rb[0, 1] = 0.2, 0.0
    interp = Interpolation((0.0, 0.5, 1.0), [(a, b)], decoded, ra, rb, seed=0, ended=1.0)
    assert interp.minimum == pytest.approx(0.1) and interp.record()["argmin_lambda"] == 0.5


def test_curves_table_is_the_mean_and_sample_std_over_runs():
    records = [{"lambdas": [0, 1], "rouge": [0.2, 0.4], "minimum": 0.2},
               {"lambdas": [0, 1], "rouge": [0.4, 0.8], "minimum": 0.4}]
    table = curves_table(records)
    np.testing.assert_allclose(table["mean"], [0.3, 0.6])
    np.testing.assert_allclose(table["std"], [math.sqrt(0.02), math.sqrt(0.08)])
    assert all(math.isnan(s) for s in curves_table(records[:1])["std"])


# --- the evaluator and the board ---------------------------------------------------------------------
def test_the_evaluator_stores_the_curve_and_its_minimum_as_rouge_l():
    from vae_collapse_bench.bench.config import Evaluation
    from vae_collapse_bench.bench.evaluate import evaluate, nonfinite_metrics

    model = tiny_model("vae", seed=4).float()  # one whose interpolants vary and share words with the ends
    split, _ = make_split(LINES)
    ev = Evaluation(ll_samples_per_component=2, iw_samples=3, mi_samples=2, cu_grid_points=101,
                    interpolation_pairs=3, interpolation_seed=5)
    result = evaluate(model, split, ev, seed=0)
    record = result.interpolation
    assert record["pairs"] == 3 == result.sizes["interpolation_pairs"] and record["seed"] == 5
    assert result.metrics["Rouge-L"] == record["minimum"] == min(record["rouge"])
    assert max(record["rouge"]) > 0  # the model decodes words: the comparison below is not of zeros
    again = interpolate(model, split.sentences, select_pairs(split.sentences, 3, 5), 5).record()
    assert again == record
    none = evaluate(model, split, dataclasses.replace(ev, interpolation_pairs=0), seed=0)
    assert "Rouge-L" not in none.metrics and none.interpolation is None and not nonfinite_metrics(none)


# --- the commands ------------------------------------------------------------------------------------
def bench(capsys, *argv):
    from vae_collapse_bench.bench.cli import main

    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_interpolate_board_and_plot_from_stored_smoke_runs(bench_env, capsys):
    import optuna
    from vae_collapse_bench.bench.store import open_storage

    where = ["--dataset", "synthetic", "--profile", "smoke"]
    assert bench(capsys, "run", "--methods", "vae", *where, "--quiet")[0] == 0
    (trial,) = optuna.load_study(study_name="runs/synthetic/smoke",
                                 storage=open_storage(None, bench_env / "results")).get_trials()
    record = trial.user_attrs["interpolation"]
    assert trial.user_attrs["metrics"]["Rouge-L"] == record["minimum"] and record["pairs"] == 16

    code, out, _ = bench(capsys, "leaderboard", *where, "--format", "csv")
    assert code == 0 and "Rouge-L_mean" in out.splitlines()[0]
    code, out, _ = bench(capsys, "leaderboard", *where)
    assert code == 0 and "Rouge-L" in out.splitlines()[0]

    # the same pairs and seed as the evaluator: the stored curve again, from the checkpoint
    code, out, _ = bench(capsys, "interpolate", *where, "--methods", "vae", "--show", "2")
    assert code == 0 and out.startswith(f"vae[-] seed 0: Rouge-L {record['minimum']:.3f} ")
    assert f"  {'C':<7}" + "".join(f"{v:>6.2f}" for v in record["rouge"]) in out
    assert sum(line.startswith("  a: ") for line in out.splitlines()) == 2
    code, out, err = bench(capsys, "interpolate", *where, "--methods", "vae", "--pairs", "100000")
    assert code == 0 and "fewer than the 100,000 asked for" in err

    code, out, _ = bench(capsys, "plot", "interpolation", *where, "--out", str(bench_env / "plots"))
    files = sorted((bench_env / "plots").iterdir())
    assert code == 0 and [f.name for f in files] == ["interpolation-synthetic-smoke.png",
                                                    "interpolation-synthetic-smoke.svg"]
    first = [f.read_bytes() for f in files]
    assert all(len(b) > 1000 for b in first)
    bench(capsys, "plot", "interpolation", *where, "--out", str(bench_env / "plots"))
    assert [f.read_bytes() for f in files] == first  # the same store draws the same bytes


BAD_REQUESTS = [
    (["--methods", "vae", "--pairs", "0"], "--pairs must be at least 1, got 0"),
    (["--methods", "vae", "--show", "-1"], "--show must be 0 or more"),
    (["--methods", "vae", "--seed", "-3"], "--seed must be an integer from 0"),
    (["--methods", "vea"], "unknown method 'vea'"),
    (["--methods", "bn-vae"], "no stored checkpoint of 'bn-vae' on synthetic / smoke"),
    (["--methods", "vae", "--profile", "quick"], "no runs stored for dataset 'synthetic' and profile 'quick'"),
]


def test_interpolate_refuses_bad_requests_with_one_clear_error(bench_env, capsys):
    assert bench(capsys, "run", "--methods", "vae", "--dataset", "synthetic", "--profile", "smoke", "--quiet")[0] == 0
    for argv, message in BAD_REQUESTS:
        code, _, err = bench(capsys, "interpolate", "--dataset", "synthetic", "--profile", "smoke", *argv)
        assert code == 2 and err.startswith("error: ") and message in err and len(err.splitlines()) == 1, err
    code, _, err = bench(capsys, "plot", "interpolation", "--dataset", "synthetic", "--profile", "smoke",
                         "--methods", "bn-vae", "--out", str(bench_env / "plots"))
    assert code == 2 and "no interpolation curves stored" in err
