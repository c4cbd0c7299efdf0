"""bow-vae: the bag-of-words loss (mean over target tokens) is gradient-only."""

import torch
from helpers import BB, sentences
from vae_collapse_bench.methods.bow_vae import BoWVAE


def test_bow_loss_is_the_mean_token_cross_entropy_and_not_reported():
    torch.manual_seed(0)
    model = BoWVAE(20, BB)
    x = sentences(3, t=7)
    torch.manual_seed(1)
    terms = model.loss(x, kl_weight=0.3)
    torch.manual_seed(1)
    z = model.encode(x).rsample(1)[0]
    log_probs = torch.log_softmax(model.bow(z), -1)
    manual = -torch.stack([log_probs[b, x[b, t]] for b in range(3) for t in range(1, 7)]).mean()
    assert torch.allclose(terms.logs["bow"], manual) and not terms.logs["bow"].requires_grad
    assert torch.allclose(terms.objective, terms.rec.mean() + terms.kl.mean())  # the BoW loss is not reported
    assert torch.allclose(terms.loss, terms.rec.mean() + 0.3 * terms.kl.mean() + manual)
    # <s> is not a target: the bag-of-words scores x[:, 1:] only
    assert model.bow_log_prob(z, x).shape == (3, 6)


def test_bow_network_shape_and_gradient_reaches_the_encoder():
    torch.manual_seed(0)
    model = BoWVAE(20, BB)
    assert [type(m).__name__ for m in model.bow] == ["Linear", "Sigmoid", "Linear"]
    assert model.bow[0].in_features == 4 and model.bow[0].out_features == 4 and model.bow[2].out_features == 20
    x = torch.randint(4, 20, (3, 5))
    q = model.encode(x)
    z = q.rsample(1)[0]
    model.auxiliary_loss(q, z, x).value.backward()
    assert model.encoder.out.weight.grad.abs().sum() > 0
    assert model.decoder.out.weight.grad is None  # the BoW loss does not touch the decoder
