import pytest
from vae_collapse_bench.bench import registry
from vae_collapse_bench.bench.errors import BenchError
from vae_collapse_bench.bench.runner import RunSpec, expand, parse_overrides, parse_seeds


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


def test_parse_seeds_caps_the_count_before_building_anything():
    import time

    started = time.perf_counter()
    with pytest.raises(BenchError, match=r"--seeds '0-999999999' asks for more than 10,000 seeds"):
        parse_seeds("0-999999999")
    for many in ("0-10000", "0-9999,10000", ",".join(["0-9999"] * 50) + ",20000"):
        with pytest.raises(BenchError, match="more than 10,000 seeds"):
            parse_seeds(many)
    assert time.perf_counter() - started < 1.0
    assert parse_seeds("0-9999,5") == list(range(10_000))  # the cap counts distinct seeds
    assert parse_seeds("0-4") == [0, 1, 2, 3, 4] and parse_seeds("007") == [7]


@pytest.mark.parametrize("bad", ["4294967296", "9" * 5000, "0-" + "9" * 30])
def test_parse_seeds_refuses_seeds_beyond_32_bits(bad):
    with pytest.raises(BenchError, match="seeds are integers from 0 to 4294967295"):
        parse_seeds(bad)


def test_parse_seeds_messages_are_one_short_line():
    for bad in ["x" * 5000, "1\n2", "٣"]:  # long, a newline, a non-ASCII digit
        with pytest.raises(BenchError) as info:
            parse_seeds(bad)
        assert "\n" not in str(info.value) and len(str(info.value)) < 200


@pytest.mark.parametrize("methods", [["vae"], ["bn-vae"], ["vae", "bn-vae"]])
def test_expand_checks_the_grid_whatever_the_methods(methods):
    with pytest.raises(BenchError, match="unknown grid 'foo': use --grid paper or --grid default"):
        expand([registry.get(m) for m in methods], "synthetic", "smoke", "foo", [0])


@pytest.mark.parametrize(
    ("item", "message"),
    [
        ("bn-vae.gamma=abc", "malformed --set bn-vae.gamma=abc: cannot read 'abc' as float"),
        ("bn-vae.gamma=nan", "malformed --set bn-vae.gamma=nan: bad hyperparameter for bn-vae: gamma must be a "
                             "finite number > 0, got nan"),
        ("bn-vae.gamma=inf", "malformed --set bn-vae.gamma=inf: .*got inf"),
        ("bn-vae.gamma=-inf", "malformed --set bn-vae.gamma=-inf: .*got -inf"),
        ("bn-vae.gamma=" + "1" * 400, r"malformed --set bn-vae.gamma=1111.*: cannot read an integer .* as float"),
        ("bn-vae.gamma=" + "x" * 5000, r"malformed --set bn-vae.gamma=xxx.*\(5,013 characters\): cannot read 'xx"),
        ("bn-vae.gama=1", "malformed --set bn-vae.gama=1: unknown hyperparameter of bn-vae 'gama'"),
        ("dg-vae.agg=" + "y" * 5000, r"malformed --set dg-vae.agg=yyy.*: .*agg must be an integer >= 1"),
    ],
)
def test_a_bad_set_value_names_its_set(item, message):
    methods = [registry.get("bn-vae"), registry.get("dg-vae")]
    with pytest.raises(BenchError, match=message) as info:
        expand(methods, "synthetic", "smoke", "paper", [0], parse_overrides([item]))
    assert "\n" not in str(info.value) and len(str(info.value)) < 400


def test_the_set_at_fault_is_named_among_several():
    overrides = parse_overrides(["dg-vae.m=4", "dg-vae.agg=zero"])
    with pytest.raises(BenchError, match=r"^malformed --set dg-vae.agg=zero: bad hyperparameter for dg-vae"):
        expand([registry.get("dg-vae")], "synthetic", "smoke", "paper", [0], overrides)


@pytest.mark.parametrize("bad", ["", "=", "bn-vae.gamma=", "λ.x=1", "數據.x=1", "x" * 5000, "a\nb.c=1"])
def test_parse_overrides_malformed_is_one_short_line(bad):
    with pytest.raises(BenchError, match="^malformed --set") as info:
        parse_overrides([bad])
    assert "\n" not in str(info.value) and len(str(info.value)) < 400
