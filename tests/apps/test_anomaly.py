"""ResAD++ on digits: the nearest-reference residual against brute force, the contraction loss's band
and terms against their formulas, defects, AUROC, bad input, and a tiny end-to-end run."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from rankwise.apps.anomaly import (
    anomaly_benchmark,
    contraction_band,
    contraction_loss,
    contraction_radius,
    nearest_reference_residual,
    residual_maps,
    score_images,
)
from rankwise.apps.anomaly_data import (
    DigitBackbone,
    auroc,
    check_images,
    few_shot_references,
    load_digit_images,
    synthetic_defects,
)
from rankwise.errors import ConfigError


def brute_force_residual(features, references, squared):
    out = torch.empty_like(features)
    for i, x in enumerate(features):
        cosines = [float(x @ p / (x.norm() * p.norm())) for p in references]
        nearest = references[max(range(len(references)), key=cosines.__getitem__)]
        out[i] = (x - nearest) ** 2 if squared else x - nearest
    return out


@pytest.mark.parametrize("squared", [True, False])
def test_residual_is_the_difference_from_the_cosine_nearest_reference(squared):
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(20, 6, generator=generator, dtype=torch.float64)
    references = torch.randn(9, 6, generator=generator, dtype=torch.float64) * 3
    expected = brute_force_residual(features, references, squared)
    torch.testing.assert_close(nearest_reference_residual(features, references, squared), expected)
    maps = features.reshape(5, 2, 2, 6).permute(0, 3, 1, 2)
    reference_maps = references[:8].reshape(2, 2, 2, 6).permute(0, 3, 1, 2)
    per_position = brute_force_residual(features, references[:8], squared)
    per_position = per_position.reshape(5, 2, 2, 6).permute(0, 3, 1, 2)
    torch.testing.assert_close(residual_maps(maps, reference_maps, squared), per_position)


@pytest.mark.parametrize("squared", [True, False])
def test_residual_is_zero_for_a_feature_equal_to_a_reference(squared):
    references = torch.eye(4, dtype=torch.float64) * torch.tensor([1.0, 2.0, 3.0, 4.0], dtype=torch.float64)
    features = references[[2, 0]].clone()
    residual = nearest_reference_residual(features, references, squared)
    assert residual.abs().max() == 0


def test_band_follows_the_smallest_anomalous_radius_capped_at_0_4():
    radius = torch.tensor([0.1, 0.9, 0.3, 2.0])
    band = lambda anomalous: contraction_band(radius, torch.tensor(anomalous))  # noqa: E731
    assert band([False, True, False, True]) == pytest.approx((0.99 * 0.4, 0.4))
    assert band([False, True, True, False]) == pytest.approx((0.99 * 0.27, 0.27))
    assert contraction_band(radius, torch.zeros(4, dtype=torch.bool)) == pytest.approx((0.396, 0.4))


def test_loss_matches_its_formula_term_by_term():
    z = torch.tensor([[3.0, 4.0], [0.0, 0.1], [0.6, 0.8], [1.0, 0.0]], dtype=torch.float64)
    target = torch.tensor([[1.0, 1.0], [2.0, 0.0], [0.0, 0.0], [1.0, 1.0]], dtype=torch.float64)
    anomalous = torch.tensor([False, False, True, True])
    A = torch.sqrt(z.norm(dim=1) + 1) - 1
    r_max = min(0.9 * min(A[2].item(), A[3].item()), 0.4)
    r_min = 0.99 * r_max
    barrier = lambda x: -math.log(1 / (1 + math.exp(x))) * math.exp(x)  # noqa: E731  −log σ(−x)·e^x
    expected = barrier(A[0].item() - r_max) + barrier(r_min - A[1].item())
    expected += F.mse_loss(z[2:], target[2:]).item()
    expected += (1 - F.cosine_similarity(z[2:], target[2:], dim=1)).mean().item()
    expected += (barrier(r_max + 0.1 - A[2].item()) + barrier(r_max + 0.1 - A[3].item())) / 2
    assert contraction_loss(z, anomalous, target).item() == pytest.approx(expected, rel=1e-9)
    assert contraction_radius(z)[0].item() == pytest.approx(math.sqrt(6) - 1)


@pytest.mark.parametrize("anomaly_radius", [None, 1.0, 0.3])
def test_optimizing_the_loss_pulls_normal_norms_into_the_band(anomaly_radius):
    generator = torch.Generator().manual_seed(0)
    directions = F.normalize(torch.randn(12, 4, generator=generator, dtype=torch.float64), dim=1)
    z = torch.nn.Parameter(directions * torch.linspace(0.1, 2.5, 12, dtype=torch.float64)[:, None])
    anomalies = torch.zeros(0, 4, dtype=torch.float64)
    if anomaly_radius is not None:  # fixed anomalies with radius A: ‖z‖ = (A + 1)² − 1
        anomalies = torch.full((3, 4), 0.5, dtype=torch.float64) * ((anomaly_radius + 1) ** 2 - 1)
    mask = torch.arange(12 + len(anomalies)) >= 12
    optimizer = torch.optim.SGD([z], lr=0.02)  # a step moves A by less than the band's width
    r_min, r_max = contraction_band(torch.tensor([anomaly_radius or 1.0]), torch.tensor([True]))
    inside = lambda: ((contraction_radius(z) >= r_min) & (contraction_radius(z) <= r_max)).all()  # noqa: E731
    assert not inside()
    for _ in range(10_000):
        loss = contraction_loss(torch.cat([z, anomalies]), mask)
        if loss.item() == 0:
            break
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert inside(), contraction_radius(z.detach())


def test_the_loss_pushes_anomalies_below_the_boundary_outward():
    # A = 0.398 (inside [0.396, 0.4]) and 0.47 (r_max stays 0.4; below the boundary r_max + 0.1 = 0.5)
    z = torch.nn.Parameter(torch.tensor([[1.398**2 - 1, 0.0], [1.47**2 - 1, 0.0]], dtype=torch.float64))
    loss = contraction_loss(z, torch.tensor([False, True]))
    loss.backward()
    assert z.grad[1, 0] < 0  # a descent step grows the anomaly's norm
    assert z.grad[0].abs().max() == 0  # the normal one is already in its band


def test_defects_are_seeded_visible_and_confined_to_one_square():
    images = load_digit_images()[0][:40]
    first = synthetic_defects(images, torch.Generator().manual_seed(3))
    again = synthetic_defects(images, torch.Generator().manual_seed(3))
    torch.testing.assert_close(first, again)
    corrupted, masks = first
    assert masks.flatten(1).any(dim=1).all()
    for image, bad, mask in zip(images, corrupted, masks):
        changed = (image != bad).nonzero()
        assert len(changed) > 0 and (changed.max(0).values - changed.min(0).values).max() < 3
        assert (image - bad).abs()[mask].min() > 0.25


def test_auroc_is_the_probability_an_anomaly_outscores_a_normal():
    sklearn_metrics = pytest.importorskip("sklearn.metrics")
    scores = torch.tensor([0.1, 0.4, 0.4, 0.8, 0.3, 0.4, 0.9, 0.2])
    truth = torch.tensor([False, False, True, True, False, True, True, False])
    assert auroc(scores, truth) == pytest.approx(sklearn_metrics.roc_auc_score(truth.numpy(), scores.numpy()))


def test_bad_shot_counts_and_shapes_are_config_errors():
    pool = torch.rand(8, 8, 8)
    assert few_shot_references(pool, 8).shape == (8, 8, 8)
    for shots in (9, 0, 2.0):
        with pytest.raises(ConfigError, match="shot count"):
            few_shot_references(pool, shots)
    with pytest.raises(ConfigError, match="shot count 16"):
        anomaly_benchmark(shots=(2, 16))  # refused before any training
    for bad in (torch.rand(4, 9, 9), torch.rand(8, 8), torch.rand(2, 1, 8, 8), torch.zeros(3, 8, 8).long()):
        with pytest.raises(ConfigError, match="shape"):
            check_images(bad)
    backbone = DigitBackbone(classes=2).eval()
    with pytest.raises(ConfigError, match=r"references must be a float tensor of shape \(N, 8, 8\)"):
        score_images(backbone, None, torch.rand(3, 8, 8), references=torch.rand(2, 16, 16))
    with pytest.raises(ConfigError, match="references must be"):
        nearest_reference_residual(torch.rand(5, 6), torch.rand(3, 7))


def test_a_tiny_benchmark_runs_end_to_end():
    result = anomaly_benchmark(shots=(2, 4), known=(0, 1), unseen=(7,), epochs=1, backbone_epochs=1)
    for name in ("raw", "residual", "residual_no_constraintor"):
        for k in ("2", "4"):
            cell = result["auroc"][name][k]
            assert 0 <= cell["mean"] <= 1 and set(cell["per_class"]) == {7}
    assert result["auroc"]["raw"]["2"] == result["auroc"]["raw"]["4"]
    assert result["test_images"][7]["normal"] > 0 and result["test_images"][7]["anomalous"] > 0
