"""1 vs 2 (forced CPU) devices give the same training: losses, params, BN stats, predictions.

The device count must be fixed before jax is imported, so each configuration runs
``_multidevice_worker.py`` in its own subprocess.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

WORKER = os.path.join(os.path.dirname(__file__), "_multidevice_worker.py")


def _start(n_devices: int, out_path: str, workdir: str) -> subprocess.Popen:
    env = dict(os.environ)
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={n_devices}"
    env["JAX_PLATFORMS"] = "cpu"
    # The worker builds its config from configs/default.py: the repository root must be importable.
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
    return subprocess.Popen([sys.executable, WORKER, out_path, workdir], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    d = tmp_path_factory.mktemp("multidevice")
    procs = {n: (_start(n, str(d / f"out{n}.json"), str(d / f"run{n}")), d / f"out{n}.json")
             for n in (1, 2)}
    out = {}
    for n, (proc, path) in procs.items():
        _, err = proc.communicate(timeout=240)
        assert proc.returncode == 0, f"worker with {n} devices failed:\n{err[-4000:]}"
        out[n] = json.loads(path.read_text())
    return out


def test_worker_sees_requested_devices(results):
    assert results[1]["n_devices"] == 1
    assert results[2]["n_devices"] == 2


def test_losses_and_params_match(results):
    one, two = results[1], results[2]
    np.testing.assert_allclose(one["losses"], two["losses"], atol=1e-5, rtol=0)
    np.testing.assert_allclose(one["grad_norms"], two["grad_norms"], atol=1e-5, rtol=0)
    assert len(one["params"]) == len(two["params"]) == 5  # 2 kernels, 1 bias, BN scale + bias
    for a, b in zip(one["params"], two["params"]):
        np.testing.assert_allclose(a, b, atol=1e-5, rtol=0)
    for a, b in zip(one["batch_stats"], two["batch_stats"]):
        np.testing.assert_allclose(a, b, atol=1e-5, rtol=0)
    # The run actually trained (not a no-op that trivially matches).
    assert one["losses"][0] != one["losses"][-1]


def test_predictions_match_and_drop_padding(results):
    one, two = results[1], results[2]
    # 20 examples in batches of 8: 4 padding rows dropped, rows in source order.
    assert one["pred_index"] == two["pred_index"] == list(range(20))
    np.testing.assert_allclose(one["pred_y"], two["pred_y"], atol=1e-5, rtol=0)


def test_indivisible_batch_names_device_count(results):
    assert results[1]["sharding_error"] is None
    msg = results[2]["sharding_error"]
    assert msg is not None and "batch size 3" in msg and "devices 2" in msg


def test_interrupted_loop_matches_across_device_counts(results):
    one, two = results[1], results[2]
    assert one["loop_last_step"] == two["loop_last_step"] == 4
    assert [e["step"] for e in one["loop_eval"]] == [e["step"] for e in two["loop_eval"]] == [2, 4]
    np.testing.assert_allclose([e["loss"] for e in one["loop_eval"]],
                               [e["loss"] for e in two["loop_eval"]], atol=1e-5, rtol=0)
    for a, b in zip(one["loop_params"], two["loop_params"]):
        np.testing.assert_allclose(a, b, atol=1e-5, rtol=0)
