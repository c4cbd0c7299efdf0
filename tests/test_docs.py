"""docs/adding-a-method.md cannot rot: the page's files are written out, discovered, tested and trained.

Every ```python block of the page is a file whose first line names it (`# methods/NAME.py` or
`# tests/methods/test_NAME.py`). The method files go into a temporary folder appended to the
`vae_collapse_bench.methods` package (as if dropped into methods/), where the registry's own discovery
imports them; the test files are imported from their own folder and their test functions run. Each
toy method then passes the generic tests of tests/test_methods.py and trains one epoch of the smoke
profile, and together they cover the four kinds of method the page promises. The ```toml block's
entry point is checked by installing the same files as another package. Nothing the page defines
stays registered or imported after a test.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import math
import re
import sys
import tomllib
from dataclasses import replace
from importlib.metadata import EntryPoint
from pathlib import Path

import pytest
import test_methods
from vae_collapse_bench.bench import data, registry
from vae_collapse_bench.bench.config import PROFILES
from vae_collapse_bench.bench.model import GaussianMethod
from vae_collapse_bench.bench.train import Trainer, seed_everything

DOC = Path(__file__).resolve().parents[1] / "docs" / "adding-a-method.md"
FENCE = re.compile(r"^```(\w+)\n(.*?)^```$", re.S | re.M)
FILE_HEADER = re.compile(r"# ((?:methods|tests/methods)/\w+\.py)")
SMOKE = PROFILES["smoke"]

# The hooks that make each kind of method the page walks through (build_extras and Params go with any).
KINDS = {
    "loss-only": {"regularizer", "auxiliary_loss", "kl_weight"},
    "posterior-only": {"posterior", "encoder_out_dim"},
    "decoder-changing": {"decoder_input", "decoder_input_dim", "decoder_output", "decoder_output_dim"},
    "training-strategy": {"configure_optimizers", "training_step", "end_epoch", "begin_phase"},
}


def blocks(language: str) -> list[str]:
    return [body for lang, body in FENCE.findall(DOC.read_text(encoding="utf-8")) if lang == language]


def doc_files() -> dict[str, str]:
    """{relative path: text} of every python block; a block without its file line fails here."""
    files = {}
    for body in blocks("python"):
        first = body.partition("\n")[0].strip()
        match = FILE_HEADER.fullmatch(first)
        assert match, f"a python block of {DOC.name} starts with {first!r}, not '# methods/NAME.py' " \
                      "or '# tests/methods/test_NAME.py': every block must be a file this test can run"
        assert match.group(1) not in files, f"{match.group(1)} appears twice in {DOC.name}"
        files[match.group(1)] = body
    return files


def method_files() -> dict[str, str]:
    """{module name: text} of the page's method files."""
    return {Path(path).stem: text for path, text in doc_files().items() if path.startswith("methods/")}


def forget(before: set[str], modules: list[str]) -> None:
    """Unregister every method registered since `before` and drop `modules` (full names) from
    sys.modules and from their parent package."""
    for name in set(registry._REGISTRY) - before:
        registry._REGISTRY.pop(name)
    for module in modules:
        sys.modules.pop(module, None)
        parent, _, child = module.rpartition(".")
        if parent in sys.modules and hasattr(sys.modules[parent], child):
            delattr(sys.modules[parent], child)


@pytest.fixture()
def walkthrough(tmp_path, monkeypatch):
    """The page's files written under tmp_path and its methods discovered as built-in ones; yields
    {method name: spec} of the methods the page registers."""
    files = doc_files()
    modules = sorted(method_files())
    tests = sorted(Path(path).stem for path in files if path.startswith("tests/"))
    assert len(modules) == 4, f"{DOC.name} should walk through four methods, one of each kind: {modules}"
    assert tests == sorted(f"test_{m}" for m in modules), "each method file needs its one test file"
    for path, text in files.items():
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text(text, encoding="utf-8")
    before = set(registry.names())
    package = importlib.import_module("vae_collapse_bench.methods")
    monkeypatch.setattr(package, "__path__", [*package.__path__, str(tmp_path / "methods")])
    monkeypatch.setattr(registry, "_discovered", False)
    importlib.invalidate_caches()
    try:
        found = {name: registry.get(name) for name in registry.names() if name not in before}
        assert sorted(spec.cls.__module__.rpartition(".")[2] for spec in found.values()) == modules
        yield found
    finally:
        forget(before, [f"{package.__name__}.{module}" for module in modules])


def test_each_method_of_the_page_passes_the_test_the_page_gives_it(walkthrough, tmp_path):
    for path in sorted((tmp_path / "tests" / "methods").glob("test_*.py")):
        spec = importlib.util.spec_from_file_location(f"adding_a_method_{path.stem}", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        tests = [f for name, f in vars(module).items() if name.startswith("test_") and inspect.isfunction(f)]
        assert tests, f"{path.name} of {DOC.name} defines no test function"
        for test in tests:
            assert not inspect.signature(test).parameters, f"{test.__name__}: the page's tests take no fixtures"
            test()


def test_the_page_shows_one_method_of_each_kind(walkthrough):
    kinds = {}
    for name, spec in walkthrough.items():
        changed = {hook for hooks in KINDS.values() for hook in hooks
                   if getattr(spec.cls, hook) is not getattr(GaussianMethod, hook)}
        kinds[name] = sorted(kind for kind, hooks in KINDS.items() if changed & hooks)
        assert len(kinds[name]) == 1, f"{name} overrides the hooks of {kinds[name] or 'no kind'}"
    assert sorted(k for (k,) in kinds.values()) == sorted(KINDS), kinds


def test_each_method_of_the_page_passes_the_generic_method_tests(walkthrough):
    generic = test_methods.TestMethod()
    checks = [name for name in dir(generic) if name.startswith("test_")]
    assert len(checks) >= 5  # the generic suite, not an empty class
    for method in walkthrough:
        for check in checks:
            getattr(generic, check)(method)


def test_each_method_of_the_page_trains_one_smoke_epoch(walkthrough, synthetic_root, tmp_path):
    corpus = data.load_corpus("synthetic", synthetic_root).truncated(64, 32, 32)
    training = replace(SMOKE.training, max_epochs=1)
    for name, spec in walkthrough.items():
        seed_everything(0)
        model = spec.cls(len(corpus.vocab), SMOKE.backbone, spec.resolve())
        logs = model.loss(corpus.splits["train"].sentences[0][None]).logs
        (record,) = Trainer(model, corpus, training, 0, tmp_path / name).fit().history
        assert math.isfinite(record["train_loss"]) and math.isfinite(record["valid_objective"]), name
        for log in logs:  # the method's named logs reach the run's history
            assert math.isfinite(record[f"train_{log}"]), (name, log)


def test_the_entry_point_of_the_page_brings_the_same_methods_from_another_package(tmp_path, monkeypatch):
    (block,) = blocks("toml")
    groups = tomllib.loads(block)["project"]["entry-points"]
    assert list(groups) == [registry.ENTRY_POINT_GROUP]
    ((point_name, package_name),) = groups[registry.ENTRY_POINT_GROUP].items()
    package = tmp_path / package_name
    package.mkdir()
    (package / "__init__.py").write_text("")
    modules = method_files()
    for module, text in modules.items():
        (package / f"{module}.py").write_text(text, encoding="utf-8")
    before = set(registry.names())
    point = EntryPoint(name=point_name, value=package_name, group=registry.ENTRY_POINT_GROUP)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(registry, "entry_points", lambda group: [point] if group == point.group else [])
    monkeypatch.setattr(registry, "_discovered", False)
    try:
        found = {registry.get(n).cls.__module__ for n in registry.names() if n not in before}
        assert found == {f"{package_name}.{module}" for module in modules}
    finally:
        forget(before, [*(f"{package_name}.{module}" for module in modules), package_name])
