"""The photos dataset: deterministic views, whole photographs per split, the float model's logits as targets."""

from __future__ import annotations

import copy

import pytest
import torch

from optiforge.data import make_loader
from optiforge.errors import DataError
from optiforge.tasks import LogitFidelity, task_for


def test_each_photograph_feeds_exactly_one_split_and_the_choice_follows_the_seed():
    from optiforge.data.photos import split_photos

    names = [f"photo{index}" for index in range(7)]
    groups = split_photos(names, seed=3)
    assert sorted(sum(groups, [])) == sorted(names)
    assert all(groups) and len(set(sum(groups, []))) == len(names)
    assert split_photos(list(reversed(names)), seed=3) == groups  # the input's order does not matter
    assert any(split_photos(names, seed=seed) != groups for seed in range(4, 10))
    with pytest.raises(DataError, match="too few"):
        split_photos(names[:2], seed=0)


def test_views_are_deterministic_augmented_crops():
    from optiforge.data.photos import photo_views

    photo = torch.rand(3, 300, 400, generator=torch.Generator().manual_seed(0))
    views = photo_views({"a": photo, "b": photo.flip(1)}, ["a", "b"], 5, seed=1)
    assert views.shape == (5, 3, 224, 224)
    assert 0.0 <= float(views.min()) and float(views.max()) <= 1.0
    assert torch.equal(views, photo_views({"a": photo, "b": photo.flip(1)}, ["a", "b"], 5, seed=1))
    assert not torch.equal(views, photo_views({"a": photo, "b": photo.flip(1)}, ["a", "b"], 5, seed=2))
    assert not torch.allclose(views[0], views[1])  # two views of one photograph differ
    # a photograph's views do not depend on which others share the split
    assert torch.equal(photo_views({"a": photo}, ["a"], 2, seed=1)[0], views[0])


def test_dataset_keeps_calibration_and_evaluation_photographs_apart(small_photos):
    groups = small_photos.info["photos"]
    train, val, test = set(groups["train"]), set(groups["val"]), set(groups["test"])
    assert train and val and test
    assert not train & test and not train & val and not val & test
    assert len(small_photos.train) + len(small_photos.val) + len(small_photos.test) == 12
    assert small_photos.input_shape == (3, 224, 224) and small_photos.num_classes == 1000
    assert small_photos.task == "logit_fidelity"


def test_dataset_targets_are_the_float_models_logits_on_its_own_views(small_photos, efficientnet):
    from optiforge.data.photos import available_photos, photo_views, split_photos
    from optiforge.models.efficientnet import normalize

    pixel_values, logits = small_photos.test.tensors
    with torch.no_grad():
        assert torch.allclose(efficientnet(pixel_values), logits, atol=1e-4, rtol=0)
    found = available_photos()
    evaluation = split_photos(list(found), seed=0)[2]
    assert evaluation == small_photos.info["photos"]["test"]
    assert torch.equal(normalize(photo_views(found, evaluation, len(pixel_values), seed=0)), pixel_values)


def test_too_few_views_are_refused():
    from optiforge.data.photos import photos

    with pytest.raises(DataError, match=r"data\.views: 2"):
        photos(views=2)


def test_fidelity_is_perfect_for_the_float_model_and_drops_for_a_perturbed_one(small_photos, efficientnet):
    task = task_for("logit_fidelity")
    loader = make_loader(small_photos.test, 8)
    exact = task.evaluate(efficientnet, loader, torch.device("cpu"))
    assert exact["agreement"] == 1.0 and exact["cosine"] == pytest.approx(1.0, abs=1e-5)
    assert exact["loss"] == pytest.approx(0.0, abs=1e-5)
    perturbed = copy.deepcopy(efficientnet)
    with torch.no_grad():
        classifier = perturbed.classifier.weight
        classifier.add_(torch.randn(classifier.shape, generator=torch.Generator().manual_seed(0)) * 0.2)
    measured = task.evaluate(perturbed, loader, torch.device("cpu"))
    assert measured["agreement"] < 1.0 and measured["cosine"] < 0.99 and measured["loss"] > 0.01


def test_logit_fidelity_counts_agreement_cosine_and_kl():
    task = LogitFidelity()
    reference = torch.tensor([[3.0, 0.0, 0.0], [0.0, 2.0, 0.0]])
    outputs = torch.tensor([[3.0, 0.0, 0.0], [2.0, 0.0, 0.0]])  # the second row picks another class
    metrics = task.finalize(task.batch_sums(outputs, reference))
    assert metrics["agreement"] == 0.5
    assert metrics["cosine"] == pytest.approx(0.5)  # (1 + 0) / 2
    assert metrics["loss"] > 0 and float(task.loss(reference, reference)) == pytest.approx(0.0, abs=1e-7)
    assert task.primary_metric == "agreement" and task.higher_is_better


def test_photographs_of_a_package_that_is_not_installed_are_left_out(monkeypatch):
    from optiforge.data import photos as photos_module

    monkeypatch.setattr(photos_module, "OPTIONAL_PACKAGES", {"chelsea": "a_package_not_installed_here"})
    found = photos_module.available_photos()
    assert "chelsea" not in found
    assert {"china", "flower", "grace_hopper"} <= set(found)
    for photo in found.values():
        assert photo.shape[0] == 3 and 0.0 <= float(photo.min()) <= float(photo.max()) <= 1.0


def test_targets_are_cached_by_views_and_weights(efficientnet, tmp_path, monkeypatch):
    from optiforge.data.photos import cached_reference_logits, photo_views
    from optiforge.models.efficientnet import normalize

    monkeypatch.setenv("OPTIFORGE_CACHE_DIR", str(tmp_path))
    views = normalize(
        photo_views({"a": torch.rand(3, 256, 256, generator=torch.Generator().manual_seed(0))}, ["a"], 2, 0)
    )
    first = cached_reference_logits(efficientnet, views)
    (stored,) = (tmp_path / "photos").glob("logits-*.pt")
    torch.save(first + 1.0, stored)  # what the cache holds is what comes back
    assert torch.equal(cached_reference_logits(efficientnet, views), first + 1.0)
    changed = copy.deepcopy(efficientnet)
    with torch.no_grad():
        changed.classifier.bias.add_(0.5)
    assert torch.allclose(cached_reference_logits(changed, views), first + 0.5, atol=1e-4)  # other weights: computed
    assert torch.allclose(cached_reference_logits(efficientnet, views[:1]), first[:1], atol=1e-4)  # other views
    assert len(list((tmp_path / "photos").glob("logits-*.pt"))) == 3
