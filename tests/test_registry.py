from dataclasses import dataclass

import pytest
from vae_collapse_bench.bench import registry
from vae_collapse_bench.bench.errors import BenchError
from vae_collapse_bench.bench.model import GaussianMethod


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


PLUGIN = '''
from vae_collapse_bench.bench.model import GaussianMethod
from vae_collapse_bench.bench.registry import register


@register("plugin-vae")
class PluginVAE(GaussianMethod):
    """A method shipped by another package."""
'''


def test_a_method_from_an_installed_package_appears_through_the_entry_point(tmp_path, monkeypatch):
    from importlib.metadata import EntryPoint

    (tmp_path / "someones_plugin.py").write_text(PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path))
    point = EntryPoint(name="plugin", value="someones_plugin", group=registry.ENTRY_POINT_GROUP)
    monkeypatch.setattr(registry, "entry_points", lambda group: [point] if group == point.group else [])
    monkeypatch.setattr(registry, "_discovered", False)
    try:
        assert "plugin-vae" in registry.names() and "vae" in registry.names()
        assert registry.get("plugin-vae").summary == "A method shipped by another package."
    finally:
        registry._REGISTRY.pop("plugin-vae", None)


def test_a_broken_plugin_is_named(monkeypatch):
    from importlib.metadata import EntryPoint

    point = EntryPoint(name="broken", value="no_such_module_xyz", group=registry.ENTRY_POINT_GROUP)
    monkeypatch.setattr(registry, "entry_points", lambda group: [point])
    monkeypatch.setattr(registry, "_discovered", False)
    with pytest.raises(BenchError, match="cannot load method plug-in 'broken'"):
        registry.names()


def test_search_space_is_described_without_a_study(toy):
    assert toy.search_space() == {}
    assert registry.get("bn-vae").search_space() == {"gamma": "float in [0.3, 2.0]"}


def test_an_integer_for_a_float_hyperparameter_is_the_same_run():
    from vae_collapse_bench.bench.runner import expand

    fb = registry.get("fb-vae")
    assert fb.resolve({"free_bits": 4}) == fb.resolve({"free_bits": "4"}) == fb.resolve({})
    assert isinstance(fb.resolve({"free_bits": 9}).free_bits, float)
    paper = expand([fb], "synthetic", "smoke", "paper", [0])
    default = expand([fb], "synthetic", "smoke", "default", [0])
    assert default[0] in paper  # the grid's 4 and the default 4.0: one RunSpec, one training key
    assert registry.get("dg-vae").resolve({"agg": "32"}).agg == 32  # a str/int field keeps its int


def test_a_method_without_a_grid_refuses_an_unknown_grid_too():
    with pytest.raises(BenchError, match="unknown grid 'foo': use --grid paper or --grid default"):
        registry.get("vae").settings("foo")
    with pytest.raises(BenchError, match="unknown grid"):
        registry.check_grid("")
    registry.check_grid("paper"), registry.check_grid("default")


def test_resolve_takes_huge_and_odd_numbers_as_bench_errors(toy):
    with pytest.raises(BenchError, match="cannot read an integer of .* bits as float: too large"):
        toy.resolve({"weight": "1" * 400})
    with pytest.raises(BenchError, match="weight must be > 0, got nan"):
        toy.resolve({"weight": "nan"})
    registry.check_number("x", 10**400, 0)  # an int is finite however large: no OverflowError
    with pytest.raises(ValueError, match=r"got 'zzz.*'\.\.\. \(5,000 characters\)"):
        registry.check_count("agg", "z" * 5000, or_default=True)
