"""Run identity: what was trained, what evaluated it, and what a board compares."""

from dataclasses import replace

from vae_collapse_bench.bench.config import PROFILES
from vae_collapse_bench.bench.identity import identity_key, run_identity


def test_identity_key_depends_on_content_only():
    a = {"dataset": "ptb", "seed": 0, "params": {"gamma": 0.6}}
    assert identity_key(a) == identity_key(dict(reversed(list(a.items()))))
    assert identity_key(a) != identity_key({**a, "seed": 1})
    assert identity_key(a) != identity_key({**a, "params": {"gamma": 0.7}})


def test_training_and_eval_keys_split_what_was_trained_from_what_evaluated_it():
    smoke = PROFILES["smoke"]
    base = run_identity("synthetic", "abc", smoke, "synthetic", "vae", {}, 0)
    more_k = replace(smoke, evaluation=replace(smoke.evaluation, iw_samples=99))
    longer = replace(smoke, training=replace(smoke.training, max_epochs=9))
    renamed = replace(smoke, name="other")
    same_training = run_identity("synthetic", "abc", more_k, "synthetic", "vae", {}, 0)
    assert same_training.training_key == base.training_key and same_training.eval_key != base.eval_key
    assert same_training.config_key != base.config_key
    new_training = run_identity("synthetic", "abc", longer, "synthetic", "vae", {}, 0)
    assert new_training.training_key != base.training_key
    assert run_identity("synthetic", "xyz", smoke, "synthetic", "vae", {}, 0).training_key != base.training_key
    assert run_identity("synthetic", "abc", renamed, "synthetic", "vae", {}, 0).eval_key == base.eval_key
    other_seed = run_identity("synthetic", "abc", smoke, "synthetic", "vae", {}, 1)
    assert other_seed.config_key == base.config_key and other_seed.training_key != base.training_key
