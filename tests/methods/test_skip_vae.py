"""skip-vae: z reaches the vocabulary classifier directly, through the `decoder_output` hook."""

import torch
from helpers import BB
from vae_collapse_bench.methods.skip_vae import SkipVAE
from vae_collapse_bench.methods.vae import VAE


def test_the_classifier_reads_h_and_z():
    torch.manual_seed(0)
    model = SkipVAE(20, BB).eval()
    assert model.decoder.out.in_features == 12 + 4 and model.decoder.out.bias is None
    h, z = torch.randn(2, 5, 12), torch.randn(2, 4)
    out = model.decoder_output(h, z)
    assert out.shape == (2, 5, 16)
    assert torch.equal(out[..., :12], h) and torch.equal(out[..., 12:], z[:, None].expand(-1, 5, -1))


def test_z_reaches_the_classifier_even_when_the_recurrent_path_ignores_it():
    torch.manual_seed(0)
    model, plain = SkipVAE(20, BB).eval(), VAE(20, BB).eval()
    assert plain.decoder.out.in_features == 12
    for m in (model, plain):  # cut z out of the LSTM: its input columns and the initial state
        with torch.no_grad():
            m.decoder.lstm.weight_ih_l0[:, 8:] = 0
            m.decoder.init_c.weight.zero_()
    x = torch.randint(4, 20, (2, 6))
    z1, z2 = torch.zeros(2, 4), torch.ones(2, 4)
    assert not torch.allclose(model.decoder_logits(x, z1), model.decoder_logits(x, z2))
    assert torch.allclose(plain.decoder_logits(x, z1), plain.decoder_logits(x, z2))
    # ... and so into log p(x|z)
    assert not torch.allclose(model.log_px_z(x, z1[None]), model.log_px_z(x, z2[None]))
