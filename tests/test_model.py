import torch

from bench.config import Backbone
from bench.model import Decoder, LossTerms
from bench.perf import random_batch
from bench.posterior import DiagGaussian
from methods.vae import VAE

BB = Backbone(8, 12, 12, latent_dim=4)


def sentences(b=3, t=6):
    return random_batch(t, b, vocab=20)


def test_decoder_log_prob_is_chunk_invariant_and_matches_a_manual_loop():
    torch.manual_seed(0)
    dec = Decoder(20, BB).eval()
    x, z = sentences(), torch.randn(5, 3, 4)
    full = dec.log_prob(x, z)
    assert full.shape == (5, 3)
    assert torch.allclose(full, dec.log_prob(x, z, max_rows=2), atol=1e-6)
    for k in range(5):
        for b in range(3):
            logits = dec.logits(x[b : b + 1, :-1], z[k, b : b + 1])
            manual = torch.log_softmax(logits, -1)[0].gather(1, x[b, 1:, None]).sum()
            assert torch.allclose(full[k, b], manual, atol=1e-5)


def test_initialisation_ranges():
    model = VAE(20, BB)
    for name, p in model.named_parameters():
        bound = 0.1 if "embed" in name else 0.01
        assert p.abs().max() <= bound, name


def test_vae_loss_terms_and_gradients_reach_encoder_and_decoder():
    torch.manual_seed(0)
    model = VAE(20, BB)
    terms = model.loss(sentences(), kl_weight=0.3)
    assert isinstance(terms, LossTerms) and torch.isfinite(terms.loss)
    assert torch.allclose(terms.loss, (terms.rec + 0.3 * terms.kl).mean())
    terms.loss.backward()
    assert model.encoder.lstm.weight_ih_l0.grad.abs().sum() > 0
    assert model.decoder.lstm.weight_ih_l0.grad.abs().sum() > 0


def test_diag_gaussian_against_hand_values():
    q = DiagGaussian(torch.tensor([[1.0, 0.0]]), torch.log(torch.tensor([[4.0, 1.0]])))
    # KL = 1/2 [(1 + 4 - log 4 - 1) + 0]
    assert torch.allclose(q.kl_to_prior(), torch.tensor([0.5 * (4 - torch.log(torch.tensor(4.0)))]))
    z = torch.tensor([[3.0, 0.0]])
    expected = torch.distributions.Normal(torch.tensor([1.0, 0.0]), torch.tensor([2.0, 1.0])).log_prob(z).sum()
    assert torch.allclose(q.log_prob(z), expected.reshape(1))
    assert torch.allclose(q.entropy(), torch.distributions.Normal(torch.tensor([1.0, 0.0]),
                                                                  torch.tensor([2.0, 1.0])).entropy().sum())
    # scoring samples against every posterior: [S, 1, D] -> [S, B]
    q2 = DiagGaussian.cat([q, DiagGaussian(torch.zeros(1, 2), torch.zeros(1, 2))])
    assert q2.log_prob(torch.zeros(7, 1, 2)).shape == (7, 2)
    assert len(q2[1:]) == 1
