"""bench.evaluate.evaluate end to end, on models whose every metric is known in closed form."""

import math

import pytest
import torch
from helpers import tiny_backbone
from scipy.special import ive
from vae_collapse_bench.bench import metrics, registry
from vae_collapse_bench.bench.config import Backbone, Evaluation
from vae_collapse_bench.bench.data import Split, Vocab, encode_split, length_batches
from vae_collapse_bench.bench.evaluate import EvalResult, evaluate, nonfinite_metrics
from vae_collapse_bench.bench.model import GaussianMethod
from vae_collapse_bench.bench.posterior import DiagGaussian, Posterior, VonMisesFisher

D = 4
BB = tiny_backbone(latent_dim=D)
EV = Evaluation(ll_samples_per_component=3, iw_samples=5, mi_samples=2, cu_grid_points=801, batch_size=2)

# 10 sentences of 1, 2, 3 and 5 words: four length buckets, and with batch_size 2 some buckets give
# several batches and one gives a batch of 1, so per-batch sums and per-sentence averages differ.
TEXT = ["a b c", "b", "c c a", "a a b c d", "d a", "b b b", "e", "c d e a b", "a", "d d c"]


def make_split() -> tuple[Split, Vocab]:
    tokens = [line.split() for line in TEXT]
    vocab = Vocab.build(tokens)
    return encode_split("test", tokens, None, vocab), vocab


class UnigramLM(GaussianMethod):
    """A decoder that ignores z: log p(x|z) = sum_t log pi[x_t] over the predicted tokens x[:, 1:]
    (</s> counted, <s> not), the same for every z. With the encoder's output layer zeroed,
    q(z|x) = N(loc_shift, exp(logvar_shift) I) for every x."""

    loc_shift, logvar_shift = 0.0, 0.0

    def build_extras(self, vocab_size, backbone):
        self.register_buffer("log_pi", torch.zeros(vocab_size))

    def posterior(self, h):
        loc, logvar = h.chunk(2, dim=-1)
        return DiagGaussian(loc + self.loc_shift, logvar + self.logvar_shift)

    def log_px_z(self, x, z, max_rows=None):
        return self.log_pi[x[:, 1:]].sum(-1).expand(z.shape[0], -1)


def unigram_model(vocab_size: int, loc_shift: float = 0.0, logvar_shift: float = 0.0) -> UnigramLM:
    torch.manual_seed(0)
    model = UnigramLM(vocab_size, BB)
    model.loc_shift, model.logvar_shift = loc_shift, logvar_shift
    with torch.no_grad():
        model.log_pi.copy_(torch.log_softmax(torch.randn(vocab_size), 0))
        model.encoder.out.weight.zero_()  # no bias: the encoder emits exactly 0
    return model


def exact_log_likelihoods(model: UnigramLM, split: Split) -> list[float]:
    log_pi = model.log_pi.double()
    return [float(log_pi[s[1:]].sum()) for s in split.sentences]


def test_prior_equal_posterior_gives_every_metric_in_closed_form():
    # q(z|x) = N(0, I) = p(z) for every x: the mixture proposal and the IW proposal are exact, so
    # priorLL = postLL = log p(x) and IW-NLL = -log p(x) for any K; identical posteriors: MI = 0,
    # AU = 0, q_agg = N(0, 1) in every dim: CU = D; KL = 0.
    split, vocab = make_split()
    model = unigram_model(len(vocab))
    ll = exact_log_likelihoods(model, split)
    n, tokens = len(split), split.n_predicted_tokens()
    batches = []
    result = evaluate(model, split, EV, seed=3, on_batch=lambda i, total: batches.append((i, total)))
    m = result.metrics
    assert len(batches) == len(length_batches(split, EV.batch_size)) == 6
    assert result.sizes["N"] == n == 10 and result.sizes["tokens"] == tokens == 37
    mean_ll = sum(ll) / n
    assert m["priorLL"] == pytest.approx(mean_ll, abs=1e-5)
    assert m["postLL"] == pytest.approx(mean_ll, abs=1e-5)
    assert m["IW-NLL"] == pytest.approx(-mean_ll, abs=1e-5)
    assert m["PPL"] == pytest.approx(math.exp(-sum(ll) / tokens), rel=1e-6)
    assert m["KL"] == 0.0
    assert m["MI"] == pytest.approx(0.0, abs=1e-5)
    assert m["AU"] == 0.0
    assert m["CU"] == D
    assert result.family == "DiagGaussian" and result.au_comparable and result.cu_defined
    assert nonfinite_metrics(result) == []


def test_collapsed_spike_posteriors_give_finite_known_metrics():
    # q(z|x) = N(1, e^-200 I) (WAE/AAE/beta = 0 territory): the std e^-100 is below half an ulp of 1,
    # so every posterior draw is exactly its mean 1, and exp(-logvar) overflows float32. Before the
    # stable log-density, q.log_prob there was 0 * inf = nan and the whole run nan. Known answers:
    # log q(1) = -D/2 (logvar + log 2pi) and log p(1) = -D/2 (1 + log 2pi), so
    # IW-NLL = -log p(x) + log q(1) - log p(1) = -log p(x) + 100.5 D; KL = D/2 (1 + e^-200 + 200 - 1)
    # = 100 D; prior draws have q = 0 and posterior draws p/q ~ e^-400, so the mixture weights are
    # 2 and 0 and priorLL = postLL = log p(x); identical posteriors: MI = 0, AU = 0; q_agg is a spike
    # in every dim: CU = 0.
    split, vocab = make_split()
    model = unigram_model(len(vocab), loc_shift=1.0, logvar_shift=-200.0)
    ll = exact_log_likelihoods(model, split)
    result = evaluate(model, split, EV, seed=4)
    m = result.metrics
    assert nonfinite_metrics(result) == []
    mean_ll = sum(ll) / len(split)
    assert m["IW-NLL"] == pytest.approx(-mean_ll + 100.5 * D, abs=1e-4)
    assert m["KL"] == pytest.approx(100.0 * D, abs=1e-4)
    assert m["priorLL"] == pytest.approx(mean_ll, abs=1e-5)
    assert m["postLL"] == pytest.approx(mean_ll, abs=1e-5)
    assert m["MI"] == pytest.approx(0.0, abs=1e-4)
    assert m["AU"] == 0.0 and m["CU"] == 0.0
    assert m["PPL"] == pytest.approx(math.exp(len(split) * m["IW-NLL"] / split.n_predicted_tokens()), rel=1e-9)


def vmf_kl_closed_form(d: int, kappa: float) -> float:
    """KL(vMF(mu, kappa) || U(S^{d-1})) = kappa A_d + log C_d + log |S^{d-1}|, straight from scipy."""
    v = d / 2 - 1
    log_iv = math.log(ive(v, kappa)) + kappa
    log_c = v * math.log(kappa) - (d / 2) * math.log(2 * math.pi) - log_iv
    a_d = ive(v + 1, kappa) / ive(v, kappa)
    log_area = math.log(2) + (d / 2) * math.log(math.pi) - math.lgamma(d / 2)
    return kappa * a_d + log_c + log_area


@pytest.mark.parametrize("kappa, paper_kl", [(13.0, 2.17), (100.0, 20.76)])
def test_vmf_model_through_the_evaluator(kappa, paper_kl):
    split, vocab = make_split()
    spec = registry.get("vmf-vae")
    torch.manual_seed(1)
    model = spec.cls(len(vocab), Backbone(8, 12, 12, latent_dim=32), spec.resolve({"kappa": kappa}))
    result = evaluate(model, split, EV, seed=5)
    m = result.metrics
    # KL is the constant of the family, the same for every sentence: the closed form to 1e-4
    assert m["KL"] == pytest.approx(vmf_kl_closed_form(32, kappa), abs=1e-4)
    assert m["KL"] == pytest.approx(paper_kl, abs=0.01)
    assert math.isnan(m["CU"])  # no Gaussian marginals: undefined, not 0
    assert result.family == "VonMisesFisher" and not result.au_comparable and not result.cu_defined
    assert nonfinite_metrics(result) == []
    assert nonfinite_metrics(m, cu_defined=True) == ["CU"]
    for name in ("priorLL", "postLL", "IW-NLL", "PPL", "MI", "AU"):
        assert math.isfinite(m[name]), name
    assert m["MI"] <= math.log(len(split)) + 1e-9  # the paired estimator's hard bound
    # AU is computed on E_q[z] = A_d(kappa) mu (Burda's definition; see metrics.active_units)
    model.eval()
    with torch.no_grad():
        q = VonMisesFisher.cat([model.encode(x) for x in length_batches(split, EV.batch_size)])
    assert m["AU"] == metrics.active_units(q.mean_resultant * q.loc)[0]


# --------------------------------------------------------------------------- nonfinite_metrics


def test_nonfinite_metrics_names_nan_and_inf_except_an_undefined_cu():
    m = {"priorLL": math.nan, "postLL": -3.0, "KL": math.inf, "MI": 0.0, "AU": 2.0, "CU": math.nan,
         "IW-NLL": -math.inf, "PPL": 12.5}
    assert nonfinite_metrics(m, cu_defined=True) == ["priorLL", "KL", "CU", "IW-NLL"]
    assert nonfinite_metrics(m, cu_defined=False) == ["priorLL", "KL", "IW-NLL"]
    finite = {"priorLL": -1.0, "CU": 3.0, "PPL": 1e300}
    assert nonfinite_metrics(finite, cu_defined=True) == []
    assert nonfinite_metrics({"CU": math.inf}, cu_defined=False) == []
    assert nonfinite_metrics({"PPL": math.inf, "CU": math.nan}, cu_defined=False) == ["PPL"]
    with pytest.raises(TypeError, match="cu_defined"):
        nonfinite_metrics(m)  # a plain dict must say whether CU is defined
    vmf = EvalResult({"CU": math.nan, "MI": 0.1}, {}, {}, family="VonMisesFisher", au_comparable=False,
                     cu_defined=False)
    gauss = EvalResult({"CU": math.nan, "MI": 0.1}, {}, {}, family="DiagGaussian", au_comparable=True,
                       cu_defined=True)
    assert nonfinite_metrics(vmf) == []
    assert nonfinite_metrics(gauss) == ["CU"]


def test_au_comparable_class_vars():
    assert Posterior.au_comparable and DiagGaussian.au_comparable
    assert not VonMisesFisher.au_comparable
