"""Test hooks for real `bench` processes (tests/test_worker.py, tests/test_postgres.py).

Python imports `sitecustomize` at start-up from sys.path, so a test puts this folder on PYTHONPATH
and turns hooks on through the environment; with no BENCH_TEST_* variable nothing is imported.

- BENCH_TEST_HOSTNAME=NAME: socket.gethostname() returns NAME (a worker "on another machine":
  only its heartbeat can tell that it died).
- BENCH_TEST_STEP_SLEEP=S: every training step of the base training_step sleeps S seconds first
  (widens the moments a test kills a sweep at; the numbers do not change).
- BENCH_TEST_DIE_IN_EPOCH2=PATH: the first run this process trains stops at the 3rd step of epoch 2
  (epoch 1 checkpointed), waits until PATH exists, then SIGKILLs its own process.
- BENCH_TEST_RAISE_SEED=N: building a model for seed N raises RuntimeError("boom: test hook").
"""

import os

if any(name.startswith("BENCH_TEST_") for name in os.environ):
    import signal
    import socket
    import time
    from pathlib import Path

    from vae_collapse_bench.bench import model as _model
    from vae_collapse_bench.bench import runner as _runner

    if os.environ.get("BENCH_TEST_HOSTNAME"):
        _name = os.environ["BENCH_TEST_HOSTNAME"]
        socket.gethostname = lambda: _name

    _step = _model.Method.training_step
    _sleep = float(os.environ.get("BENCH_TEST_STEP_SLEEP", "0"))
    _die_when = os.environ.get("BENCH_TEST_DIE_IN_EPOCH2")
    _steps_in_epoch2 = [0]

    def _training_step(self, x, ctx):
        if _sleep:
            time.sleep(_sleep)
        if _die_when and ctx.epoch == 2:
            _steps_in_epoch2[0] += 1
            if _steps_in_epoch2[0] == 3:
                while not Path(_die_when).exists():
                    time.sleep(0.05)
                os.kill(os.getpid(), signal.SIGKILL)
        return _step(self, x, ctx)

    _model.Method.training_step = _training_step

    if os.environ.get("BENCH_TEST_RAISE_SEED"):
        _build, _bad_seed = _runner.Runner._build, int(os.environ["BENCH_TEST_RAISE_SEED"])

        def _raising_build(self, spec):
            if spec.seed == _bad_seed:
                raise RuntimeError("boom: test hook")
            return _build(self, spec)

        _runner.Runner._build = _raising_build
