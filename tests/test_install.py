"""A normal (non-editable) install works on its own: the wheel carries the dataset manifests (and the
bench.data package that reads them, beside the user's own in the data directory).

The wheel is built from a copy of the sources (so the build leaves no build/ or egg-info behind in
the repository), installed without dependencies into a fresh venv, and that venv borrows the
project's dependencies from the running interpreter's site-packages through a .pth file holding that
one path. A plain path line in a .pth does not process the .pth files found there, so the editable
install of this source tree (a finder hook installed by a .pth in that folder) stays inactive: the
fresh venv imports `vae_collapse_bench` from its own wheel or not at all. Everything runs outside the repository.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import shutil
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SOURCES = ("pyproject.toml", "README.md", "vae_collapse_bench", "bench", "methods", "datasets")
# Another project that owns the generic top-level names our folders have: it must stay intact beside us.
OTHER_PROJECT = {
    "pyproject.toml": '[project]\nname = "other-methods"\nversion = "1.0"\n'
                      '[tool.setuptools]\npackages = ["methods", "bench"]\n',
    "methods/__init__.py": 'OWNER = "other-methods"\n',
    "bench/__init__.py": 'OWNER = "other-methods"\n',
}


def build_isolation() -> list[str]:
    """Build with the running environment's setuptools when it can make wheels by itself (>= 70.1, or
    the `wheel` package beside it; pyproject.toml wants >= 68), else in pip's isolated environment."""
    try:
        major, minor = (int(p) for p in importlib.metadata.version("setuptools").split(".")[:2])
    except (importlib.metadata.PackageNotFoundError, ValueError):
        return []
    if (major, minor) >= (70, 1) or ((major, minor) >= (68, 0) and importlib.util.find_spec("wheel")):
        return ["--no-build-isolation"]
    return []


def sh(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, **kw)
    assert proc.returncode == 0, f"{cmd} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """The python of a fresh venv with only the project's wheel installed (plus borrowed dependencies)."""
    tmp = tmp_path_factory.mktemp("install")
    src = tmp / "src"
    for name in SOURCES:
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            src.mkdir(exist_ok=True)
            shutil.copy2(REPO / name, src / name)
    wheels = tmp / "wheels"
    sh([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", *build_isolation(), "-w", str(wheels), str(src)])
    (wheel,) = wheels.glob("vae_collapse_bench-*.whl")

    env_dir = tmp / "venv"
    venv.EnvBuilder(with_pip=False).create(env_dir)  # pip comes from the running interpreter (--python)
    python = env_dir / "bin" / "python"
    other = tmp / "other"
    for rel, text in OTHER_PROJECT.items():
        (other / rel).parent.mkdir(parents=True, exist_ok=True)
        (other / rel).write_text(text)
    sh([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", *build_isolation(), "-w", str(wheels), str(other)])
    (other_wheel,) = wheels.glob("other_methods-*.whl")
    sh([sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps", str(other_wheel),
        str(wheel)])
    purelib = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    fresh_site = Path(sh([str(python), "-c", purelib]).stdout.strip())
    (fresh_site / "borrowed-dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return python


def bench_env(tmp: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BENCH_", "PYTHON"))}
    return env | {"BENCH_DATA": str(tmp / "data"), "BENCH_HOME": str(tmp / "results"), "OMP_NUM_THREADS": "1",
                  "COLUMNS": "200"}


def test_installed_wheel_finds_its_manifests_and_runs(installed, tmp_path):
    env = bench_env(tmp_path)
    script = ("import vae_collapse_bench.bench as bench, vae_collapse_bench.bench.data as d; "
              "print(bench.__file__); print(d.manifest_dir()); "
              "print(d.paper_backbone('snli-mini').emb_dim)")
    where = sh([str(installed), "-c", script], cwd=tmp_path, env=env).stdout.split()
    venv_root = installed.parent.parent
    assert Path(where[0]).is_relative_to(venv_root) and not Path(where[0]).is_relative_to(REPO), where

    listing = sh([str(installed), "-m", "vae_collapse_bench", "data", "list"], cwd=tmp_path, env=env).stdout
    for name in ("synthetic", "ptb", "yahoo", "yahoo-mini", "yelp", "short-yelp", "snli", "snli-mini"):
        assert name in listing, listing
    assert Path(where[1]) == Path(where[0]).parent / "datasets", where  # the wheel's package data
    assert where[2] == "128", where  # the [backbone] of the wheel's snli.toml (bench.data is in the wheel)

    # the user's own corpus: its manifest in the data directory, listed beside the wheel's
    (tmp_path / "valid.txt").write_text("a b\nc d\ne f\ng\n")
    (tmp_path / "test.txt").write_text("a c\nb d\n")
    sh([str(installed), "-m", "vae_collapse_bench", "data", "add", "mine", "--valid", "valid.txt", "--test", "test.txt",
        "--derive-train-from", "valid:2"], cwd=tmp_path, env=env)
    assert (tmp_path / "data" / "manifests" / "mine.toml").is_file()
    assert "mine *" in sh([str(installed), "-m", "vae_collapse_bench", "data", "list"], cwd=tmp_path, env=env).stdout

    run = sh([str(installed), "-m", "vae_collapse_bench", "run", "--methods", "vae", "--dataset", "synthetic",
              "--profile", "smoke", "--quiet"], cwd=tmp_path, env=env)
    assert "1 run" in run.stdout, run.stdout


def test_installed_wheel_lives_beside_another_projects_methods_and_bench(installed, tmp_path):
    """Both wheels own their files: `bench methods` lists ours, and the other project's top-level
    `methods` and `bench` packages are still its own (nothing of ours overwrote them)."""
    env = bench_env(tmp_path)
    listing = sh([str(installed.parent / "bench"), "methods"], cwd=tmp_path, env=env).stdout
    for name in ("vae", "dg-vae", "aae", "skip-vae"):
        assert name in listing, listing
    owners = sh([str(installed), "-c", "import methods, bench; print(methods.OWNER, bench.OWNER)"],
                cwd=tmp_path, env=env).stdout.split()
    assert owners == ["other-methods", "other-methods"], owners
