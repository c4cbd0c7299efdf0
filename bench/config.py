"""Run configuration as frozen dataclasses: Backbone, Training, Evaluation, Profile.

Profiles change sizes and counts, never formulas (design.md §6). The `paper` profile takes its
backbone from the dataset: the `[backbone]` table of its family's manifest (bench.data.paper_backbone,
the one source of the papers' backbones); `quick` and `smoke` use one small backbone for all.
Backbone itself lives in bench.backbone (the manifests use it too) and is re-exported here.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from vae_collapse_bench.bench.backbone import Backbone
from vae_collapse_bench.bench.data import Manifest, paper_backbone
from vae_collapse_bench.bench.errors import unknown


@dataclass(frozen=True)
class Training:
    """SGD with decay on plateau (design.md §6).

    lr is halved when the validation objective has not improved for `patience` epochs, counted
    only from epoch `decay_from_epoch` on; the best checkpoint is then reloaded. Training stops after
    `max_decays` halvings or `max_epochs` epochs. KL weight rises linearly per step over
    `anneal_epochs` epochs. `max_*` truncate the splits (None: whole split).
    """

    batch_size: int = 32
    lr: float = 0.5
    clip_grad: float = 5.0
    max_epochs: int = 100
    anneal_epochs: float = 10.0
    patience: int = 5
    decay_from_epoch: int = 15
    lr_decay: float = 0.5
    max_decays: int = 5
    max_train: int | None = None
    max_valid: int | None = None


@dataclass(frozen=True)
class Evaluation:
    """Evaluator sizes (design.md §7).

    ll_samples_per_component: samples from each of p(z) and q(z|x) for the mixture proposal of
    priorLL/postLL (paper: 8 + 8). iw_samples: K of IW-NLL (paper: 500). mi_samples: draws per
    datapoint of the Hoffman-Johnson MI estimate. max_logits bounds one decoder pass: it sees at most
    max_logits / (T * V) sequences, so memory stays fixed whatever K, T and the vocabulary are.
    interpolation_pairs: pairs of equal-length test sentences for the Rouge-L interpolation curve
    (DG-VAE Eq. 14; bench.interpolate), chosen by interpolation_seed; 0 leaves Rouge-L out.
    """

    ll_samples_per_component: int = 8
    iw_samples: int = 500
    mi_samples: int = 10
    au_threshold: float = 0.01
    cu_threshold: float = 0.03
    cu_grid_points: int = 4001
    cu_grid_limit: float = 10.0
    batch_size: int = 64
    max_logits: int = 2**26
    max_test: int | None = None
    interpolation_pairs: int = 1000
    interpolation_seed: int = 0


@dataclass(frozen=True)
class Profile:
    """A named config: sizes and counts, never formulas. `description` states its purpose (shown by
    `bench methods`-style listings and in the design): smoke for tests, quick for small-scale results
    on a CPU, paper for the published protocol."""

    name: str
    training: Training
    evaluation: Evaluation
    backbone: Backbone | None = None  # None: the dataset's paper backbone
    description: str = ""

    def backbone_for(self, dataset: str | Manifest) -> Backbone:
        """The backbone of a run on `dataset`: this profile's, else (paper) the dataset's paper backbone
        from its manifest (bench.data.paper_backbone). `dataset` is a Manifest or a dataset name; a
        family name (Corpus.family) is the name of the dataset whose manifest holds that family's
        backbone, so passing it gives the same backbone."""
        if self.backbone is not None:
            return self.backbone
        return paper_backbone(dataset)

    def resolved(self, dataset: str | Manifest) -> dict:
        """The resolved config, stored with every run for provenance (the keys are in bench.identity).
        `dataset`: as for backbone_for."""
        return {
            "profile": self.name,
            "backbone": dataclasses.asdict(self.backbone_for(dataset)),
            "training": dataclasses.asdict(self.training),
            "evaluation": dataclasses.asdict(self.evaluation),
        }


PROFILES: dict[str, Profile] = {
    p.name: p
    for p in [
        Profile(
            "smoke",
            Training(max_epochs=2, anneal_epochs=1, patience=1, decay_from_epoch=1, max_decays=1,
                     max_train=256, max_valid=64),
            Evaluation(ll_samples_per_component=2, iw_samples=8, mi_samples=2, cu_grid_points=801,
                       max_test=64, interpolation_pairs=16),
            Backbone(16, 32, 32, latent_dim=8),
            "seconds per run, for tests: it exercises every code path (training, decay, evaluation, "
            "storage) and shows nothing about the methods; its numbers are never results",
        ),
        Profile(
            # The paper's schedule SHAPE with smaller sizes: escaping collapse takes ~20 epochs at a
            # constant lr (DG-VAE on synthetic escapes at epochs 19-24), so a profile that cuts the
            # schedule measures the schedule, not the methods: with 12 epochs even an unregularised
            # model (beta = 0) ends with AU 0. Sizes are cut instead: data, backbone, K.
            "quick",
            Training(max_epochs=40, anneal_epochs=10, patience=5, decay_from_epoch=15, max_decays=5,
                     max_train=5000, max_valid=1000),
            Evaluation(ll_samples_per_component=8, iw_samples=50, mi_samples=4, max_test=1000),
            Backbone(64, 128, 128, latent_dim=32),
            "the paper's schedule (KL annealing over 10 epochs, no lr decay before epoch 15, patience 5, "
            "40 epochs) on at most 5,000 training sentences, a 64/128/128 backbone with D = 32 and "
            "K = 50: minutes per run on 2 CPU cores (real text via the *-mini datasets); small-scale "
            "results that can show collapse and its escape",
        ),
        Profile(
            # `make demo`: four methods in under five minutes on 2 CPU cores (two workers, one thread
            # each). The quick profile's sizes and schedule shape, cut to 30 epochs and two lr
            # halvings: dg-vae on synthetic escapes collapse at epochs 19-24, so the board still
            # shows the escape (seed 0: KL leaves 0 at epoch 19; AU 30, CU 32 against vae's AU 0);
            # fewer validation and test sentences and interpolation pairs.
            "demo",
            Training(max_epochs=30, anneal_epochs=10, patience=5, decay_from_epoch=15, max_decays=2,
                     max_train=5000, max_valid=500),
            Evaluation(ll_samples_per_component=8, iw_samples=50, mi_samples=4, max_test=500,
                       interpolation_pairs=200),
            Backbone(64, 128, 128, latent_dim=32),
            "a five-minute first look (make demo): the quick backbone and schedule shape cut to 30 "
            "epochs, 500 validation and test sentences, K = 50; a demonstration, not results",
        ),
        Profile(
            "paper",
            Training(),
            Evaluation(),
            None,
            "the full DG-VAE / BN-VAE protocol (the dataset's paper backbone, 100 epochs, K = 500): "
            "the numbers to compare with the paper; GPU-scale (--device cuda)",
        ),
    ]
}


def get_profile(name: str) -> Profile:
    try:
        return PROFILES[name]
    except KeyError:
        raise unknown("profile", name, list(PROFILES)) from None


__all__ = ["Backbone", "Training", "Evaluation", "Profile", "PROFILES", "get_profile"]
