"""Tests for lumbarjax.data.pipeline (tiny in-memory and on-disk arrays)."""

import numpy as np
import pandas as pd
import pytest

from lumbarjax.data.pipeline import CachedExamples, augment_example, make_loader
from lumbarjax.errors import CohortError, ConfigError

N, D, H, W = 10, 3, 6, 5
XH, XW = 7, 4


def _extras(n=N, seed=0):
    rng = np.random.default_rng(seed)
    back = rng.uniform(0, 100, n).astype(np.float32)
    back[2] = np.nan  # missing label -> masked, never NaN in a batch
    return {
        "mri": rng.random((n, D, H, W)).astype(np.float32),
        "xray": rng.random((n, XH, XW, 1)).astype(np.float32),
        "xray_present": np.array([1.0] * (n - 1) + [0.0], np.float32),
        "clinical": rng.random((n, 3)).astype(np.float32),
        "labels": {"back_pain_post": back, "grade": rng.integers(0, 5, (n, 5)).astype(np.float32)},
        "label_mask": {"grade": np.ones((n, 5), np.float32)},
    }


def _unbatch_indices(batches):
    return [int(i) for b in batches for i, v in zip(b["index"], b["valid"]) if v > 0]


def test_example_shapes_dtypes_and_missing_modality():
    src = CachedExamples(None, _extras())
    assert len(src) == N
    ex = src[3]
    assert ex["mri"].shape == (D, H, W, 1) and ex["mri"].dtype == np.float32
    assert ex["xray"].shape == (XH, XW, 1) and ex["xray"].dtype == np.float32
    assert ex["clinical"].shape == (3,)
    assert ex["labels"]["grade"].shape == (5,) and ex["label_mask"]["grade"].shape == (5,)
    assert ex["index"].dtype == np.int32 and int(ex["index"]) == 3
    assert float(ex["valid"]) == 1.0 and float(ex["mri_present"]) == 1.0
    # patient N-1 has no X-ray: zeros of the configured shape, present 0
    last = src[N - 1]
    assert last["xray"].shape == (XH, XW, 1)
    assert float(last["xray_present"]) == 0.0 and not last["xray"].any()
    # NaN label -> 0 with mask 0
    ex2 = src[2]
    assert float(ex2["labels"]["back_pain_post"]) == 0.0
    assert float(ex2["label_mask"]["back_pain_post"]) == 0.0
    assert float(src[1]["label_mask"]["back_pain_post"]) == 1.0


def test_missing_modality_everywhere_uses_configured_shape():
    ex = _extras()
    del ex["mri"]
    src = CachedExamples(None, ex, mri_shape=(2, 4, 4))
    e = src[0]
    assert e["mri"].shape == (2, 4, 4, 1) and float(e["mri_present"]) == 0.0
    assert not e["mri"].any()


def test_cache_table_source_reads_npy_and_missing(tmp_path):
    rng = np.random.default_rng(1)
    rows = []
    mris = []
    for i in range(3):
        m = rng.random((D, H, W)).astype(np.float32)
        mris.append(m)
        mp = tmp_path / f"m{i}.npy"
        np.save(mp, m)
        xp = ""
        if i != 1:
            xp = str(tmp_path / f"x{i}.npy")
            np.save(xp, rng.random((XH, XW)).astype(np.float32))
        rows.append({"patient_id": f"P{i}", "mri_file": str(mp), "xray_file": xp})
    table = pd.DataFrame(rows)
    src = CachedExamples(table, {"labels": {"y": np.array([0, 1, 1], np.float32)}})
    e0 = src[0]
    np.testing.assert_array_equal(e0["mri"][..., 0], mris[0])
    assert e0["xray"].shape == (XH, XW, 1) and float(e0["xray_present"]) == 1.0
    e1 = src[1]
    assert float(e1["xray_present"]) == 0.0 and e1["xray"].shape == (XH, XW, 1)
    assert not e1["xray"].any()
    assert e1["clinical"].shape == (0,)
    with pytest.raises(CohortError, match="disagree on N"):
        CachedExamples(table, {"labels": {"y": np.zeros(4, np.float32)}})


def test_a_modality_the_model_does_not_read_is_never_loaded(tmp_path):
    x = np.arange(XH * XW, dtype=np.float32).reshape(XH, XW)
    np.save(tmp_path / "x.npy", x)
    table = pd.DataFrame([{"patient_id": "P0", "mri_file": str(tmp_path / "absent_mri.npy"),
                           "xray_file": str(tmp_path / "x.npy")}])
    src = CachedExamples(table, {}, mri_shape=(D, H, W), xray_shape=(XH, XW),
                         modalities=("xray",))
    e = src[0]   # the MRI file does not exist: reading it would raise CohortError
    np.testing.assert_array_equal(e["xray"][..., 0], x)
    assert e["mri"].shape == (1, 1, 1, 1) and float(e["mri_present"]) == 0.0
    with pytest.raises(CohortError, match="absent_mri.npy"):
        CachedExamples(table, {}, mri_shape=(D, H, W), xray_shape=(XH, XW))[0]
    with pytest.raises(CohortError, match="unknown modalities \\['ct'\\]"):
        CachedExamples(table, {}, modalities=("ct",))


def test_eval_loader_pads_last_batch_and_sees_each_once():
    src = CachedExamples(None, _extras())
    batches = list(make_loader(src, batch_size=4, shuffle=False, seed=0, num_epochs=1))
    assert len(batches) == 3
    for b in batches:
        assert b["mri"].shape == (4, D, H, W, 1)
        assert b["labels"]["grade"].shape == (4, 5)
        assert b["index"].dtype == np.int32 and b["valid"].dtype == np.float32
        assert not np.isnan(b["labels"]["back_pain_post"]).any()
    last = batches[-1]
    np.testing.assert_array_equal(last["valid"], [1, 1, 0, 0])
    np.testing.assert_array_equal(last["index"], [8, 9, -1, -1])
    assert not last["mri"][2:].any() and not last["label_mask"]["grade"][2:].any()
    assert _unbatch_indices(batches) == list(range(N))


def test_training_loader_full_batches_each_epoch_once_and_reshuffled():
    src = CachedExamples(None, _extras())
    it = make_loader(src, batch_size=5, shuffle=True, seed=3)
    batches = [next(it) for _ in range(6)]  # 3 epochs of 10
    for b in batches:
        assert b["valid"].shape == (5,) and b["valid"].all()
    order = _unbatch_indices(batches)
    epochs = [order[i * N:(i + 1) * N] for i in range(3)]
    for e in epochs:
        assert sorted(e) == list(range(N))
    assert epochs[0] != epochs[1] or epochs[1] != epochs[2]
    assert epochs[0] != list(range(N))
    # same seed -> same stream; other seed -> different
    it2 = make_loader(src, batch_size=5, shuffle=True, seed=3)
    assert _unbatch_indices([next(it2) for _ in range(6)]) == order
    it3 = make_loader(src, batch_size=5, shuffle=True, seed=4)
    assert _unbatch_indices([next(it3) for _ in range(6)]) != order


def test_finite_epochs_with_shuffle_pads_only_at_end():
    src = CachedExamples(None, _extras())
    batches = list(make_loader(src, batch_size=4, shuffle=True, seed=0, num_epochs=2))
    assert len(batches) == 5
    order = _unbatch_indices(batches)
    assert sorted(order[:N]) == list(range(N)) and sorted(order[N:]) == list(range(N))


@pytest.mark.parametrize("augment", [None, {"flip_lr": 0.5, "intensity": 0.2, "shift_px": 1,
                                            "noise_std": 0.05}])
def test_state_roundtrip_mid_epoch(augment):
    src = CachedExamples(None, _extras())
    it = make_loader(src, batch_size=3, shuffle=True, seed=7, augment=augment)
    for _ in range(4):  # crosses an epoch boundary (10 / 3)
        next(it)
    state = it.get_state()
    expected = [next(it) for _ in range(4)]
    fresh = make_loader(src, batch_size=3, shuffle=True, seed=7, augment=augment)
    fresh.set_state(state)
    got = [next(fresh) for _ in range(4)]
    for e, g in zip(expected, got):
        np.testing.assert_array_equal(e["index"], g["index"])
        np.testing.assert_array_equal(e["mri"], g["mri"])
        np.testing.assert_array_equal(e["xray"], g["xray"])


def test_augmentation_deterministic_and_changes_images():
    src = CachedExamples(None, _extras())
    aug = {"intensity": 0.3, "shift_px": 1, "noise_std": 0.05, "flip_lr": True}
    a = [next(make_loader(src, batch_size=4, shuffle=True, seed=1, augment=aug)) for _ in range(2)]
    np.testing.assert_array_equal(a[0]["mri"], a[1]["mri"])
    np.testing.assert_array_equal(a[0]["xray"], a[1]["xray"])
    plain = next(make_loader(src, batch_size=4, shuffle=True, seed=1))
    np.testing.assert_array_equal(plain["index"], a[0]["index"])
    assert not np.allclose(plain["mri"], a[0]["mri"])
    # absent X-ray (patient N-1) stays exactly zero under augmentation
    allb = list(make_loader(src, batch_size=5, shuffle=False, seed=1, num_epochs=1, augment=aug))
    last = allb[-1]
    assert last["index"][-1] == N - 1 and not last["xray"][-1].any()


def test_flip_lr_flips_mri_slices_only():
    src = CachedExamples(None, _extras())
    ex = src[0]
    out = augment_example(ex, np.random.default_rng(0), {"flip_lr": 1.0})
    np.testing.assert_array_equal(out["mri"], ex["mri"][::-1])
    np.testing.assert_array_equal(out["xray"], ex["xray"])
    # flip is across d (slices): a single bright slice moves to the mirrored slice
    ex2 = dict(ex, mri=np.zeros((4, 2, 2, 1), np.float32))
    ex2["mri"][0] = 1.0
    out2 = augment_example(ex2, np.random.default_rng(0), {"flip_lr": 1.0, "intensity": 0.0})
    assert out2["mri"][3].all() and not out2["mri"][:3].any()
    none = augment_example(ex, np.random.default_rng(0), {"flip_lr": 0.0})
    np.testing.assert_array_equal(none["mri"], ex["mri"])


def test_shift_zero_fills():
    ex = {"mri": np.ones((2, 4, 4, 1), np.float32), "mri_present": np.float32(1),
          "xray": np.ones((5, 5, 1), np.float32), "xray_present": np.float32(1)}
    rng = np.random.default_rng(0)
    saw_shift = False
    for _ in range(10):
        out = augment_example(ex, rng, {"shift_px": 2})
        for k in ("mri", "xray"):
            assert out[k].shape == ex[k].shape
            assert set(np.unique(out[k])) <= {0.0, 1.0}
            saw_shift |= bool((out[k] == 0).any())
    assert saw_shift


def test_indices_subset_and_errors():
    src = CachedExamples(None, _extras())
    fold = np.array([7, 2, 5])
    batches = list(make_loader(src, batch_size=2, shuffle=False, seed=0, num_epochs=1,
                               indices=fold))
    assert _unbatch_indices(batches) == [7, 2, 5]
    np.testing.assert_array_equal(batches[-1]["valid"], [1, 0])
    mask = np.zeros(N, bool)
    mask[[1, 4]] = True
    got = _unbatch_indices(list(make_loader(src, batch_size=4, shuffle=True, seed=0,
                                            num_epochs=1, indices=mask)))
    assert sorted(got) == [1, 4]
    with pytest.raises(ConfigError, match="out of range"):
        make_loader(src, batch_size=2, shuffle=False, seed=0, indices=[0, N])
    with pytest.raises(ConfigError, match="unknown keys"):
        make_loader(src, batch_size=2, shuffle=False, seed=0, augment={"rotate": 5})
    with pytest.raises(ConfigError, match="empty"):
        make_loader(src, batch_size=2, shuffle=False, seed=0, indices=[])


def test_threads_give_same_stream():
    src = CachedExamples(None, _extras())
    aug = {"intensity": 0.1, "noise_std": 0.01}
    a = make_loader(src, batch_size=3, shuffle=True, seed=2, augment=aug)
    b = make_loader(src, batch_size=3, shuffle=True, seed=2, augment=aug, num_threads=2,
                    prefetch_buffer_size=4)
    for _ in range(5):
        x, y = next(a), next(b)
        np.testing.assert_array_equal(x["index"], y["index"])
        np.testing.assert_array_equal(x["mri"], y["mri"])


def test_noise_has_requested_std_and_zero_mean():
    ex = {"mri": np.zeros((4, 32, 32, 1), np.float32), "mri_present": np.float32(1),
          "xray": np.zeros((64, 64, 1), np.float32), "xray_present": np.float32(0)}
    out = augment_example(ex, np.random.default_rng(0), {"noise_std": 0.1})
    assert out["mri"].dtype == np.float32
    assert abs(float(out["mri"].std()) - 0.1) < 0.005 and abs(float(out["mri"].mean())) < 0.005
    assert not out["xray"].any()  # absent modality untouched
    assert not ex["mri"].any()  # input not modified in place
