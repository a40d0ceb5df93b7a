"""Data: built-in sets, factories, splits; models: builders and fit checks."""

from __future__ import annotations

import pytest
import torch

import optiforge
from optiforge.errors import ConfigError, DataError


def test_digits_splits_are_disjoint_and_sized(digits):
    assert digits.input_shape == (64,)
    assert digits.num_classes == 10
    assert len(digits.train) + len(digits.val) + len(digits.test) == 1797
    assert len(digits.test) == 360
    train_indices = set(digits.train.indices)
    assert not train_indices & set(digits.val.indices)


def test_digits_image_layout():
    data = optiforge.build_data(optiforge.DataConfig(name="digits", image=True))
    assert data.input_shape == (1, 8, 8)


@pytest.fixture(scope="module")
def mnist1d():
    """Generating MNIST-1D takes seconds: built once for the tests that read it."""
    return optiforge.build_data(optiforge.DataConfig(name="mnist1d"))


def test_mnist1d_is_deterministic_and_shaped(mnist1d):
    first = mnist1d
    second = optiforge.build_data(optiforge.DataConfig(name="mnist1d"))
    assert first.input_shape == (1, 40)
    assert len(first.test) == 1000 and first.num_classes == 10
    assert torch.equal(first.test[0][0], second.test[0][0])


def test_factory_with_options():
    data = optiforge.build_data(optiforge.DataConfig(factory="factories:blobs", n=64, classes=4))
    assert data.num_classes == 4 and data.input_shape == (10,)


@pytest.mark.parametrize(
    ("factory", "pattern"),
    [
        ("no_such_module:load", "cannot import module 'no_such_module'"),
        ("factories:absent", "has no callable 'absent'"),
        ("factories", "not of the form"),
        ("factories:not_a_pair", r"must return \(train, test\)"),
        ("factories:broken", "the data server is down"),
    ],
)
def test_bad_factories_are_named(factory, pattern):
    with pytest.raises((ConfigError, DataError), match=pattern):
        optiforge.build_data(optiforge.DataConfig(factory=factory))


def test_unknown_dataset_option_is_named():
    with pytest.raises(ConfigError, match=r"unknown field 'data.imgae'.*did you mean 'image'"):
        optiforge.build_data(optiforge.DataConfig(name="digits", imgae=True))


@pytest.mark.parametrize(("name", "options"), [("mlp", {"hidden": [16]}), ("cnn2d", {"channels": [4, 8]})])
def test_builtin_models_fit_their_data(name, options):
    data = optiforge.build_data(optiforge.DataConfig(name="digits", image=name == "cnn2d"))
    model = optiforge.build_model(optiforge.ModelConfig(name=name, **options), data)
    assert model(data.example_input(3)).shape == (3, 10)


def test_cnn1d_on_mnist1d(mnist1d):
    data = mnist1d
    model = optiforge.build_model(optiforge.ModelConfig(name="cnn1d", channels=[8, 8]), data)
    assert model(data.example_input(2)).shape == (2, 10)


def test_shape_mismatch_between_data_and_model_is_named(digits):
    with pytest.raises(DataError, match=r"cnn1d needs inputs of shape \(channels, length\)"):
        optiforge.build_model(optiforge.ModelConfig(name="cnn1d"), digits)
    # a model built for other inputs
    import factories

    wrong = factories.tiny_model((5,), 3)
    from optiforge.models.builtin import check_fits

    with pytest.raises(DataError, match="do not fit the model"):
        check_fits(wrong, digits)


def test_unknown_model_option_suggests_closest(digits):
    with pytest.raises(ConfigError, match=r"unknown field 'model.hiden'.*did you mean 'hidden'"):
        optiforge.build_model(optiforge.ModelConfig(name="mlp", hiden=[3]), digits)


def test_model_checkpoint_is_loaded_weights_only(tmp_path, digits):
    model = optiforge.build_model(optiforge.ModelConfig(name="mlp", hidden=[8]), digits)
    torch.save(model.state_dict(), tmp_path / "w.pt")
    again = optiforge.build_model(
        optiforge.ModelConfig(name="mlp", hidden=[8], checkpoint=str(tmp_path / "w.pt")), digits
    )
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values(), strict=True))
    with pytest.raises(optiforge.ModelError, match="does not fit the model"):
        optiforge.build_model(optiforge.ModelConfig(name="mlp", hidden=[9], checkpoint=str(tmp_path / "w.pt")), digits)
