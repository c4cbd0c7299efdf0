"""The escape benchmark (slow): does DG-VAE leave posterior collapse on the synthetic corpus?

The schedule is the one where the public code's DG-VAE escapes (at epochs 19-24 over 2 seeds): 40
epochs, KL annealing over 10, SGD at lr 0.5 without decay, the quick profile's 64/128/128 backbone
with D = 32. With a bias in the decoder's vocabulary projection this stayed collapsed (AU 0 after
40 epochs); without it, it escapes. Run with

    .venv/bin/pytest -m slow -s tests/test_escape.py

which prints the per-epoch validation AU and MI (the trajectory quoted in the closing note).
"""

import dataclasses

import pytest
import torch
from vae_collapse_bench.bench import data, metrics, registry
from vae_collapse_bench.bench.config import PROFILES
from vae_collapse_bench.bench.train import Trainer, seed_everything

SCHEDULE = dataclasses.replace(PROFILES["quick"].training, max_epochs=40, anneal_epochs=10,
                               decay_from_epoch=41, max_train=None, max_valid=None)


@pytest.mark.slow
def test_dg_vae_escapes_collapse_on_synthetic(synthetic_root, tmp_path):
    corpus = data.load_corpus("synthetic", synthetic_root)
    backbone = PROFILES["quick"].backbone
    method = registry.get("dg-vae")
    seed_everything(0)
    model = method.cls(len(corpus.vocab), backbone, method.resolve({}))
    valid = corpus.splits["valid"]
    trajectory = []

    def usage(record):
        model.eval()
        with torch.no_grad():
            parts = [model.encode(x) for x in data.length_batches(valid, 64)]
            q = type(parts[0]).cat(parts)
            au, _ = metrics.active_units(q.mean)
            mi = metrics.mutual_information(q, n_samples=2, generator=torch.Generator().manual_seed(0))
        trajectory.append((record["epoch"], au, mi, record["valid_rec"], record["valid_kl"]))
        print(f"epoch {record['epoch']:2d}: AU {au:2d}  MI {mi:.2f}  rec {record['valid_rec']:.2f}  "
              f"KL {record['valid_kl']:.2f}  dg {record.get('train_dg', float('nan')):.3f}", flush=True)

    Trainer(model, corpus, SCHEDULE, 0, tmp_path, on_epoch=usage).fit()
    escaped = [epoch for epoch, au, *_ in trajectory if au >= backbone.latent_dim // 2]
    print(f"escape (AU >= D/2) first at epoch {escaped[0] if escaped else None}")
    assert trajectory[-1][1] >= 0.5 * backbone.latent_dim
