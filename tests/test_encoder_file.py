"""The pretrained-encoder file: weights + model card, and the compatibility check."""

import json

import numpy as np
import pytest

from lumbarjax.data.preprocess import preprocessing_config
from lumbarjax.errors import ConfigError
from lumbarjax.models import encoder_file as ef
from tests.configs_for_tests import preprocess_config

KW = {"arch": "lesion2d", "width": 8, "stage_sizes": [1, 1]}
PRE = preprocessing_config(preprocess_config((4.0, 2.0, 2.0), (8, 32, 32), (32, 32)))


def _card(**over):
    args = dict(encoder_kwargs=KW, preprocessing=PRE, label_column="stenosis_grade",
                label_names=("normal/mild", "moderate", "severe"),
                training_data={"format": "rsna2024", "studies_train": 40},
                validation={"qwk": 0.61})
    args.update(over)
    return ef.model_card(**args)


def test_round_trip_keeps_weights_and_card(tmp_path):
    params = {"conv": {"kernel": np.arange(24, dtype=np.float32).reshape(2, 3, 4)}, "bias": np.ones(3)}
    path, card_path = ef.save_encoder_file(str(tmp_path / "mri_encoder.msgpack"), params, _card())
    assert card_path.endswith("mri_encoder.card.json")
    got, card = ef.load_encoder_file(path)
    np.testing.assert_array_equal(got["conv"]["kernel"], params["conv"]["kernel"])
    assert card == json.load(open(card_path))
    assert card["architecture"] == "lesion2d" and card["input"]["shape"] == [8, 32, 32]
    assert card["input"]["spacing_mm"] == [4.0, 2.0, 2.0]
    assert card["intensity_normalisation"]["percentiles"] == [1.0, 99.0]
    assert card["labels"] == {"column": "stenosis_grade", "num_grades": 3,
                              "names": ["normal/mild", "moderate", "severe"]}
    assert card["validation"]["qwk"] == 0.61 and card["lumbarjax_version"]
    ef.check_compatible(card, encoder_kwargs=KW, preprocessing=PRE, path=path)  # no error


@pytest.mark.parametrize("kw, pre, message", [
    ({**KW, "arch": "slice2d"}, PRE, "architecture differs: the file has 'lesion2d'"),
    ({**KW, "width": 16}, PRE, "encoder field 'width' differs: the file has 8"),
    (KW, preprocessing_config(preprocess_config((4.0, 2.0, 2.0), (8, 64, 64), (32, 32))),
     "expects mri.shape=[8, 32, 32]"),
    (KW, preprocessing_config(preprocess_config((3.0, 2.0, 2.0), (8, 32, 32), (32, 32))),
     "expects mri.spacing=[4.0, 2.0, 2.0]"),
])
def test_mismatch_names_the_field(kw, pre, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        ef.check_compatible(_card(), encoder_kwargs=kw, preprocessing=pre, path="x.msgpack")


def test_not_an_encoder_file(tmp_path):
    p = tmp_path / "weights.msgpack"
    p.write_bytes(b"\x93\x01\x02\x03")
    with pytest.raises(ConfigError, match="not a lumbarjax encoder file"):
        ef.load_encoder_file(str(p))
    with pytest.raises(ConfigError, match="file not found"):
        ef.load_encoder_file(str(tmp_path / "none.msgpack"))
