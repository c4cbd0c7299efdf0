"""`python -m vae_collapse_bench ...` is the `bench` command."""

from vae_collapse_bench.bench.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
