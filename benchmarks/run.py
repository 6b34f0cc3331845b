"""lumbarjax benchmark suite: one command, one process, peers run alternately, one table.

    python benchmarks/run.py                                   # default sizes (a few minutes, 2 cores)
    python benchmarks/run.py --full                            # + realistic sizes (32x256x256 MRI, 512² X-ray)
    python benchmarks/run.py --only train,ig --out benchmarks/out/results.json

Sections (``--only`` takes these names):
  train    train step (fwd+bwd+AdamW) of the grader and the MRI outcome model (slice2d and
           lesion2d encoders) at the demo sizes: lumbarjax (jit) vs the same architecture in
           PyTorch eager (benchmarks/torch_models.py; parameter counts checked) vs MONAI's own
           classes at matched width/depth, plus a 2048² f32 matmul, in the same rounds; MONAI
           resnet18 defaults (2D X-ray, 3D MRI) in separate rounds unless --skip-resnet18.
  flops    achieved FLOP/s of each jitted step (XLA cost analysis) over the matmul's FLOP/s.
  ig       integrated gradients, 64 steps, one volume through the outcome model: lumbarjax
           (unchunked; chunks of 16 as one program, as a host loop, as a lax.scan; the demo's
           setting) vs Captum IntegratedGradients on the PyTorch twin vs the floors (one jitted
           fwd+bwd of a batch of 64, and 4 of 16); Captum on MONAI resnet18 3D unless
           --skip-resnet18.
  profile  per-part fwd+bwd of the two networks (stem, each stage, slice pool, head) in
           lumbarjax vs the PyTorch twin: where the time goes.
  data     cold DICOM -> array and cached pipeline throughput (benchmarks/bench_data.py) on a
           small synthetic cohort vs the train steps' appetite (examples/s).
  compile  compile time of every jitted function; peak host RSS (and device memory on GPU).
  scaling  step time vs batch size (4, 8, 16) and MRI volume size (lumbarjax and the twin);
           1, 2, 4, 2, 1 forced CPU devices (subprocesses, same global batch; grader, slice2d
           and lesion2d steps).
  e2e      the demo's outcome cross-validation loop (configs/demo.py: frozen lesion2d, batch 16,
           its steps, evals and prediction pass) timed for real on --e2e-folds folds, lumbarjax
           vs the same loop written in plain PyTorch with the twin (fold by fold, alternating).

Every comparison is timed round-robin (one call of each contender per round), after one
warm-up call each; the figure is the median of ``--rounds`` rounds (default 3) and every ratio
is the median of the per-round ratios. Each round records the 1-min load average and the CPU
share other processes took; rounds started above ``--max-load`` (default 1.0) per core are
flagged NOISY, figures are medians over the quiet rounds when there are any (else flagged *
in the table and ``noisy: true`` in the JSON); ``--wait-quiet S`` waits up to S s for a quiet
machine before each round. The JSON of every figure goes to benchmarks/results/<date>.json
(committed). Torch uses 2 threads.
On a GPU backend the train section adds bf16 steps and MFU (this code path has not been run
on the 2-core CPU machine where the results in RESULTS.md were made).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from types import SimpleNamespace

# PyTorch's OpenMP threads busy-wait between parallel regions by default; on a shared 2-core
# machine (and alternating with XLA's own thread pool) that spinning made a strided torch block
# 20x slower (0.6 s vs 0.03 s measured). PASSIVE is the fair setting for the peer here; export
# OMP_WAIT_POLICY=ACTIVE to override. Must be set before torch is imported.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
for p in (ROOT, HERE):
    if p not in sys.path:
        sys.path.insert(0, p)

SECTIONS = ("train", "flops", "ig", "profile", "data", "compile", "scaling", "e2e")
MATMUL_N = 2048
N_CLINICAL = 20  # demo clinical features: 8 numeric x (value, missing) + sex (F, M, missing, other)


# ============================================================================ generic helpers
def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')} load {os.getloadavg()[0]:.1f}] {msg}", flush=True)


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


# Honest measurement on a shared machine: every round records the 1-minute load average and the
# CPU share other processes took during it; a round taken at load > MAX_LOAD_PER_CORE x cores is
# flagged "noisy" (and, with --wait-quiet S, first waits up to S s for the load to drop). Figures
# are medians over the quiet rounds when there are any, else over all rounds (then flagged).
# Note: the suite's own threads count in the load average (~1 per busy core), so a machine
# running only the suite sits near 1.0 per core.
MEASURE = {"max_load_per_core": 1.0, "wait_quiet_s": 0.0}


def load_per_core() -> float:
    return os.getloadavg()[0] / (os.cpu_count() or 1)


def wait_quiet(limit_s: float) -> float:
    """Sleep (polling every 5 s) until load per core <= the threshold or limit_s passed; returns
    the seconds waited."""
    t = time.perf_counter()
    while load_per_core() > MEASURE["max_load_per_core"] and time.perf_counter() - t < limit_s:
        time.sleep(5.0)
    return time.perf_counter() - t


def _cpu_busy_s():
    """(whole machine busy CPU seconds, this process's CPU seconds) or None without psutil."""
    try:
        import psutil
    except ImportError:
        return None
    ct = psutil.cpu_times()
    busy = sum(getattr(ct, f) for f in ("user", "nice", "system", "irq", "softirq", "steal")
               if hasattr(ct, f))
    pt = psutil.Process().cpu_times()
    return busy, pt.user + pt.system + getattr(pt, "children_user", 0) + getattr(pt, "children_system", 0)


def alternate(fns: dict, rounds: int, warmup: int = 1) -> dict:
    """Round-robin timing: ``warmup`` calls of each, then ``rounds`` rounds of one call each.
    Each fn must block until its work is done.

    Returns {name: {median_s, times_s, noisy, ...}} plus the key ``"__rounds__"`` with one record
    per round: 1-min load average at its start (``load1``), load per core, the CPU share other
    processes took during the round (``foreign_cpu``, 0..1 of all cores; None without psutil),
    ``noisy`` (load per core > MEASURE["max_load_per_core"]) and the seconds waited for quiet.
    ``median_s`` is over the quiet rounds when at least one is quiet (``median_quiet``), else over
    all rounds and ``noisy`` is True; ``median_all_s`` is always over all rounds."""
    for name, f in fns.items():
        for _ in range(warmup):
            f()
    times = {n: [] for n in fns}
    info = []
    cpus = os.cpu_count() or 1
    for _ in range(rounds):
        waited = wait_quiet(MEASURE["wait_quiet_s"]) if MEASURE["wait_quiet_s"] > 0 else 0.0
        load1 = os.getloadavg()[0]
        c0, t0 = _cpu_busy_s(), time.perf_counter()
        for n, f in fns.items():
            t = time.perf_counter()
            f()
            times[n].append(time.perf_counter() - t)
        c1, wall = _cpu_busy_s(), time.perf_counter() - t0
        foreign = None
        if c0 and c1:
            foreign = max(0.0, ((c1[0] - c0[0]) - (c1[1] - c0[1])) / (wall * cpus))
        rec = {"load1": load1, "load_per_core": load1 / cpus, "foreign_cpu": foreign,
               "noisy": load1 / cpus > MEASURE["max_load_per_core"], "waited_s": waited,
               "wall_s": wall}
        info.append(rec)
        if rec["noisy"]:
            log(f"round {len(info)}/{rounds}: NOISY (load {load1:.1f} on {cpus} cores > "
                f"{MEASURE['max_load_per_core']:.1f} per core; others took "
                f"{'?' if foreign is None else f'{100 * foreign:.0f}%'} of the CPU)")
    quiet = [i for i, r in enumerate(info) if not r["noisy"]]
    out = {}
    for n, ts in times.items():
        use = [ts[i] for i in quiet] or ts
        out[n] = {"median_s": statistics.median(use), "median_all_s": statistics.median(ts),
                  "times_s": ts, "noisy": not quiet, "quiet_rounds": len(quiet)}
    out["__rounds__"] = info
    return out


def paired_ratio(res: dict, num: str, den: str) -> float:
    """Median over the (quiet, if any) rounds of time[num] / time[den] — each ratio from one round,
    so a load change between rounds cancels."""
    info = res["__rounds__"]
    idx = [i for i, r in enumerate(info) if not r["noisy"]] or list(range(len(info)))
    return statistics.median(res[num]["times_s"][i] / res[den]["times_s"][i] for i in idx)


def rounds_summary(res: dict) -> str:
    """'5 rounds, 3 quiet, load/core 0.8-1.4, others' CPU 5-40%' for the table."""
    info = res.get("__rounds__") or []
    if not info:
        return "no rounds"
    lo, hi = min(r["load_per_core"] for r in info), max(r["load_per_core"] for r in info)
    fc = [r["foreign_cpu"] for r in info if r["foreign_cpu"] is not None]
    q = sum(not r["noisy"] for r in info)
    s = f"{len(info)} rounds, {q} quiet, load/core {lo:.2f}-{hi:.2f}"
    if fc:
        s += f", others' CPU {100 * min(fc):.0f}-{100 * max(fc):.0f}%"
    if q == 0:
        s += " — ALL ROUNDS NOISY (figures flagged *)"
    return s


def contenders(res: dict):
    """(name, record) of an alternate() result, without the rounds record."""
    return [(n, r) for n, r in res.items() if n != "__rounds__"]


def torch_or_none():
    """(torch, None) or (None, reason)."""
    try:
        import torch
    except ImportError:
        return None, "peer missing: torch not installed (pip install -e '.[bench]')"
    torch.set_num_threads(2)
    return torch, None


def monai_or_none():
    try:
        from monai.networks.nets import resnet18
        return resnet18, None
    except ImportError:
        return None, "peer missing: monai not installed (pip install -e '.[bench]')"


def captum_or_none():
    try:
        from captum.attr import IntegratedGradients
        return IntegratedGradients, None
    except ImportError:
        return None, "peer missing: captum not installed (pip install -e '.[bench]')"


def cost_flops(compiled) -> float | None:
    """FLOPs of a compiled XLA program (cost_analysis may be a dict or a list of dicts)."""
    try:
        ca = compiled.cost_analysis()
    except Exception:  # noqa: BLE001 - some backends do not implement it
        return None
    if isinstance(ca, (list, tuple)):
        ca = ca[0] if ca else {}
    f = (ca or {}).get("flops")
    return float(f) if f is not None and f > 0 else None


# ============================================================================ lumbarjax side
def demo_config(quick: bool = False):
    """configs/demo.py with the library-default trainable ``slice2d`` MRI encoder (the one the
    PyTorch twin mirrors; the demo itself uses a pretrained, frozen ``lesion2d``);
    ``quick``: tiny shapes for a smoke test."""
    from configs import demo
    cfg = demo.get_config()
    cfg.outcome.model.mri.arch = "slice2d"
    cfg.outcome.model.freeze_mri = False
    if quick:
        cfg.xray.shape, cfg.mri.shape = (64, 64), (4, 32, 32)
        for t in (cfg.grader, cfg.outcome):
            t.train.batch_size = 4
    return cfg


def make_batch(b: int, mri=None, xray=None, n_clinical=N_CLINICAL, seed=0) -> dict:
    """A pipeline-shaped numpy batch: mri (B,D,H,W,1) and/or xray (B,H,W,1), labels for every
    head (grade 0..4, binary, VAS 0–100), all masks 1."""
    import numpy as np
    r = np.random.default_rng(seed)
    out = {"clinical": r.normal(size=(b, n_clinical)).astype(np.float32),
           "valid": np.ones(b, np.float32), "index": np.arange(b, dtype=np.int32)}
    labels = {"grade": r.integers(0, 5, b).astype(np.float32),
              "zcq_success": r.integers(0, 2, b).astype(np.float32),
              "back_pain_improved50": r.integers(0, 2, b).astype(np.float32),
              "leg_pain_improved50": r.integers(0, 2, b).astype(np.float32),
              "back_pain_post": r.uniform(0, 100, b).astype(np.float32),
              "leg_pain_post": r.uniform(0, 100, b).astype(np.float32)}
    out["labels"] = labels
    out["label_mask"] = {k: np.ones(b, np.float32) for k in labels}
    if mri is not None:
        out["mri"] = r.random((b, *mri, 1), dtype=np.float32)
        out["mri_present"] = np.ones(b, np.float32)
    if xray is not None:
        out["xray"] = r.random((b, *xray, 1), dtype=np.float32)
        out["xray_present"] = np.ones(b, np.float32)
    return out


def _outcome_loss(outputs, batch):
    from lumbarjax.models.fusion import outcome_loss
    return outcome_loss(outputs, batch)


def lj_models(cfg=None, dtype="float32"):
    """(grader, outcome model) of the demo config."""
    from lumbarjax.models.fusion import build_grader, build_outcome_model
    cfg = cfg or demo_config()
    g = cfg.grader.model.to_dict()
    g["dtype"] = dtype
    o = cfg.outcome.model.to_dict()
    o["dtype"] = dtype
    return build_grader(g), build_outcome_model(o)


class LJStep:
    """A compiled lumbarjax train step on a fixed batch; calling it runs one step (blocking)."""

    def __init__(self, kind: str, model, batch: dict, mesh=None, compute_dtype=None, cfg=None):
        import jax
        import ml_collections
        from lumbarjax.models.resnet2d import grader_loss
        from lumbarjax.train.state import create_train_state
        from lumbarjax.train.mesh import make_mesh, shard_batch
        from lumbarjax.train.steps import make_train_step

        cfg = cfg or demo_config()
        task = cfg.grader if kind == "grader" else cfg.outcome
        config = ml_collections.ConfigDict({"train": task.train.to_dict(),
                                            "optim": task.optim.to_dict()})
        mesh = mesh or make_mesh()
        loss = grader_loss if kind == "grader" else _outcome_loss
        self.state = create_train_state(0, model, batch, config, mesh=mesh)
        self.n_params = int(sum(x.size for x in jax.tree.leaves(self.state.params)))
        step = make_train_step(model, loss, mesh, compute_dtype=compute_dtype)
        self.batch = shard_batch(batch, mesh)
        t = time.perf_counter()
        jitted, static = (step.func, step.keywords) if hasattr(step, "func") else (step, {})
        self.compiled = jitted.lower(self.state, self.batch, **static).compile()
        self.compile_s = time.perf_counter() - t
        self.flops = cost_flops(self.compiled)
        self.examples = int(next(iter(batch["valid"].shape)))

    def __call__(self):
        import jax
        self.state, m = self.compiled(self.state, self.batch)
        jax.block_until_ready(m)


class Matmul:
    """2048² float32 matmul, jitted: the machine's dot ceiling (2 n³ FLOPs)."""

    def __init__(self, n=MATMUL_N, dtype="float32"):
        import jax
        import jax.numpy as jnp
        k1, k2 = jax.random.split(jax.random.key(0))
        self.a = jax.random.normal(k1, (n, n), dtype)
        self.b = jax.random.normal(k2, (n, n), dtype)
        self.f = jax.jit(jnp.dot).lower(self.a, self.b).compile()
        self.flops = 2.0 * n ** 3

    def __call__(self):
        self.f(self.a, self.b).block_until_ready()


# ============================================================================ PyTorch side
def torch_device(torch):
    return "cuda" if torch.cuda.is_available() else "cpu"


def torch_sync(torch):
    if torch.cuda.is_available():
        torch.cuda.synchronize()


class TorchStep:
    """Eager PyTorch train step on a fixed batch (AdamW + grad clipping)."""

    def __init__(self, torch, model, inputs, labels, loss_fn):
        import torch_models as tm
        self.torch = torch
        dev = torch_device(torch)
        self.model = model.to(dev)
        self.inputs = [x.to(dev) for x in inputs]
        self.labels = {k: v.to(dev) for k, v in labels.items()} if isinstance(labels, dict) \
            else labels.to(dev)
        self.n_params = tm.n_params(model)
        self.step = tm.make_train_step(self.model, loss_fn)

    def __call__(self):
        self.step(self.inputs, self.labels)
        torch_sync(self.torch)


def torch_batch(torch, nb: dict):
    """numpy batch -> torch tensors (channels first)."""
    t = {}
    if "xray" in nb:
        t["xray"] = torch.from_numpy(nb["xray"]).permute(0, 3, 1, 2).contiguous()
    if "mri" in nb:
        t["mri"] = torch.from_numpy(nb["mri"]).permute(0, 4, 1, 2, 3).contiguous()
        t["mri_present"] = torch.from_numpy(nb["mri_present"])
    t["clinical"] = torch.from_numpy(nb["clinical"])
    t["labels"] = {k: torch.from_numpy(v) for k, v in nb["labels"].items()}
    return t


def torch_grader_step(torch, nb, width):
    import torch_models as tm
    tb = torch_batch(torch, nb)
    model = tm.TorchGrader(width=width)
    return TorchStep(torch, model, [tb["xray"]], tb["labels"]["grade"][:, None],
                     lambda out, y: tm.corn_loss(out, y))


def torch_outcome_step(torch, nb, width, arch="slice2d"):
    import torch_models as tm
    tb = torch_batch(torch, nb)
    model = tm.TorchOutcomeModel(width=width, n_clinical=nb["clinical"].shape[1], arch=arch)
    return TorchStep(torch, model, [tb["mri"], tb["clinical"], tb["mri_present"]], tb["labels"],
                     tm.outcome_loss)


def monai_step(torch, resnet18, nb, spatial_dims):
    """MONAI resnet18 defaults (n_input_channels=1); grader: 4 CORN logits, MRI: 5 heads (BCE
    on the 3 binary, Huber on the 2 VAS/100)."""
    if spatial_dims == 2:
        return _monai_grader_step(torch, resnet18(spatial_dims=2, n_input_channels=1,
                                                  num_classes=4), nb)
    return _monai_mri_step(torch, resnet18(spatial_dims=3, n_input_channels=1, num_classes=5), nb)


def _monai_grader_step(torch, model, nb):
    import torch_models as tm
    tb = torch_batch(torch, nb)
    return TorchStep(torch, model, [tb["xray"]], tb["labels"]["grade"][:, None],
                     lambda out, y: tm.corn_loss(out[:, None, :], y))


def _monai_mri_step(torch, model, nb):
    import torch_models as tm
    tb = torch_batch(torch, nb)
    heads = tm.BINARY_HEADS + tm.REGRESSION_HEADS

    def loss(out, labels):
        return tm.outcome_loss({h: out[:, i] * (100.0 if h in tm.REGRESSION_HEADS else 1.0)
                                for i, h in enumerate(heads)}, labels)
    return TorchStep(torch, model, [tb["mri"]], tb["labels"], loss)


def monai_matched_steps(torch, nbx, nbm, gw, mw) -> dict:
    """MONAI's own classes at our widths and depths (benchmarks/torch_models.py
    ``monai_matched_*``): {name: TorchStep}."""
    import torch_models as tm
    return {"monai matched grader": _monai_grader_step(torch, tm.monai_matched_grader(gw), nbx),
            "monai matched mri": _monai_mri_step(torch, tm.monai_matched_slice2d(mw), nbm),
            "monai matched mri lesion2d": _monai_mri_step(torch, tm.monai_matched_lesion2d(mw), nbm)}


def torch_matmul(torch, n=MATMUL_N):
    dev = torch_device(torch)
    a, b = torch.randn(n, n, device=dev), torch.randn(n, n, device=dev)

    def f():
        a @ b
        torch_sync(torch)
    return f


# ============================================================================ sections
KINDS = ("grader", "mri", "mri lesion2d")


def section_train(ctx) -> dict:
    """Train steps, round-robin. Headline rounds: lumbarjax vs its PyTorch twin vs MONAI's own
    classes at matched width/depth, plus the 2048² matmul (XLA and torch). Separate rounds: MONAI
    resnet18 defaults (10-100x larger steps; alternating them with the small steps disturbed the
    small ones, benchmarks/history/2026-11.md, issue 5) against the lumbarjax steps."""
    import jax
    cfg = ctx.cfg
    torch, why_t = torch_or_none()
    resnet18, why_m = monai_or_none()
    if why_t:
        log(why_t)
    elif why_m:
        log(why_m)
    gpu = jax.default_backend() == "gpu"
    sizes = [("demo", int(cfg.grader.train.batch_size), tuple(cfg.xray.shape),
              tuple(cfg.mri.shape))]
    if ctx.full:
        sizes.append(("realistic", None, (512, 512), (32, 256, 256)))
    out = {"sizes": {}, "notes": []}
    gw, mw = int(cfg.grader.model.width), int(cfg.outcome.model.mri.width)
    grader, outcome = lj_models(cfg)
    lesion_cfg = demo_config(ctx.quick)  # the demo's lesion2d encoder, trainable here
    lesion_cfg.outcome.model.mri.arch = "lesion2d"
    _, outcome_lesion = lj_models(lesion_cfg)
    matmul = Matmul()
    for label, b, xs, ms in sizes:
        bx, bm = (b, b) if b else (4, 1)
        log(f"train/{label}: X-ray {bx} x {xs}, MRI {bm} x {ms}: compiling lumbarjax steps")
        nbx, nbm = make_batch(bx, xray=xs), make_batch(bm, mri=ms)
        fns, meta = {}, {}
        for name, kind, model, nb in (("lumbarjax grader", "grader", grader, nbx),
                                      ("lumbarjax mri", "outcome", outcome, nbm),
                                      ("lumbarjax mri lesion2d", "outcome", outcome_lesion, nbm)):
            s = LJStep(kind, model, nb, cfg=cfg)
            fns[name] = s
            meta[name] = {"params": s.n_params, "flops": s.flops, "compile_s": s.compile_s,
                          "examples": s.examples}
            if gpu and "lesion2d" not in name:
                gm, om = lj_models(cfg, "float32")
                import jax.numpy as jnp
                s16 = LJStep(kind, gm if kind == "grader" else om, nb, cfg=cfg,
                             compute_dtype=jnp.bfloat16)
                fns[name + " bf16"] = s16
                meta[name + " bf16"] = {"params": s16.n_params, "flops": s16.flops,
                                        "compile_s": s16.compile_s, "examples": s16.examples}
        big = {}
        if torch is not None:
            for name, f in (("pytorch twin grader", lambda: torch_grader_step(torch, nbx, gw)),
                            ("pytorch twin mri", lambda: torch_outcome_step(torch, nbm, mw)),
                            ("pytorch twin mri lesion2d",
                             lambda: torch_outcome_step(torch, nbm, mw, "lesion2d"))):
                s = f()
                fns[name] = s
                meta[name] = {"params": s.n_params}
            if resnet18 is not None:
                for name, s in monai_matched_steps(torch, nbx, nbm, gw, mw).items():
                    fns[name] = s
                    meta[name] = {"params": s.n_params}
                if not ctx.skip_resnet18:
                    for name, sd, nb in (("monai resnet18 2d grader", 2, nbx),
                                         ("monai resnet18 3d mri", 3, nbm)):
                        s = monai_step(torch, resnet18, nb, sd)
                        big[name] = s
                        meta[name] = {"params": s.n_params}
            fns["pytorch matmul 2048"] = torch_matmul(torch)
            meta["pytorch matmul 2048"] = {"flops": 2.0 * MATMUL_N ** 3}
        fns["xla matmul 2048"] = matmul
        meta["xla matmul 2048"] = {"flops": matmul.flops, "compile_s": 0.0}
        for k in KINDS:
            lj = meta[f"lumbarjax {k}"]
            for peer in (f"pytorch twin {k}", f"monai matched {k}"):
                if peer in meta:
                    msg = (f"params {k}: lumbarjax {lj['params']:,} / {peer} "
                           f"{meta[peer]['params']:,}")
                    if "twin" in peer:
                        lj["params_match_twin"] = lj["params"] == meta[peer]["params"]
                        msg += " -> " + ("match" if lj["params_match_twin"] else "MISMATCH")
                    log(msg)
                    out["notes"].append(msg)
        log(f"train/{label}: timing {len(fns)} contenders round-robin, {ctx.rounds} rounds")
        res = alternate(fns, ctx.rounds)
        log(f"train/{label}: {rounds_summary(res)}")
        for n, r in contenders(res):
            r.update(meta.get(n, {}))
        for k in KINDS:
            for peer in (f"pytorch twin {k}", f"monai matched {k}"):
                if peer in res:
                    res[f"lumbarjax {k}"][f"speedup_vs_{peer}"] = paired_ratio(
                        res, peer, f"lumbarjax {k}")
        mm = res["xla matmul 2048"]
        mm["flop_per_s"] = mm["flops"] / mm["median_s"]
        if "pytorch matmul 2048" in res:
            pm = res["pytorch matmul 2048"]
            pm["flop_per_s"] = pm["flops"] / pm["median_s"]
        entry = {"xray": [bx, *xs], "mri": [bm, *ms], "results": res}
        if big:
            rounds_big = min(ctx.rounds, 3)
            ref = {"lumbarjax grader": fns["lumbarjax grader"], "lumbarjax mri": fns["lumbarjax mri"]}
            log(f"train/{label}: MONAI resnet18 defaults vs lumbarjax, {rounds_big} rounds")
            rb = alternate({**ref, **big}, rounds_big)
            for n, r in contenders(rb):
                r.update(meta.get(n, {}))
            rb["lumbarjax grader"]["speedup_vs_monai resnet18 2d grader"] = paired_ratio(
                rb, "monai resnet18 2d grader", "lumbarjax grader")
            rb["lumbarjax mri"]["speedup_vs_monai resnet18 3d mri"] = paired_ratio(
                rb, "monai resnet18 3d mri", "lumbarjax mri")
            entry["resnet18"] = rb
        out["sizes"][label] = entry
        for n, r in contenders(res):
            log(f"  {n:28s} {r['median_s']:8.3f} s")
    out["peer_missing"] = [w for w in (why_t, why_m) if w]
    return out


def section_flops(ctx) -> dict:
    """Achieved FLOP/s of each jitted step (and the twins, same FLOP count) / matmul FLOP/s."""
    import jax
    tr = ctx.results.get("train")
    if not tr:
        return {"skipped": "needs the train section"}
    out = {}
    peak = gpu_peak_flops() if jax.default_backend() == "gpu" else None
    for label, s in tr["sizes"].items():
        res = s["results"]
        ceiling = res["xla matmul 2048"]["flop_per_s"]
        rows = {}
        for k in KINDS:
            flops = res[f"lumbarjax {k}"].get("flops")
            if not flops:
                continue
            for name in (f"lumbarjax {k}", f"pytorch twin {k}", f"lumbarjax {k} bf16"):
                if name in res:
                    fps = flops / res[name]["median_s"]
                    rows[name] = {"gflop_per_step": flops / 1e9, "gflop_per_s": fps / 1e9,
                                  "fraction_of_matmul": fps / ceiling}
                    if peak:
                        rows[name]["mfu"] = fps / peak[1 if "bf16" in name else 0]
        out[label] = {"matmul_gflop_per_s": ceiling / 1e9, "rows": rows}
        if "pytorch matmul 2048" in res:
            out[label]["pytorch_matmul_gflop_per_s"] = res["pytorch matmul 2048"]["flop_per_s"] / 1e9
    return out


def gpu_peak_flops():
    """(fp32, bf16) dense peak FLOP/s of the first GPU from its name (vendor datasheets)."""
    import jax
    kind = jax.devices()[0].device_kind.lower()
    table = {"h200": (67e12, 989e12), "h100": (67e12, 989e12), "a100": (19.5e12, 312e12),
             "l4": (30e12, 121e12), "a10": (31e12, 125e12)}
    for k, v in table.items():
        if k in kind:
            return v
    return None


def section_ig(ctx) -> dict:
    """IG 64 steps on one volume: lumbarjax vs Captum on the twin vs the batched floor."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    from lumbarjax.explain import blurred, integrated_gradients

    cfg = ctx.cfg
    steps = 64
    ms = tuple(cfg.mri.shape)
    mw = int(cfg.outcome.model.mri.width)
    _, model = lj_models(cfg)
    nb = make_batch(1, mri=ms)
    variables = jax.jit(lambda k, b: model.init(k, b, train=False))(jax.random.key(0), nb)

    def fn(inputs, static):
        b = {"mri": inputs["mri"], "mri_present": static["present"],
             "clinical": static["clinical"]}
        return model.apply(static["variables"], b, train=False)["zcq_success"]

    static1 = {"variables": variables, "present": jnp.ones(1), "clinical": jnp.asarray(nb["clinical"])}
    x = {"mri": jnp.asarray(nb["mri"])}
    base = blurred(x, 2.0)
    static64 = {"variables": variables, "present": jnp.ones(steps),
                "clinical": jnp.asarray(np.repeat(nb["clinical"], steps, 0))}
    xf = jnp.asarray(np.random.default_rng(1).random((steps, *ms, 1), dtype=np.float32))
    floor = jax.jit(jax.grad(lambda v, s: jnp.sum(fn({"mri": v}, s))))
    t = time.perf_counter()
    floor_c = floor.lower(xf, static64).compile()
    compile_s = {"floor (fwd+bwd of 64)": time.perf_counter() - t}
    flops = {"floor (fwd+bwd of 64)": cost_flops(floor_c)}
    chunk = 16
    xc = xf[:chunk]
    static_c = {"variables": variables, "present": jnp.ones(chunk),
                "clinical": jnp.asarray(np.repeat(nb["clinical"], chunk, 0))}
    t = time.perf_counter()
    floor_chunk_c = floor.lower(xc, static_c).compile()
    compile_s[f"floor ({steps // chunk} x fwd+bwd of {chunk})"] = time.perf_counter() - t

    def ig(steps_, chunk_, loop="auto"):
        def f():
            a, d = integrated_gradients(fn, x, base, steps=steps_, method="gausslegendre",
                                        chunk_size=chunk_, static=static1, chunk_loop=loop)
            jax.block_until_ready(a)
        return f

    def floor_chunks():
        for _ in range(steps // chunk):
            g = floor_chunk_c(xc, static_c)
        jax.block_until_ready(g)

    ex_steps, ex_chunk = int(cfg.explain.steps), cfg.explain.chunk_size
    ex_chunk = None if not ex_chunk else int(ex_chunk)
    fns = {"floor (fwd+bwd of 64)": lambda: jax.block_until_ready(floor_c(xf, static64)),
           f"floor ({steps // chunk} x fwd+bwd of {chunk})": floor_chunks,
           "lumbarjax IG 64": ig(steps, None),
           f"lumbarjax IG 64 chunk{chunk}": ig(steps, chunk),
           "lumbarjax IG 64 chunk8": ig(steps, 8),
           f"lumbarjax IG 64 chunk{chunk} python": ig(steps, chunk, "python"),
           f"lumbarjax IG 64 chunk{chunk} scan": ig(steps, chunk, "scan"),
           f"lumbarjax IG {ex_steps} chunk{ex_chunk} (demo)": ig(ex_steps, ex_chunk)}
    for name, f in list(fns.items()):
        if name.startswith("lumbarjax"):  # first call = trace + compile
            t = time.perf_counter()
            f()
            compile_s[name] = time.perf_counter() - t
    out = {"shape": [1, *ms, 1], "steps": steps, "method": "gausslegendre", "notes": [],
           "compile_s": compile_s, "flops": flops}
    torch, why = torch_or_none()
    IG, why_c = captum_or_none()
    resnet18, why_m = monai_or_none()
    for w in (why, why_c):
        if w:
            log(w)
            out["notes"].append(w)
    if torch is not None and IG is not None:
        import torch_models as tm
        dev = torch_device(torch)
        twin = tm.ZcqLogit(tm.TorchOutcomeModel(width=mw, n_clinical=N_CLINICAL)).to(dev).eval()
        tb = torch_batch(torch, nb)
        tx = tb["mri"].to(dev)
        tbase = torch.from_numpy(np.array(base["mri"])).permute(0, 4, 1, 2, 3).contiguous().to(dev)
        extra = (tb["clinical"].to(dev), tb["mri_present"].to(dev))
        ig_twin = IG(twin)

        def captum_twin():
            ig_twin.attribute(tx, baselines=tbase, additional_forward_args=extra, n_steps=steps,
                              method="gausslegendre")
            torch_sync(torch)
        fns["captum IG 64 (pytorch twin)"] = captum_twin

        def captum_twin_batched(b):   # Captum's own chunking of the 64 points, as fair as ours
            def f():
                ig_twin.attribute(tx, baselines=tbase, additional_forward_args=extra, n_steps=steps,
                                  method="gausslegendre", internal_batch_size=b)
                torch_sync(torch)
            return f
        for b in (8, chunk):
            fns[f"captum IG 64 (pytorch twin) batch{b}"] = captum_twin_batched(b)
        txf = torch.from_numpy(np.array(xf)).permute(0, 4, 1, 2, 3).contiguous().to(dev)
        extra64 = tuple(e.repeat(steps, *([1] * (e.ndim - 1))) for e in extra)

        def torch_floor():
            v = txf.clone().requires_grad_(True)
            twin(v, *extra64).sum().backward()
            torch_sync(torch)
        fns["pytorch twin floor (fwd+bwd of 64)"] = torch_floor
        if resnet18 is not None and not ctx.skip_resnet18:
            m3 = resnet18(spatial_dims=3, n_input_channels=1, num_classes=5).to(dev).eval()
            ig_m = IG(lambda v: m3(v)[:, 0])

            def captum_monai():
                ig_m.attribute(tx, baselines=tbase, n_steps=ex_steps, method="gausslegendre",
                               internal_batch_size=ex_chunk)
                torch_sync(torch)
            fns[f"captum IG {ex_steps} (monai resnet18 3d, demo)"] = captum_monai
    log(f"ig: {len(fns)} contenders round-robin, {ctx.rounds} rounds")
    res = alternate(fns, ctx.rounds)
    log(f"ig: {rounds_summary(res)}")
    out["results"] = res
    fl = "floor (fwd+bwd of 64)"
    out["compile_s_note"] = "lumbarjax entries: first call (trace + compile + one run)"
    out["over_floor"] = {n: paired_ratio(res, n, fl) for n, _ in contenders(res)
                         if n.startswith("lumbarjax IG 64")}
    out["over_chunk_floor"] = {n: paired_ratio(res, n, f"floor ({steps // chunk} x fwd+bwd of {chunk})")
                               for n, _ in contenders(res) if n.startswith(f"lumbarjax IG 64 chunk{chunk}")}
    out["ig_over_floor"] = out["over_floor"]["lumbarjax IG 64"]
    out["ig_chunk16_over_floor"] = out["over_floor"][f"lumbarjax IG 64 chunk{chunk}"]
    if "captum IG 64 (pytorch twin)" in res:
        best = min(("lumbarjax IG 64", f"lumbarjax IG 64 chunk{chunk}"),
                   key=lambda n: res[n]["median_s"])
        out["captum_over_lumbarjax"] = paired_ratio(res, "captum IG 64 (pytorch twin)", "lumbarjax IG 64")
        out["captum_over_lumbarjax_chunk16"] = paired_ratio(res, "captum IG 64 (pytorch twin)",
                                                            f"lumbarjax IG 64 chunk{chunk}")
        out["captum_over_lumbarjax_best"] = paired_ratio(res, "captum IG 64 (pytorch twin)", best)
        out["captum_over_its_floor"] = paired_ratio(res, "captum IG 64 (pytorch twin)",
                                                    "pytorch twin floor (fwd+bwd of 64)")
        out["lumbarjax_floor_over_twin_floor"] = paired_ratio(
            res, fl, "pytorch twin floor (fwd+bwd of 64)")
        # each side at its fastest chunking (medians), then the paired ratio of those two
        ours = min(("lumbarjax IG 64", f"lumbarjax IG 64 chunk{chunk}", "lumbarjax IG 64 chunk8"),
                   key=lambda n: res[n]["median_s"])
        theirs = min((n for n in res if n.startswith("captum IG 64 (pytorch twin)")),
                     key=lambda n: res[n]["median_s"])
        out["best_vs_best"] = {"lumbarjax": ours, "captum": theirs,
                               "captum_over_lumbarjax": paired_ratio(res, theirs, ours)}
    for n, r in contenders(res):
        log(f"  {n:42s} {r['median_s']:8.3f} s")
    return out


def section_profile(ctx) -> dict:
    """Per-part fwd+bwd (grad w.r.t. params and input) in lumbarjax vs the twin's layers."""
    import flax.linen as nn
    import jax
    import jax.numpy as jnp
    import numpy as np
    from lumbarjax.models.encoder3d import SliceAttentionPool
    from lumbarjax.models.resnet2d import BasicBlock, PatchifyStem, global_pool

    cfg = ctx.cfg
    torch, why = torch_or_none()
    out = {"notes": [why] if why else []}
    b = int(cfg.grader.train.batch_size)
    d, mh, mwid = cfg.mri.shape
    nets = {"grader": ((b, *cfg.xray.shape, 1), int(cfg.grader.model.width), 4),
            "mri slice2d": ((b * d, mh, mwid, 1), int(cfg.outcome.model.mri.width), 3)}
    if torch is not None:
        import torch_models as tm
    for net, (shape, w, n_stages) in nets.items():
        parts = [("stem (patchify)", PatchifyStem(w, (4, 4)), shape,
                  (lambda: tm.TorchResNet2D((1,) * n_stages, w).stem) if torch else None)]
        h, wd, c = shape[1] // 4, shape[2] // 4, w
        for i in range(n_stages):
            s = 2 if i > 0 else 1
            cout = w * 2 ** i
            parts.append((f"stage{i} block ({c}->{cout}, /{s})",
                          BasicBlock(cout, (3, 3), (s, s)), (shape[0], h, wd, c),
                          (lambda c=c, cout=cout, s=s: tm.BasicBlock(c, cout, s)) if torch else None))
            h, wd, c = -(-h // s), -(-wd // s), cout
        parts.append((f"conv3x3 only ({c}->{c})", nn.Conv(c, (3, 3), use_bias=False),
                      (shape[0], h, wd, c),
                      (lambda c=c: torch.nn.Conv2d(c, c, 3, padding=1, bias=False)) if torch else None))
        parts.append((f"groupnorm only ({c})", nn.GroupNorm(8), (shape[0], h, wd, c),
                      (lambda c=c: tm.group_norm(c)) if torch else None))
        fns, meta = {}, {}
        rng = np.random.default_rng(0)
        for name, mod, ishape, tmk in parts:
            x = jnp.asarray(rng.normal(size=ishape), jnp.float32)
            params = mod.init(jax.random.key(0), x)
            ct = jnp.asarray(rng.normal(size=jax.eval_shape(mod.apply, params, x).shape), jnp.float32)
            g = jax.jit(jax.grad(lambda p, v, m=mod, ct=ct: jnp.sum(m.apply(p, v) * ct),
                                 argnums=(0, 1)))
            t = time.perf_counter()
            gc = g.lower(params, x).compile()
            meta[f"lumbarjax {name}"] = {"compile_s": time.perf_counter() - t,
                                         "flops": cost_flops(gc)}
            fns[f"lumbarjax {name}"] = (lambda gc=gc, p=params, v=x: jax.block_until_ready(gc(p, v)))
            if tmk is not None:
                tmod = tmk()
                tx_ = torch.from_numpy(np.array(x)).permute(0, 3, 1, 2).contiguous()
                tct = torch.from_numpy(np.array(ct)).permute(0, 3, 1, 2).contiguous()

                def tf(m=tmod, v=tx_, c_=tct):
                    v = v.clone().requires_grad_(True)
                    m.zero_grad(set_to_none=True)
                    (m(v) * c_).sum().backward()
                fns[f"pytorch {name}"] = tf
        log(f"profile/{net}: {len(fns)} parts round-robin, {ctx.rounds} rounds")
        res = alternate(fns, ctx.rounds)
        for n, r in contenders(res):
            r.update(meta.get(n, {}))
        rows = {}
        for name, *_ in parts:
            lj = res[f"lumbarjax {name}"]
            row = {"lumbarjax_s": lj["median_s"], "gflop": (lj.get("flops") or 0) / 1e9,
                   "noisy": lj["noisy"]}
            if f"pytorch {name}" in res:
                row["pytorch_s"] = res[f"pytorch {name}"]["median_s"]
                row["lumbarjax_speed_vs_pytorch"] = paired_ratio(res, f"pytorch {name}",
                                                                 f"lumbarjax {name}")
            rows[name] = row
            log(f"  {net:12s} {name:34s} lj {row['lumbarjax_s']:.4f} s  "
                f"torch {row.get('pytorch_s', float('nan')):.4f} s")
        out[net] = {"input": list(shape), "rows": rows, "rounds": res["__rounds__"]}
    return out


def section_data(ctx) -> dict:
    """bench_data.run on a small synthetic cohort under a temp dir vs the steps' appetite."""
    import bench_data
    cfg = ctx.cfg
    with tempfile.TemporaryDirectory(prefix="lj_bench_data_") as tmp:
        args = SimpleNamespace(patients=ctx.patients, seed=0, workdir=tmp,
                               mri_spacing=list(cfg.mri.spacing), mri_shape=list(cfg.mri.shape),
                               xray_shape=list(cfg.xray.shape),
                               batch_size=int(cfg.outcome.train.batch_size), batches=20,
                               threads=0, num_workers=0)
        log(f"data: synthetic cohort of {ctx.patients} patients in {tmp}")
        t = time.perf_counter()
        r = bench_data.run(args)
        r["wall_s_including_cohort"] = time.perf_counter() - t
    tr = ctx.results.get("train", {}).get("sizes", {}).get("demo")
    if tr:
        res = tr["results"]
        b = int(cfg.outcome.train.batch_size)
        r["appetite_examples_per_s"] = {
            "grader step": b / res["lumbarjax grader"]["median_s"],
            "mri step": b / res["lumbarjax mri"]["median_s"]}
        r["pipeline_over_appetite"] = {
            k: r["pipeline"]["examples_per_s"] / v for k, v in r["appetite_examples_per_s"].items()}
    bench_data.print_table(r)
    return r


def section_compile(ctx) -> dict:
    """Compile times gathered from the other sections + peak memory."""
    import jax
    out = {"compile_s": {}}
    for label, s in ctx.results.get("train", {}).get("sizes", {}).items():
        for n, r in contenders(s["results"]):
            if "compile_s" in r and n.startswith("lumbarjax"):
                out["compile_s"][f"train step {n} ({label})"] = r["compile_s"]
    for n, v in ctx.results.get("ig", {}).get("compile_s", {}).items():
        out["compile_s"][f"ig: {n}"] = v
    for net, r in ctx.results.get("profile", {}).items():
        if isinstance(r, dict) and "rows" in r:
            pass
    out["peak_host_rss_mib"] = peak_rss_mib()
    try:
        import psutil
        out["host_rss_now_mib"] = psutil.Process().memory_info().rss / 2 ** 20
    except ImportError:
        out["host_rss_now_mib"] = None
    if jax.default_backend() != "cpu":
        try:
            ms = jax.devices()[0].memory_stats() or {}
            out["device_peak_mib"] = ms.get("peak_bytes_in_use", 0) / 2 ** 20
        except Exception as e:  # noqa: BLE001
            out["device_peak_mib"] = f"unavailable: {e}"
    return out


def _worker_devices(n: int, rounds: int, quick: bool) -> None:
    """Subprocess body: grader, MRI (slice2d) and lesion2d (the demo's pretrained encoder,
    trained whole) steps at the demo's global batch on n forced devices."""
    import jax
    from lumbarjax.train.mesh import make_mesh
    cfg = demo_config(quick)
    grader, outcome = lj_models(cfg)
    lesion_cfg = demo_config(quick)
    lesion_cfg.outcome.model.mri.arch = "lesion2d"
    _, outcome_lesion = lj_models(lesion_cfg)
    b = int(cfg.outcome.train.batch_size)
    mesh = make_mesh()
    nbm = make_batch(b, mri=tuple(cfg.mri.shape))
    steps = {"grader": LJStep("grader", grader, make_batch(b, xray=tuple(cfg.xray.shape)),
                              mesh=mesh, cfg=cfg),
             "mri": LJStep("outcome", outcome, nbm, mesh=mesh, cfg=cfg),
             "mri lesion2d": LJStep("outcome", outcome_lesion, nbm, mesh=mesh, cfg=cfg)}
    res = alternate(steps, rounds)
    print("RESULT " + json.dumps({"devices": len(jax.devices()), "batch": b,
                                  **{k: v["median_s"] for k, v in contenders(res)},
                                  "compile_s": {k: s.compile_s for k, s in steps.items()}}))


def section_scaling(ctx) -> dict:
    import jax
    cfg = ctx.cfg
    torch, why = torch_or_none()
    out = {"notes": [why] if why else []}
    grader, outcome = lj_models(cfg)
    gw, mw = int(cfg.grader.model.width), int(cfg.outcome.model.mri.width)
    fns = {}
    for b in ((2, 4) if ctx.quick else (4, 8, 16)):
        nbx, nbm = make_batch(b, xray=tuple(cfg.xray.shape)), make_batch(b, mri=tuple(cfg.mri.shape))
        fns[f"lumbarjax grader B={b}"] = LJStep("grader", grader, nbx, cfg=cfg)
        fns[f"lumbarjax mri B={b}"] = LJStep("outcome", outcome, nbm, cfg=cfg)
        if torch is not None:
            fns[f"pytorch twin grader B={b}"] = torch_grader_step(torch, nbx, gw)
            fns[f"pytorch twin mri B={b}"] = torch_outcome_step(torch, nbm, mw)
    vols = [tuple(cfg.mri.shape)] + ([] if ctx.quick else [(16, 128, 128)]) \
        + ([(32, 256, 256)] if ctx.full else [])
    for v in vols[1:]:
        nbm = make_batch(4, mri=v)
        fns[f"lumbarjax mri B=4 {v}"] = LJStep("outcome", outcome, nbm, cfg=cfg)
        if torch is not None:
            fns[f"pytorch twin mri B=4 {v}"] = torch_outcome_step(torch, nbm, mw)
    log(f"scaling: {len(fns)} contenders round-robin, {ctx.rounds} rounds")
    res = alternate(fns, ctx.rounds)
    for n, r in contenders(res):
        if isinstance(fns[n], LJStep):
            r["compile_s"], r["flops"] = fns[n].compile_s, fns[n].flops
        log(f"  {n:40s} {r['median_s']:8.3f} s")
    out["in_process"] = res
    out["volumes"] = [list(v) for v in vols]
    if jax.default_backend() == "cpu" and not ctx.no_subprocess:
        devs = {}
        # 1, 2, 4 devices, then 2 and 1 again: the subprocesses cannot alternate round by round,
        # so the repeat shows how much the machine drifted between them
        for i, n in enumerate((1, 2, 4, 2, 1)):
            env = dict(os.environ)
            env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") +
                                f" --xla_force_host_platform_device_count={n}").strip()
            log(f"scaling: subprocess with {n} forced CPU device(s)")
            p = subprocess.run([sys.executable, os.path.abspath(__file__), "--worker-devices",
                                str(n), "--rounds", str(ctx.rounds)] + (["--quick"] if ctx.quick else []), env=env,
                               capture_output=True, text=True, cwd=ROOT)
            line = [ln for ln in p.stdout.splitlines() if ln.startswith("RESULT ")]
            key = str(n) if i < 3 else f"{n} (repeat)"
            if p.returncode or not line:
                devs[key] = {"error": (p.stderr or p.stdout)[-2000:]}
            else:
                devs[key] = json.loads(line[-1][7:])
                devs[key]["load_per_core_after"] = round(load_per_core(), 2)
                log(f"  {key} devices: grader {devs[key]['grader']:.3f} s, mri "
                    f"{devs[key]['mri']:.3f} s, lesion2d {devs[key]['mri lesion2d']:.3f} s")
        out["forced_cpu_devices"] = devs
        out["notes"].append("forced CPU devices run one after another in subprocesses (not "
                            "alternated); on 2 cores N devices share the same 2 cores, so more "
                            "devices cannot be faster")
    return out


def _e2e_data(n: int, shape, seed: int = 0) -> dict:
    """The demo-sized outcome cohort as in-memory numpy arrays (same arrays for both sides)."""
    return make_batch(n, mri=shape, seed=seed)


def _rows(data: dict, idx) -> dict:
    import numpy as np
    idx = np.asarray(idx)

    def take(v):
        return {k: take(x) for k, x in v.items()} if isinstance(v, dict) else v[idx]
    out = take(data)
    out["index"] = np.arange(len(idx), dtype=np.int32)
    return out


def _fold_plan(n: int, folds: int, steps: int, batch: int, eval_every: int, val_fraction: float,
               fold: int, seed: int = 0) -> dict:
    """Patient indices of one fold: test (held out), inner validation, and the row indices of
    every training batch — drawn once, used by both pipelines."""
    import numpy as np
    r = np.random.default_rng(seed + fold)
    perm = np.random.default_rng(seed).permutation(n)
    test = np.sort(perm[fold::folds])
    rest = r.permutation(np.setdiff1d(perm, test))
    n_val = max(1, int(round(val_fraction * len(rest))))
    val, train = np.sort(rest[:n_val]), rest[n_val:]
    batches = [r.choice(train, batch, replace=False) for _ in range(steps)]
    return {"test": test, "val": val, "batches": batches, "eval_every": eval_every}


def _eval_batches(idx, batch: int):
    """Fixed-size batches of ``idx`` (the last padded by repeating, valid flag 0)."""
    import numpy as np
    idx = np.asarray(idx)
    for i in range(0, len(idx), batch):
        part = idx[i:i + batch]
        valid = np.ones(batch, np.float32)
        if len(part) < batch:
            valid[len(part):] = 0
            part = np.concatenate([part, np.repeat(part[-1:], batch - len(part))])
        yield part, valid


def e2e_lumbarjax_fold(cfg, data, plan) -> dict:
    """One outcome-CV fold the lumbarjax way: create_train_state + the library's jitted train
    step (memoised across folds), eval on the inner validation every ``eval_every`` steps and a
    prediction pass over the held-out fold. Returns wall seconds (compile included)."""
    import jax
    import ml_collections
    import numpy as np
    from lumbarjax.models.fusion import build_outcome_model
    from lumbarjax.train.state import create_train_state
    from lumbarjax.train.mesh import make_mesh, shard_batch
    from lumbarjax.train.steps import make_eval_step, make_train_step

    t0 = time.perf_counter()
    task = cfg.outcome
    optim = task.optim.to_dict()
    if task.model.freeze_mri:  # as lumbarjax.pipelines.crossval does for a frozen encoder
        optim["frozen"] = tuple(sorted(set(optim.get("frozen", ()) or ()) | {"mri_encoder"}))
    config = ml_collections.ConfigDict({"train": task.train.to_dict(), "optim": optim})
    model = build_outcome_model(task.model.to_dict())
    mesh = make_mesh()
    b = int(task.train.batch_size)
    state = create_train_state(int(plan["batches"][0][0]), model,
                               _rows(data, plan["batches"][0]), config, mesh=mesh)
    step = make_train_step(model, _outcome_loss, mesh)
    ev = make_eval_step(model, mesh)

    def predict(idx):
        outs = []
        for part, valid in _eval_batches(idx, b):
            rows = _rows(data, part)
            rows["valid"] = valid
            o = ev(state, shard_batch(rows, mesh))
            outs.append(np.asarray(o["zcq_success"])[valid > 0])
        return np.concatenate(outs)

    for i, bi in enumerate(plan["batches"]):
        state, m = step(state, shard_batch(_rows(data, bi), mesh))
        if (i + 1) % plan["eval_every"] == 0:
            predict(plan["val"])
    jax.block_until_ready(m)
    pred = predict(plan["test"])
    return {"wall_s": time.perf_counter() - t0, "n_test": int(len(pred))}


def e2e_torch_fold(torch, cfg, data, plan) -> dict:
    """The same fold as a PyTorch user writes it with the twin (benchmarks/torch_models.py):
    eager AdamW + clipping, encoder frozen (requires_grad False, forward under no_grad) when the
    config freezes it, the same batches, evaluations and prediction pass."""
    import numpy as np
    import torch_models as tm
    t0 = time.perf_counter()
    task = cfg.outcome
    b = int(task.train.batch_size)
    torch.manual_seed(int(plan["batches"][0][0]))
    model = tm.TorchOutcomeModel(width=int(task.model.mri.width), n_clinical=N_CLINICAL,
                                 arch=str(task.model.mri.arch),
                                 freeze_mri=bool(task.model.freeze_mri))
    step = tm.make_train_step(model, tm.outcome_loss, lr=float(task.optim.lr),
                              weight_decay=float(task.optim.weight_decay),
                              clip_norm=float(task.optim.clip_norm))

    def tb(idx):
        return torch_batch(torch, _rows(data, idx))

    def predict(idx):
        model.eval()
        outs = []
        with torch.no_grad():
            for part, valid in _eval_batches(idx, b):
                t = tb(part)
                o = model(t["mri"], t["clinical"], t["mri_present"])["zcq_success"].numpy()
                outs.append(o[valid > 0])
        model.train()
        return np.concatenate(outs)

    for i, bi in enumerate(plan["batches"]):
        t = tb(bi)
        step([t["mri"], t["clinical"], t["mri_present"]], t["labels"])
        if (i + 1) % plan["eval_every"] == 0:
            predict(plan["val"])
    pred = predict(plan["test"])
    return {"wall_s": time.perf_counter() - t0, "n_test": int(len(pred))}


def section_e2e(ctx) -> dict:
    """The demo's outcome cross-validation loop timed for real, fold by fold, lumbarjax vs the
    PyTorch twin written the plain PyTorch way (configs/demo.py: lesion2d encoder frozen, batch
    16, outcome.train.num_steps steps, evaluation every eval_every steps, a prediction pass per
    fold; the same in-memory batches for both — the data pipeline is measured in ``data``).
    ``--e2e-folds`` of the config's folds are run, alternating lumbarjax and PyTorch per fold;
    fold 1 of lumbarjax includes its compiles (memoised for later folds, as in the demo)."""
    from configs import demo
    torch, why = torch_or_none()
    if torch is None:
        return {"skipped": why}
    cfg = demo.get_config()
    if ctx.quick:
        cfg.mri.shape = (4, 32, 32)
        cfg.outcome.train.num_steps = 30
        cfg.outcome.train.eval_every = 10
        cfg.outcome.optim.warmup_steps = 5
    n = int(cfg.data.demo_patients)
    folds = int(cfg.outcome.cv.num_folds)
    run_folds = min(ctx.e2e_folds, folds)
    steps, b = int(cfg.outcome.train.num_steps), int(cfg.outcome.train.batch_size)
    data = _e2e_data(n, tuple(cfg.mri.shape))
    out = {"estimate": False, "patients": n, "folds_in_cv": folds, "folds_run": run_folds,
           "steps_per_fold": steps, "batch": b, "arch": str(cfg.outcome.model.mri.arch),
           "freeze_mri": bool(cfg.outcome.model.freeze_mri), "eval_every":
           int(cfg.outcome.train.eval_every), "folds": [],
           "not_included": "data loading/augmentation (same arrays for both), checkpoints, "
                           "metrics files, the pretraining and grader stages"}
    for f in range(run_folds):
        plan = _fold_plan(n, folds, steps, b, int(cfg.outcome.train.eval_every),
                          float(cfg.outcome.cv.inner_val_fraction), f)
        rec = {"fold": f, "load1_start": os.getloadavg()[0]}
        log(f"e2e: fold {f + 1}/{run_folds}: lumbarjax")
        rec["lumbarjax"] = e2e_lumbarjax_fold(cfg, data, plan)
        log(f"e2e: fold {f + 1}/{run_folds}: pytorch twin")
        rec["pytorch_twin"] = e2e_torch_fold(torch, cfg, data, plan)
        rec["load1_end"] = os.getloadavg()[0]
        rec["noisy"] = max(rec["load1_start"], rec["load1_end"]) / (os.cpu_count() or 1) \
            > MEASURE["max_load_per_core"]
        rec["pytorch_over_lumbarjax"] = rec["pytorch_twin"]["wall_s"] / rec["lumbarjax"]["wall_s"]
        log(f"  fold {f}: lumbarjax {rec['lumbarjax']['wall_s']:.1f} s, pytorch twin "
            f"{rec['pytorch_twin']['wall_s']:.1f} s" + ("  NOISY" if rec["noisy"] else ""))
        out["folds"].append(rec)
    lj = sum(r["lumbarjax"]["wall_s"] for r in out["folds"])
    tw = sum(r["pytorch_twin"]["wall_s"] for r in out["folds"])
    out["lumbarjax_s"], out["pytorch_twin_s"] = lj, tw
    out["pytorch_over_lumbarjax"] = tw / lj
    if run_folds > 1:
        later = out["folds"][1:]
        out["pytorch_over_lumbarjax_after_compile"] = (
            sum(r["pytorch_twin"]["wall_s"] for r in later) / sum(r["lumbarjax"]["wall_s"] for r in later))
    return out


# ============================================================================ table
def fmt_s(v):
    return "-" if v is None else (f"{v:.3f}" if v < 10 else f"{v:.1f}")


def print_table(results: dict) -> list[str]:
    lines = []
    add = lines.append
    m = results["meta"]
    add(f"lumbarjax benchmark suite — {m['machine']}, backend {m['backend']}, "
        f"{m['cpus']} CPUs, load {m['load_start'][0]:.1f} -> {m['load_end'][0]:.1f}, "
        f"{m['rounds']} rounds, torch {m['versions'].get('torch')}")
    add(f"command: {m['command']}")
    add(f"GPU: {m.get('gpu', '?')}; rounds started at a 1-min load average above "
        f"{m.get('max_load_per_core', 1.0):.1f} per core are NOISY: figures from them only are "
        "marked *")
    tr = results.get("train")
    if tr:
        for label, s in tr["sizes"].items():
            add("")
            add(f"[1] train step, {label}: X-ray {s['xray']}, MRI {s['mri']} (median s; "
                f"x = peer/lumbarjax, median of per-round ratios)")
            for block in ("results", "resnet18"):
                if block not in s:
                    continue
                res = s[block]
                if block == "resnet18":
                    add("  -- MONAI resnet18 defaults, in their own rounds:")
                add(f"  rounds: {rounds_summary(res)}")
                for n, r in contenders(res):
                    extra = "".join(f"  {k[11:]}: {v:.2f}x" for k, v in r.items()
                                    if k.startswith("speedup_vs_"))
                    p = f"  params {r['params']:,}" if r.get("params") else ""
                    add(f"  {n:30s} {fmt_s(r['median_s']) + ('*' if r.get('noisy') else ''):>9}"
                        f"{p}{extra}")
    fl = results.get("flops")
    if fl and "skipped" not in fl:
        for label, s in fl.items():
            add("")
            add(f"[2] achieved FLOP/s, {label}: XLA matmul {s['matmul_gflop_per_s']:.1f} GFLOP/s"
                + (f", torch matmul {s['pytorch_matmul_gflop_per_s']:.1f}"
                   if "pytorch_matmul_gflop_per_s" in s else ""))
            for n, r in s["rows"].items():
                add(f"  {n:30s} {r['gflop_per_step']:7.2f} GFLOP/step {r['gflop_per_s']:7.1f} "
                    f"GFLOP/s  {100 * r['fraction_of_matmul']:5.1f}% of matmul"
                    + (f"  MFU {100 * r['mfu']:.1f}%" if "mfu" in r else ""))
    ig = results.get("ig")
    if ig:
        add("")
        add(f"[3] integrated gradients, one volume {ig['shape']}, {ig['steps']} steps gausslegendre")
        add(f"  rounds: {rounds_summary(ig['results'])}")
        for n, r in contenders(ig["results"]):
            add(f"  {n:44s} {fmt_s(r['median_s']) + ('*' if r.get('noisy') else ''):>9}")
        add("  IG / floor (fwd+bwd of 64): " + ", ".join(
            f"{n[len('lumbarjax IG 64'):].strip() or 'unchunked'} {v:.2f}"
            for n, v in ig.get("over_floor", {}).items()))
        if ig.get("over_chunk_floor"):
            add("  IG / floor of the same chunks: " + ", ".join(
                f"{n[len('lumbarjax IG 64'):].strip()} {v:.2f}" for n, v in ig["over_chunk_floor"].items()))
        if "captum_over_lumbarjax" in ig:
            add(f"  Captum/lumbarjax: unchunked {ig['captum_over_lumbarjax']:.2f}x, chunk16 "
                f"{ig['captum_over_lumbarjax_chunk16']:.2f}x; Captum/its torch floor "
                f"{ig['captum_over_its_floor']:.2f}; lumbarjax floor/torch floor "
                f"{ig['lumbarjax_floor_over_twin_floor']:.2f}")
        if "best_vs_best" in ig:
            bb = ig["best_vs_best"]
            add(f"  each at its fastest chunking: {bb['captum']} / {bb['lumbarjax']} = "
                f"{bb['captum_over_lumbarjax']:.2f}x")
    pr = results.get("profile")
    if pr:
        for net, r in pr.items():
            if not isinstance(r, dict) or "rows" not in r:
                continue
            add("")
            add(f"[profile] {net} fwd+bwd per part, input {r['input']} (s; x = torch/lumbarjax)")
            for n, row in r["rows"].items():
                add(f"  {n:34s} lj {row['lumbarjax_s']:.4f}  torch {row.get('pytorch_s', float('nan')):.4f}"
                    f"  {row.get('lumbarjax_speed_vs_pytorch', float('nan')):.2f}x  {row['gflop']:.2f} GFLOP")
    da = results.get("data")
    if da:
        add("")
        add(f"[4] data ({da['patients']} synthetic patients): index {da['index']['files_per_s']:.0f} files/s; "
            f"cold {da['preprocess_cold']['examples_per_s']:.2f} ex/s; cached "
            f"{da['preprocess_cached']['examples_per_s']:.1f} ex/s; pipeline "
            f"{da['pipeline']['examples_per_s']:.1f} ex/s")
        for k, v in da.get("appetite_examples_per_s", {}).items():
            add(f"  appetite of the {k}: {v:.1f} ex/s -> pipeline/appetite "
                f"{da['pipeline_over_appetite'][k]:.1f}x")
    co = results.get("compile")
    if co:
        add("")
        add(f"[5] compile (s) and memory: peak host RSS {co['peak_host_rss_mib']:.0f} MiB"
            + (f", device peak {co['device_peak_mib']}" if "device_peak_mib" in co else ""))
        for n, v in co["compile_s"].items():
            add(f"  {n:56s} {v:6.2f}")
    sc = results.get("scaling")
    if sc:
        add("")
        add("[6] scaling (median s per step)")
        for n, r in contenders(sc["in_process"]):
            add(f"  {n:40s} {fmt_s(r['median_s']):>8}")
        for n, r in (sc.get("forced_cpu_devices") or {}).items():
            if "error" in r:
                add(f"  {n} forced CPU devices: error {r['error'][-200:]}")
            else:
                add(f"  {n} forced CPU device(s), global batch {r['batch']}: grader "
                    f"{r['grader']:.3f} s, mri {r['mri']:.3f} s, lesion2d "
                    f"{r.get('mri lesion2d', float('nan')):.3f} s")
    e2e = results.get("e2e")
    if e2e and "skipped" not in e2e:
        add("")
        add(f"[7] demo outcome CV timed for real: {e2e['folds_run']} of {e2e['folds_in_cv']} folds x "
            f"{e2e['steps_per_fold']} steps, batch {e2e['batch']}, {e2e['arch']}"
            f"{' frozen' if e2e['freeze_mri'] else ''}, eval every {e2e['eval_every']} "
            "(wall s per fold; x = pytorch/lumbarjax)")
        for r in e2e["folds"]:
            add(f"  fold {r['fold']}: lumbarjax {r['lumbarjax']['wall_s']:7.1f}  pytorch twin "
                f"{r['pytorch_twin']['wall_s']:7.1f}  {r['pytorch_over_lumbarjax']:.2f}x"
                f"  load {r['load1_start']:.1f}->{r['load1_end']:.1f}" + (" NOISY" if r["noisy"] else ""))
        add(f"  total: lumbarjax {e2e['lumbarjax_s']:.1f} s, pytorch twin {e2e['pytorch_twin_s']:.1f} s"
            f" -> {e2e['pytorch_over_lumbarjax']:.2f}x"
            + (f" ({e2e['pytorch_over_lumbarjax_after_compile']:.2f}x without fold 0's compiles)"
               if "pytorch_over_lumbarjax_after_compile" in e2e else ""))
    for n in results.get("peer_missing", []):
        add(f"NOTE {n}")
    print("\n" + "\n".join(lines))
    return lines


# ============================================================================ main
def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n", 1)[1])
    p.add_argument("--full", action="store_true", help="add realistic sizes")
    p.add_argument("--out", default=os.path.join(HERE, "results", time.strftime("%Y-%m-%d") + ".json"),
                   help="JSON of every figure (default benchmarks/results/<date>.json, committed)")
    p.add_argument("--max-load", type=float, default=1.0,
                   help="flag rounds started at a 1-min load average above this per core")
    p.add_argument("--wait-quiet", type=float, default=0.0,
                   help="before each round wait up to this many s for the load to drop")
    p.add_argument("--e2e-folds", type=int, default=2, help="folds of the outcome CV run in e2e")
    p.add_argument("--skip-resnet18", action="store_true",
                   help="skip the MONAI resnet18 defaults (10-100x larger steps)")
    p.add_argument("--only", default="", help=f"comma-separated subset of {','.join(SECTIONS)}")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--patients", type=int, default=24, help="synthetic cohort size (data)")
    p.add_argument("--quick", action="store_true",
                   help="smoke test: tiny shapes (X-ray 64², MRI 4x32x32, batch 4), 1 round")
    p.add_argument("--no-subprocess", action="store_true", help="skip forced-device subprocesses")
    p.add_argument("--worker-devices", type=int, default=0, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.worker_devices:
        _worker_devices(a.worker_devices, a.rounds, a.quick)
        return 0
    only = [s.strip() for s in a.only.split(",") if s.strip()] or list(SECTIONS)
    bad = set(only) - set(SECTIONS)
    if bad:
        p.error(f"unknown sections {sorted(bad)}; expected {SECTIONS}")
    import jax
    versions = {"jax": jax.__version__}
    torch, why = torch_or_none()
    versions["torch"] = torch.__version__ if torch else None
    for mod in ("monai", "captum", "flax"):
        try:
            versions[mod] = __import__(mod).__version__
        except ImportError:
            versions[mod] = None
    cfg = demo_config(a.quick)
    if a.quick:
        a.rounds, a.patients = 1, min(a.patients, 8)
    MEASURE["max_load_per_core"], MEASURE["wait_quiet_s"] = a.max_load, a.wait_quiet
    ctx = SimpleNamespace(full=a.full, rounds=a.rounds, patients=a.patients, cfg=cfg,
                          no_subprocess=a.no_subprocess, quick=a.quick, results={},
                          skip_resnet18=a.skip_resnet18, e2e_folds=a.e2e_folds)
    results = {"meta": {"command": "python benchmarks/run.py " + " ".join(argv or sys.argv[1:]),
                        "machine": platform.node(), "cpus": os.cpu_count(),
                        "backend": jax.default_backend(),
                        "devices": [str(d) for d in jax.devices()],
                        "load_start": os.getloadavg(), "versions": versions,
                        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
                        "rounds": a.rounds, "date": time.strftime("%Y-%m-%d %H:%M:%S"),
                        "max_load_per_core": a.max_load, "wait_quiet_s": a.wait_quiet,
                        "gpu": "no GPU lent to this run" if jax.default_backend() == "cpu"
                        else jax.devices()[0].device_kind},
               "peer_missing": [w for w in [why] if w]}
    for w in [why, monai_or_none()[1], captum_or_none()[1]]:
        if w and w not in results["peer_missing"]:
            results["peer_missing"].append(w)
    t0 = time.perf_counter()
    funcs = {"train": section_train, "flops": section_flops, "ig": section_ig,
             "profile": section_profile, "data": section_data, "compile": section_compile,
             "scaling": section_scaling, "e2e": section_e2e}
    for name in SECTIONS:
        if name not in only:
            continue
        t = time.perf_counter()
        log(f"== section {name}")
        try:
            ctx.results[name] = funcs[name](ctx)
        except Exception as e:  # noqa: BLE001 - one failing section must not lose the others
            import traceback
            traceback.print_exc()
            ctx.results[name] = {"error": f"{type(e).__name__}: {e}"}
        results[name] = ctx.results[name]
        results.setdefault("section_wall_s", {})[name] = time.perf_counter() - t
        results["meta"]["load_" + name] = os.getloadavg()
    results["meta"]["load_end"] = os.getloadavg()
    results["meta"]["wall_s"] = time.perf_counter() - t0
    results["meta"]["peak_host_rss_mib"] = peak_rss_mib()
    ok = {k: v for k, v in results.items() if not (isinstance(v, dict) and "error" in v)}
    results["table"] = print_table(ok)
    for k, v in results.items():
        if isinstance(v, dict) and "error" in v:
            print(f"SECTION {k} FAILED: {v['error']}")
    if a.out:
        os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
        with open(a.out, "w") as f:
            json.dump(results, f, indent=2, default=str)
        print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
