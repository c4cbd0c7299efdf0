import pytest

from bench import registry
from bench.errors import BenchError
from bench.runner import RunSpec, expand, parse_overrides, parse_seeds


def test_parse_seeds_lists_and_ranges():
    assert parse_seeds("0,1,2") == [0, 1, 2]
    assert parse_seeds("3-5, 1") == [3, 4, 5, 1]
    assert parse_seeds("2,2") == [2]


@pytest.mark.parametrize("bad", ["", "a", "1,,2", "-1", "5-3", "1.5", "0;1"])
def test_parse_seeds_refuses_malformed(bad):
    with pytest.raises(BenchError, match="malformed --seeds"):
        parse_seeds(bad)


def test_parse_overrides():
    assert parse_overrides(["vae.x=1"]) == {"vae": {"x": "1"}}
    for bad in ["vae", "vae.x", "x=1", ".x=1", "vae.x="]:
        with pytest.raises(BenchError, match="METHOD.PARAM=VALUE"):
            parse_overrides([bad])
    with pytest.raises(BenchError, match="unknown method"):
        parse_overrides(["nope.x=1"])


def test_expand_methods_settings_seeds():
    specs = expand([registry.get("vae")], "synthetic", "smoke", "paper", [0, 1])
    assert specs == [RunSpec("synthetic", "smoke", "vae", (), 0), RunSpec("synthetic", "smoke", "vae", (), 1)]
    assert specs[0].label == "vae[-] seed 0"
    with pytest.raises(BenchError, match="unknown hyperparameter of vae"):
        expand([registry.get("vae")], "synthetic", "smoke", "paper", [0], {"vae": {"beta": "1"}})
