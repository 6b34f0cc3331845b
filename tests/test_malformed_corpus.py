"""Every malformed input of tests/malformed_corpus.py gets its expected verdict (a typed error
naming what is wrong, or a counted exclusion / problem), and odd-but-valid inputs are accepted."""

import os

import pytest

import malformed_corpus as corpus


def _run_all(cases, tmp_path):
    results = []
    for i, case in enumerate(cases):
        tmp = str(tmp_path / f"{i:02d}_{case.name}")
        os.makedirs(tmp)
        results.append((case, *corpus.verdict_of(case, tmp)))
    return results


def test_corpus_is_large_and_distinct():
    names = [c.name for c in corpus.CASES]
    assert len(names) == len(set(names)) >= 40
    kinds = {c.kind.split("_")[0] for c in corpus.CASES}
    assert {"xray", "series", "nifti", "clinical", "validate", "export"} <= kinds


def test_malformed_inputs_handled(tmp_path, capsys):
    results = _run_all(corpus.CASES, tmp_path)
    failed = [(c.name, got) for c, ok, got in results if not ok]
    n = len(results)
    with capsys.disabled():
        print(f"\nmalformed inputs handled {n - len(failed)}/{n}")
    assert not failed, "\n".join(f"{name}: {got}" for name, got in failed)


@pytest.mark.parametrize("case", corpus.ACCEPTED, ids=lambda c: c.name)
def test_valid_inputs_accepted(case, tmp_path):
    out = corpus.run_case(case, str(tmp_path))
    if case.kind == "export":
        assert len(out["exclusions"]) == 0, out["exclusions"].to_dict("records")
        assert sorted(out["records"]["patient_id"]) == ["P1", "P2"]
        assert not out["cache"]["excluded"].any()
