
import pytest
import torch
from helpers import sentences, tiny_backbone
from vae_collapse_bench.bench import registry
from vae_collapse_bench.bench.errors import BenchError
from vae_collapse_bench.bench.posterior import UniformSphere, VonMisesFisher
from vae_collapse_bench.methods.vmf_vae import VMFVAE, VMFParams

BB = tiny_backbone(latent_dim=5)


def test_registered_with_the_paper_grid_and_checked_params():
    spec = registry.get("vmf-vae")
    assert spec.cls is VMFVAE
    assert spec.settings("paper") == [{"kappa": k} for k in (13, 25, 50, 100, 200)]
    assert spec.defaults == {"kappa": 50.0}
    assert spec.resolve({"kappa": "13"}).kappa == 13.0
    assert isinstance(spec.resolve({"kappa": 25}).kappa, float)  # 25 and 25.0: one run key
    for bad in ("0", "-3", "nan", "inf"):
        with pytest.raises(BenchError, match="kappa"):
            spec.resolve({"kappa": bad})
    with pytest.raises(ValueError, match="kappa"):
        VMFParams(kappa=True)


def test_posterior_is_vmf_on_the_unit_sphere_with_a_constant_kl():
    torch.manual_seed(0)
    model = VMFVAE(20, BB, VMFParams(kappa=13))
    assert model.encoder.out.out_features == BB.latent_dim
    q = model.encode(sentences())
    assert isinstance(q, VonMisesFisher) and q.kappa == 13.0
    assert torch.allclose(q.loc.norm(dim=-1), torch.ones(4), atol=1e-5)
    assert isinstance(q.prior, UniformSphere)
    assert torch.allclose(q.kl_to_prior(), q.kl_to_prior()[:1].expand(4))


def test_loss_and_gradients():
    torch.manual_seed(0)
    model = VMFVAE(20, BB)
    terms = model.loss(sentences(), kl_weight=0.3)
    assert torch.isfinite(terms.loss)
    assert terms.reg.shape == () and not terms.reg.requires_grad  # the KL is a constant
    assert torch.allclose(terms.reg, terms.kl.mean())
    assert torch.allclose(terms.loss, terms.rec.mean() + 0.3 * terms.kl.mean())
    terms.loss.backward()
    assert model.encoder.lstm.weight_ih_l0.grad.abs().sum() > 0  # through rsample's reparameterisation
    assert model.encoder.out.weight.grad.abs().sum() > 0
    assert model.decoder.lstm.weight_ih_l0.grad.abs().sum() > 0
