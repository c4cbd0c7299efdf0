from dataclasses import dataclass

import pytest

from bench import registry
from bench.errors import BenchError
from bench.model import GaussianMethod


@dataclass(frozen=True)
class ToyParams:
    """weight: > 0; mode: any string or integer."""

    weight: float = 1.0
    mode: int | str = "default"

    def __post_init__(self):
        if not self.weight > 0:
            raise ValueError(f"weight must be > 0, got {self.weight}")


@pytest.fixture()
def toy():
    @registry.register("toy-method", grid={"weight": [0.5, 2.0], "mode": [1, "default"]})
    class Toy(GaussianMethod):
        """A toy method for registry tests."""

        Params = ToyParams

    yield registry.get("toy-method")
    registry._REGISTRY.pop("toy-method")


def test_builtin_vae_is_discovered():
    assert "vae" in registry.names()
    assert registry.get("vae").settings("paper") == [{}]


def test_unknown_method_suggests_close_name():
    with pytest.raises(BenchError, match="did you mean 'vae'"):
        registry.get("vea")


def test_grid_is_cartesian_product_and_default_grid_is_one_setting(toy):
    assert toy.settings("paper") == [{"mode": 1, "weight": 0.5}, {"mode": 1, "weight": 2.0},
                                     {"mode": "default", "weight": 0.5}, {"mode": "default", "weight": 2.0}]
    assert toy.settings("default") == [{}]
    with pytest.raises(BenchError, match="--grid paper or --grid default"):
        toy.settings("huge")


def test_resolve_coerces_strings_and_checks_domain(toy):
    assert toy.resolve({"weight": "0.25"}).weight == 0.25
    assert toy.resolve({"mode": "8"}).mode == 8
    assert toy.resolve({"mode": "default"}).mode == "default"
    with pytest.raises(BenchError, match="weight must be > 0"):
        toy.resolve({"weight": "-1"})
    with pytest.raises(BenchError, match="unknown hyperparameter of toy-method 'wieght'.*'weight'"):
        toy.resolve({"wieght": 1})
    with pytest.raises(BenchError, match="cannot read 'abc' as float"):
        toy.resolve({"weight": "abc"})


def test_a_paper_grid_outside_the_domain_is_refused_at_registration():
    with pytest.raises(BenchError, match="weight must be > 0"):
        @registry.register("bad-grid", grid={"weight": [1.0, 0.0]})
        class Bad(GaussianMethod):
            Params = ToyParams
    assert "bad-grid" not in registry._REGISTRY


def test_select_all_and_lists():
    assert [m.name for m in registry.select("all")] == registry.names()
    assert [m.name for m in registry.select("vae, vae")] == ["vae"]
    with pytest.raises(BenchError, match="--methods is empty"):
        registry.select(" , ")
