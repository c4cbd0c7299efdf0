"""skip-vae: z reaches the vocabulary classifier directly."""

import torch

from bench.config import Backbone
from methods.skip_vae import SkipVAE
from methods.vae import VAE

BB = Backbone(8, 12, 12, latent_dim=4)


def test_z_reaches_the_classifier_even_when_the_recurrent_path_ignores_it():
    torch.manual_seed(0)
    model, plain = SkipVAE(20, BB).eval(), VAE(20, BB).eval()
    assert model.decoder.skip_z and model.decoder.out.in_features == 12 + 4
    assert plain.decoder.out.in_features == 12
    for m in (model, plain):  # cut z out of the LSTM: its input columns and the initial state
        with torch.no_grad():
            m.decoder.lstm.weight_ih_l0[:, 8:] = 0
            m.decoder.init_c.weight.zero_()
    x = torch.randint(4, 20, (2, 6))
    z1, z2 = torch.zeros(2, 4), torch.ones(2, 4)
    assert not torch.allclose(model.decoder.logits(x, z1), model.decoder.logits(x, z2))
    assert torch.allclose(plain.decoder.logits(x, z1), plain.decoder.logits(x, z2))
