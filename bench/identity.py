"""Run identity, in two parts (design: "run identity").

- The **training key** says what was trained: the data (name and checksum), the backbone, the
  training config, the method, its resolved hyperparameters, the seed, and the major.minor version of
  the training code. It names the checkpoint folder; the same training key is never trained twice.
- The **eval key** says what evaluated it: the training key, the evaluator config and the evaluator's
  own version (`bench.evaluate.EVALUATOR_VERSION`). Changing K, or adding a metric, changes only the
  eval key: the stored best.pt is evaluated again, nothing is retrained.
- The **config key** is what a leaderboard compares: everything of the two keys except method,
  params and seed. Runs whose config key differs from the current one are stale: listed, not averaged.

The profile's *name* is not part of any key: a profile is a name for a config, and editing it must
show up as a different config, not hide behind the same name.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from typing import Any

from vae_collapse_bench.bench.config import Profile
from vae_collapse_bench.bench.evaluate import EVALUATOR_VERSION

from vae_collapse_bench import __version__


def identity_key(identity: dict[str, Any]) -> str:
    """A stable 20-hex-digit hash of a JSON-able identity (key order does not matter)."""
    payload = json.dumps(identity, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:20]


def training_code_version() -> str:
    """major.minor of the package: a patch release never changes what training computes."""
    return ".".join(__version__.split(".")[:2])


def config_identity(data_checksum: str, profile: Profile, family: str) -> dict[str, Any]:
    """Everything that determines a run of this profile on this data, besides method, params, seed."""
    return {
        "data_checksum": data_checksum,
        "backbone": dataclasses.asdict(profile.backbone_for(family)),
        "training": dataclasses.asdict(profile.training),
        "training_code": training_code_version(),
        "evaluation": dataclasses.asdict(profile.evaluation),
        "evaluator": EVALUATOR_VERSION,
    }


@dataclass(frozen=True)
class RunIdentity:
    training: dict[str, Any]
    evaluation: dict[str, Any]
    config: dict[str, Any]

    @property
    def training_key(self) -> str:
        return identity_key(self.training)

    @property
    def eval_key(self) -> str:
        return identity_key({"training_key": self.training_key, **self.evaluation})

    @property
    def config_key(self) -> str:
        return identity_key(self.config)

    def as_dict(self) -> dict[str, Any]:
        return {"training": self.training, "evaluation": self.evaluation}


def run_identity(dataset: str, data_checksum: str, profile: Profile, family: str, method: str,
                 params: dict[str, Any], seed: int) -> RunIdentity:
    config = config_identity(data_checksum, profile, family)
    training = {
        "dataset": dataset, "data_checksum": data_checksum, "backbone": config["backbone"],
        "training": config["training"], "training_code": config["training_code"],
        "method": method, "params": params, "seed": seed,
    }
    evaluation = {"evaluation": config["evaluation"], "evaluator": config["evaluator"]}
    return RunIdentity(training, evaluation, config)


def config_key(data_checksum: str, profile: Profile, family: str) -> str:
    return identity_key(config_identity(data_checksum, profile, family))
