"""Tests for lumbarjax.data.clinical: hand-computed ZCQ and pain outcomes, validation, reading."""

import numpy as np
import pandas as pd
import pytest

from lumbarjax.data import clinical
from lumbarjax.data import outcomes
from lumbarjax.data.clinical import (
    default_outcome_config,
    read_clinical,
    validate_clinical,
)
from lumbarjax.data.outcomes import derive_outcomes
from lumbarjax.errors import ClinicalError, ConfigError


def zcq_row(pid, sym_pre, sym_post, fun_pre, fun_post, sat, **extra):
    """One clinical row from item lists (None = unanswered)."""
    row = {"patient_id": pid}
    for i, v in enumerate(sym_pre, 1):
        row[f"zcq_sym_pre_{i}"] = v
    for i, v in enumerate(sym_post, 1):
        row[f"zcq_sym_post_{i}"] = v
    for i, v in enumerate(fun_pre, 1):
        row[f"zcq_fun_pre_{i}"] = v
    for i, v in enumerate(fun_post, 1):
        row[f"zcq_fun_post_{i}"] = v
    for i, v in enumerate(sat, 1):
        row[f"zcq_sat_post_{i}"] = v
    row.update(extra)
    return row


SYM_PRE = [3, 4, 3, 3, 4, 3, 4]  # mean 24/7
SYM_POST = [2, 3, 3, 2, 3, 3, 3]  # mean 19/7: change 5/7 ≥ 0.5
FUN_PRE = [3, 3, 3, 3, 3]  # 3.0
FUN_POST = [2, 2, 3, 2, 3]  # 2.4: change 0.6 ≥ 0.5
SAT_OK = [2, 2, 3, 2, 3, 3]  # 15/6 = 2.5 ≤ 2.5


def frame(*rows):
    return pd.DataFrame(list(rows))


# ----------------------------------------------------------------------------- ZCQ


def test_symptom_mean_all_items():
    out = derive_outcomes(frame(zcq_row("1", SYM_PRE, SYM_POST, FUN_PRE, FUN_POST, SAT_OK)))
    assert out["zcq_symptom_pre"].iloc[0] == pytest.approx(24 / 7)
    assert out["zcq_symptom_post"].iloc[0] == pytest.approx(19 / 7)
    assert out["zcq_function_pre"].iloc[0] == pytest.approx(3.0)
    assert out["zcq_function_post"].iloc[0] == pytest.approx(2.4)
    assert out["zcq_satisfaction"].iloc[0] == pytest.approx(2.5)


def test_symptom_one_missing_item_is_mean_of_six():
    pre = [3, 4, 3, None, 4, 3, 4]  # 21 / 6
    out = derive_outcomes(frame(zcq_row("1", pre, SYM_POST, FUN_PRE, FUN_POST, SAT_OK)))
    assert out["zcq_symptom_pre"].iloc[0] == pytest.approx(21 / 6)


def test_symptom_two_missing_items_is_nan_and_success_nan():
    pre = [3, None, 3, None, 4, 3, 4]
    out = derive_outcomes(frame(zcq_row("1", pre, SYM_POST, FUN_PRE, FUN_POST, SAT_OK)))
    assert np.isnan(out["zcq_symptom_pre"].iloc[0])
    assert np.isnan(out["zcq_success"].iloc[0])


def test_success_when_all_three_criteria_met_including_exact_boundaries():
    # Satisfaction exactly 2.5 and subscale changes of exactly 0.5 count as met.
    sym_pre = [4, 4, 4, 4, 4, 4, 4]
    sym_post = [3, 4, 4, 4, 3, 4, 4]  # 26/7 -> change 2/7 < 0.5 -> fails
    out = derive_outcomes(
        frame(
            zcq_row("ok", SYM_PRE, SYM_POST, FUN_PRE, FUN_POST, SAT_OK),
            zcq_row("sym_fails", sym_pre, sym_post, FUN_PRE, FUN_POST, SAT_OK),
            # symptom 4.0 -> 21/6 = 3.5, function 3.0 -> 10/4 = 2.5 (one item unanswered each)
            zcq_row("boundary", [4] * 7, [3, 4, 3, 4, 3, 4, None], FUN_PRE, [2, 3, 2, 3, None], SAT_OK),
        )
    )
    assert out["zcq_success"].tolist()[:2] == [1.0, 0.0]
    assert out["zcq_symptom_post"].iloc[2] == pytest.approx(3.5)
    assert out["zcq_function_post"].iloc[2] == pytest.approx(2.5)
    assert out["zcq_success"].iloc[2] == 1.0


def test_fails_when_satisfaction_above_threshold():
    sat = [3, 3, 2, 3, 3, 2]  # 16/6 = 2.667 > 2.5
    out = derive_outcomes(frame(zcq_row("1", SYM_PRE, SYM_POST, FUN_PRE, FUN_POST, sat)))
    assert out["zcq_satisfaction"].iloc[0] == pytest.approx(16 / 6)
    assert out["zcq_success"].iloc[0] == 0.0


def test_fails_when_satisfaction_2_6_with_missing_item():
    sat = [3, 3, 2, 3, 2, None]  # 13/5 = 2.6
    out = derive_outcomes(frame(zcq_row("1", SYM_PRE, SYM_POST, FUN_PRE, FUN_POST, sat)))
    assert out["zcq_satisfaction"].iloc[0] == pytest.approx(2.6)
    assert out["zcq_success"].iloc[0] == 0.0
    cfg = default_outcome_config()
    cfg.satisfaction_max = 2.6
    assert derive_outcomes(frame(zcq_row("1", SYM_PRE, SYM_POST, FUN_PRE, FUN_POST, sat)), cfg)[
        "zcq_success"
    ].iloc[0] == 1.0


def test_two_of_three_rule():
    sat_bad = [4, 4, 4, 4, 4, 4]
    df = frame(
        zcq_row("two_met", SYM_PRE, SYM_POST, FUN_PRE, FUN_POST, sat_bad),
        zcq_row("one_met", SYM_PRE, SYM_PRE, FUN_PRE, FUN_POST, sat_bad),
    )
    assert derive_outcomes(df)["zcq_success"].tolist() == [0.0, 0.0]
    cfg = default_outcome_config()
    cfg.zcq_rule = "2of3"
    assert derive_outcomes(df, cfg)["zcq_success"].tolist() == [1.0, 0.0]


def test_unknown_rule_is_config_error():
    with pytest.raises(ConfigError, match="zcq_rule"):
        derive_outcomes(frame(zcq_row("1", SYM_PRE, SYM_POST, FUN_PRE, FUN_POST, SAT_OK)), {"zcq_rule": "any"})


def test_precomputed_zcq_success_used_without_items():
    df = pd.DataFrame({"patient_id": ["a", "b", "c"], "zcq_success": [1.0, 0.0, np.nan]})
    out = derive_outcomes(df)
    np.testing.assert_array_equal(out["zcq_success"].to_numpy(), [1.0, 0.0, np.nan])
    assert np.isnan(out["zcq_symptom_pre"]).all()
    with pytest.raises(ClinicalError, match="patient b.*zcq_success"):
        derive_outcomes(pd.DataFrame({"patient_id": ["a", "b"], "zcq_success": [1, 2]}))


def test_precomputed_zcq_success_with_items_items_win_and_fill():
    df = frame(
        zcq_row("a", SYM_PRE, SYM_POST, FUN_PRE, FUN_POST, SAT_OK, zcq_success=0.0),
        zcq_row("b", SYM_PRE, [None] * 7, FUN_PRE, FUN_POST, SAT_OK, zcq_success=1.0),
    )
    out = derive_outcomes(df)
    assert out["zcq_success"].tolist() == [1.0, 1.0]
    assert out["zcq_success_reported"].tolist() == [0.0, 1.0]


def test_derive_refuses_unvalidated_items():
    row = zcq_row("p7", SYM_PRE, SYM_POST, FUN_PRE, FUN_POST, SAT_OK)
    row["zcq_sym_pre_2"] = 6
    with pytest.raises(ClinicalError, match="p7.*zcq_sym_pre_2"):
        derive_outcomes(frame(row))


def test_derive_returns_copy():
    df = frame(zcq_row("1", SYM_PRE, SYM_POST, FUN_PRE, FUN_POST, SAT_OK))
    out = derive_outcomes(df)
    assert "zcq_success" not in df.columns
    for col in outcomes.OUTCOME_COLUMNS:
        assert out[col].dtype == np.float64


# ----------------------------------------------------------------------------- pain


def test_pain_improvement_cases():
    df = pd.DataFrame(
        {
            "patient_id": ["a", "b", "c", "d", "e"],
            "back_pain_pre": [80, 80, 0, 80, np.nan],
            "back_pain_post": [40, 41, 0, np.nan, 10],
            "leg_pain_pre": [100, 50, 10, 10, 10],
            "leg_pain_post": [0, 60, 5, 6, 4],
        }
    )
    out = derive_outcomes(df)
    np.testing.assert_array_equal(out["back_pain_improved50"].to_numpy(), [1.0, 0.0, np.nan, np.nan, np.nan])
    np.testing.assert_array_equal(out["leg_pain_improved50"].to_numpy(), [1.0, 0.0, 1.0, 0.0, 1.0])


def test_pain_fraction_configurable():
    df = pd.DataFrame({"patient_id": ["a"], "back_pain_pre": [80], "back_pain_post": [50]})
    assert derive_outcomes(df)["back_pain_improved50"].iloc[0] == 0.0
    assert derive_outcomes(df, {"pain_improvement_fraction": 0.3})["back_pain_improved50"].iloc[0] == 1.0


def test_nrs_scale_converted_to_vas_mm():
    df = pd.DataFrame(
        {"patient_id": ["a", "b"], "back_pain_pre": [8, 11], "back_pain_post": [4, 2],
         "leg_pain_pre": [70, 60], "leg_pain_post": [10, 20]}
    )
    cfg = default_outcome_config()
    cfg.pain_scale_columns = {"back_pain_pre": "nrs10", "back_pain_post": "nrs10"}
    clean, problems = validate_clinical(df, cfg)
    assert clean["back_pain_pre"].iloc[0] == 80.0 and clean["back_pain_post"].tolist() == [40.0, 20.0]
    assert clean["leg_pain_pre"].tolist() == [70.0, 60.0]  # VAS column untouched
    assert np.isnan(clean["back_pain_pre"].iloc[1])
    assert problems[["patient_id", "column", "value"]].values.tolist() == [["b", "back_pain_pre", "11"]]
    assert "NRS 0–10" in problems["problem"].iloc[0]
    # a second validation does not convert again
    again, problems2 = validate_clinical(clean, cfg)
    assert again["back_pain_pre"].iloc[0] == 80.0 and len(problems2) == 0
    assert derive_outcomes(clean, cfg)["back_pain_improved50"].iloc[0] == 1.0
    # global NRS declaration
    clean_g, _ = validate_clinical(df.iloc[:1], {"pain_scale": "nrs10"})
    assert clean_g["back_pain_pre"].iloc[0] == 80.0
    assert np.isnan(clean_g["leg_pain_pre"].iloc[0])  # 70 is not a valid NRS value


# ----------------------------------------------------------------------------- validation


def test_validation_problems_name_patient_column_value():
    df = pd.DataFrame(
        {
            "patient_id": ["001", "002", "003"],
            "age": [250, "n/a", 64],
            "back_pain_pre": [130, 50, 60],
            "zcq_sym_pre_1": [6, 3, 2.5],
            "sex": ["m", "Female", "1"],
            "smoker": ["yes", 0, "unknown"],
            "bmi": ["12,5", 30, 11],
            "xray_grade": [4, 5, 0],
        }
    )
    clean, problems = validate_clinical(df)
    got = {(r.patient_id, r.column, r.value) for r in problems.itertuples()}
    assert got == {
        ("001", "age", "250"),
        ("002", "age", "n/a"),
        ("001", "back_pain_pre", "130"),
        ("001", "zcq_sym_pre_1", "6"),
        ("003", "zcq_sym_pre_1", "2.5"),
        ("003", "sex", "1"),
        ("003", "smoker", "unknown"),
        ("001", "bmi", "12,5"),
        ("003", "bmi", "11"),
        ("002", "xray_grade", "5"),
    }
    assert len(problems) == 10
    prob = problems.set_index(["patient_id", "column"])["problem"]
    assert prob[("002", "age")] == "not a number"
    assert prob[("001", "age")].startswith("out of range")
    assert prob[("003", "zcq_sym_pre_1")].startswith("not an integer")
    # bad values are NaN, good ones kept and converted; no row dropped
    assert clean["patient_id"].tolist() == ["001", "002", "003"]
    assert np.isnan(clean["age"].iloc[0]) and np.isnan(clean["age"].iloc[1]) and clean["age"].iloc[2] == 64
    assert clean["sex"].tolist()[:2] == ["M", "F"] and pd.isna(clean["sex"].iloc[2])
    assert clean["smoker"].tolist()[:2] == [1.0, 0.0] and np.isnan(clean["smoker"].iloc[2])
    assert clean["zcq_sym_pre_1"].isna().tolist() == [True, False, True]
    assert clean["xray_grade"].tolist()[0] == 4.0 and np.isnan(clean["xray_grade"].iloc[1])
    # idempotent
    assert len(validate_clinical(clean)[1]) == 0


def test_numeric_sex_codes_accepted_only_when_declared():
    df = pd.DataFrame({"patient_id": ["a", "b"], "sex": [1, 2]})
    clean, problems = validate_clinical(df, {"sex_map": {"1": "M", "2": "F"}})
    assert clean["sex"].tolist() == ["M", "F"] and len(problems) == 0
    assert len(validate_clinical(df)[1]) == 2


def test_num_grades_from_config():
    df = pd.DataFrame({"patient_id": ["a", "b"], "xray_grade_L4L5": [3, 4]})
    clean, problems = validate_clinical(df, {"num_grades": 4})
    assert problems["value"].tolist() == ["4"] and problems["column"].tolist() == ["xray_grade_L4L5"]


def test_duplicates_conflicting_dropped_identical_kept():
    df = pd.DataFrame(
        {"patient_id": ["a", "b", "b", "c", "c", "c"], "age": [50, 60, 61, 70, 70, 70]}
    )
    clean, problems = validate_clinical(df)
    assert clean["patient_id"].tolist() == ["a", "c"]
    dup = problems.set_index("patient_id")["problem"]
    assert dup["b"] == "duplicate patient_id: 2 conflicting rows, all dropped"
    assert dup["c"] == "duplicate patient_id: 3 identical rows, one kept"
    assert clean.attrs["conflicting_duplicate_ids"] == ["b"]


def test_missing_patient_id_row_dropped_and_reported():
    df = pd.DataFrame({"patient_id": ["a", None, "  "], "age": [50, 60, 70]})
    clean, problems = validate_clinical(df)
    assert clean["patient_id"].tolist() == ["a"]
    assert problems["problem"].tolist() == ["missing patient_id, row dropped"] * 2
    assert problems["value"].tolist() == ["row 3 of the table", "row 4 of the table"]


def test_validate_missing_required_column_lists_close_matches():
    df = pd.DataFrame({"PatientID": ["a"], "age": [50]})
    with pytest.raises(ClinicalError, match=r"'patient_id' \(close matches: 'PatientID'\)"):
        validate_clinical(df)


# ----------------------------------------------------------------------------- reading


def test_read_csv_semicolon_decimal_comma_bom_leading_zeros(tmp_path):
    path = tmp_path / "clinical.csv"
    text = "patient_id;age;bmi;sex;back_pain_pre\n007;64;27,5;M;80\n010 ;71;n/a;f;12,5\n"
    path.write_bytes(b"\xef\xbb\xbf" + text.encode("utf-8"))
    df = read_clinical(path)
    assert list(df.columns) == ["patient_id", "age", "bmi", "sex", "back_pain_pre"]
    assert df["patient_id"].tolist() == ["007", "010"]
    assert df["age"].tolist() == [64.0, 71.0]
    assert df["back_pain_pre"].tolist() == [80.0, 12.5]
    assert df["bmi"].tolist() == ["27.5", "n/a"]  # kept as text, validation reports "n/a"
    clean, problems = validate_clinical(df)
    assert clean["bmi"].iloc[0] == 27.5 and np.isnan(clean["bmi"].iloc[1])
    assert problems[["patient_id", "column", "value"]].values.tolist() == [["010", "bmi", "n/a"]]


def test_read_csv_comma_decimal_comma_not_guessed(tmp_path):
    path = tmp_path / "clinical.csv"
    path.write_text('patient_id,age,bmi\n1,50,"12,5"\n2,60,30.5\n', encoding="utf-8")
    df = read_clinical(path)
    clean, problems = validate_clinical(df)
    assert np.isnan(clean["bmi"].iloc[0]) and clean["bmi"].iloc[1] == 30.5
    assert problems.values.tolist() == [["1", "bmi", "12,5", "not a number"]]


def test_read_excel_round_trip_with_column_map(tmp_path):
    path = tmp_path / "clinical.xlsx"
    src = pd.DataFrame(
        {"Pat. Nr.": ["0042", "0043"], "Alter": [55, 66], "VAS Rücken prä": [70.0, 35.5],
         "Geschlecht": ["w", "m"]}
    )
    src.to_excel(path, index=False)
    cmap = {"Pat. Nr.": "patient_id", "Alter": "age", "VAS Rücken prä": "back_pain_pre",
            "Geschlecht": "sex"}
    df = read_clinical(path, column_map=cmap)
    assert list(df.columns) == ["patient_id", "age", "back_pain_pre", "sex"]
    assert df["patient_id"].tolist() == ["0042", "0043"]
    assert df["age"].tolist() == [55.0, 66.0] and df["back_pain_pre"].tolist() == [70.0, 35.5]
    # the config's column_map accepts dotted hospital headers too
    cfg = default_outcome_config()
    cfg.column_map["Pat. Nr."] = "patient_id"
    assert read_clinical(path, column_map=cfg.column_map)["patient_id"].tolist() == ["0042", "0043"]
    # "w" (German) is not a declared code: reported, not guessed
    _, problems = validate_clinical(df)
    assert problems[["patient_id", "column", "value"]].values.tolist() == [["0042", "sex", "w"]]


def test_column_map_renames_hospital_headers_csv(tmp_path):
    path = tmp_path / "kh.csv"
    path.write_text("PID,Age (y),ZCQ S1 pre\nA1,50,3\n", encoding="utf-8")
    df = read_clinical(path, {"PID": "patient_id", "Age (y)": "age", "ZCQ S1 pre": "zcq_sym_pre_1"})
    assert df.to_dict("records") == [{"patient_id": "A1", "age": 50.0, "zcq_sym_pre_1": 3.0}]


def test_missing_required_column_error_lists_close_matches(tmp_path):
    path = tmp_path / "clinical.csv"
    path.write_text("Patient ID,age\n1,50\n", encoding="utf-8")
    with pytest.raises(ClinicalError) as err:
        read_clinical(path)
    msg = str(err.value)
    assert str(path) in msg and "'patient_id'" in msg and "close matches: 'Patient ID'" in msg


def test_missing_and_unreadable_files(tmp_path):
    with pytest.raises(ClinicalError, match="nope.csv: clinical table not found"):
        read_clinical(tmp_path / "nope.csv")
    bad = tmp_path / "latin1.csv"
    bad.write_bytes("patient_id,name\n1,M\xfcller\n".encode("latin-1"))
    with pytest.raises(ClinicalError, match="latin1.csv: clinical table is not UTF-8"):
        read_clinical(bad)
    empty = tmp_path / "empty.csv"
    empty.write_text("", encoding="utf-8")
    with pytest.raises(ClinicalError, match="empty.csv: clinical table is empty"):
        read_clinical(empty)
    corrupt = tmp_path / "corrupt.xlsx"
    corrupt.write_bytes(b"not a zip file")
    with pytest.raises(ClinicalError, match="corrupt.xlsx: cannot read Excel"):
        read_clinical(corrupt)


def test_duplicate_ids_reported_on_read(tmp_path):
    path = tmp_path / "clinical.csv"
    path.write_text("patient_id,age\n1,50\n1,51\n2,60\n", encoding="utf-8")
    df = read_clinical(path)
    assert len(df) == 3 and df.attrs["duplicate_ids"] == ["1"]


def test_end_to_end_csv_to_outcomes(tmp_path):
    row = zcq_row("0001", SYM_PRE, SYM_POST, FUN_PRE, FUN_POST, SAT_OK,
                  back_pain_pre=80, back_pain_post=40, leg_pain_pre=60, leg_pain_post=45)
    path = tmp_path / "clinical.csv"
    pd.DataFrame([row]).to_csv(path, index=False, sep=";")
    clean, problems = validate_clinical(read_clinical(path))
    out = derive_outcomes(clean)
    assert len(problems) == 0
    assert out["patient_id"].iloc[0] == "0001"
    assert out[["zcq_success", "back_pain_improved50", "leg_pain_improved50"]].values.tolist() == [[1.0, 1.0, 0.0]]
