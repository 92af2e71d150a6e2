"""Class-generalizable anomaly detection on residual features: ResAD (Yao, Chen, Gao, Zhai, Zhang, "ResAD:
A Simple Framework for Class Generalizable Anomaly Detection", NeurIPS 2024, arXiv 2410.20047) and ResAD++
(Yao, Shi, Zhao, Zhai, Zhang, "ResAD++: Towards Class-Agnostic Anomaly Detection via Residual Feature
Learning", IJCV 2026, arXiv 2509.23741), scaled down to 8×8 digits (rankwise.apps.anomaly_data).

Raw features of a new class lie where the model never saw normal data; their difference from the
nearest few-shot normal reference does not, so a detector trained on residuals of known classes
carries over. For a patch feature x and the pool P of the references' patch features:

    x* = argmax_{p ∈ P} cos(x, p),     r = (x − x*)²  (elementwise; the released code, pos_flag=True)
                                       r = x − x*     (the paper; squared=False)

A feature constraintor z = g(r) (3×3 conv, BatchNorm, ReLU, 1×1 conv) is trained on known classes, half
of each batch carrying synthetic defects, with the released code's log-barrier bidirectional
contraction loss on the radius A = √(‖z‖ + 1) − 1:

    r_max = min(0.9 · min A over anomalous patches, 0.4)   (0.4 with no anomaly),   r_min = 0.99 · r_max
    normal,  A > r_max:   −log σ(−(A − r_max)) · sg(e^{A − r_max})     (pulled in; sg: no gradient)
    normal,  A < r_min:   −log σ(−(r_min − A)) · sg(e^{r_min − A})     (pulled out)
    anomaly:              MSE(z, r) + (1 − cos(z, r))                  (kept as its input)
             A < b = r_max + 0.1:   −log σ(−(b − A)) · sg(e^{b − A})   (pushed outward)

each term a mean over the patches it applies to. Anomaly score of a patch: its radius A (distance
from the centre: normal patches sit on the band, anomalies outside it); of an image: the maximum.

Trains: the backbone (cross-entropy on known classes, then frozen) and the constraintor; nothing is
fitted on the unseen classes, which only supply 2, 4 or 8 reference images.
Scaled down from the paper: a small CNN trained here instead of an ImageNet WideResNet-50 (layers 1-3)
or ImageBind; one feature level instead of three; no VQ feature-distribution matching; no
normalizing-flow density (10 coupling layers per level, log-likelihood and abnormal-likelihood maps)
and no Gaussian smoothing: at this scale the constraintor's radius is the score. Data: digits 0-4 known,
5-9 unseen, with seeded synthetic defects instead of MVTec/VisA. Where the released code and the paper
differ we follow the code: the squared residual, the bidirectional band, the anomaly-invariance term.
One simplification: the outward push on anomalies applies whenever a batch has anomalies (the code
applies it only when a target is given, which training always does).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from .anomaly_data import (
    REFERENCE_POOL,
    DigitBackbone,
    auroc,
    check_images,
    few_shot_references,
    load_digit_images,
    split_unseen_class,
    synthetic_defects,
    train_backbone,
)

KNOWN, UNSEEN = (0, 1, 2, 3, 4), (5, 6, 7, 8, 9)
R_CAP, BAND, PUSH = 0.4, 0.99, 0.1


def nearest_reference_residual(features: torch.Tensor, references: torch.Tensor,
                               squared: bool = True) -> torch.Tensor:
    """Each feature (..., C) minus its cosine-nearest row of references (M, C); squared elementwise
    (the released code) unless squared=False (the paper's plain difference)."""
    if references.ndim != 2 or len(references) == 0 or features.shape[-1] != references.shape[-1]:
        raise ConfigError(f"references must be (M ≥ 1, {features.shape[-1]}) patch features, got "
                          f"{tuple(references.shape)}; pass reference features with the same channels.")
    flat = features.reshape(-1, features.shape[-1])
    similarity = F.normalize(flat, dim=1) @ F.normalize(references, dim=1).T
    difference = flat - references[similarity.argmax(dim=1)]
    return (difference.square() if squared else difference).reshape(features.shape)


def residual_maps(maps: torch.Tensor, reference_maps: torch.Tensor, squared: bool = True) -> torch.Tensor:
    """nearest_reference_residual on (N, C, H, W) maps, the pool being every position of every reference."""
    pool = reference_maps.permute(0, 2, 3, 1).reshape(-1, reference_maps.shape[1])
    return nearest_reference_residual(maps.permute(0, 2, 3, 1), pool, squared).permute(0, 3, 1, 2)


def contraction_radius(z: torch.Tensor) -> torch.Tensor:
    """A = √(‖z‖ + 1) − 1 over the last dimension."""
    return torch.sqrt(z.norm(dim=-1) + 1) - 1


def contraction_band(radius: torch.Tensor, anomalous: torch.Tensor) -> tuple[float, float]:
    """(r_min, r_max): r_max = min(0.9 · smallest anomalous radius, 0.4), r_min = 0.99 · r_max."""
    r_max = min(0.9 * radius[anomalous].min().item(), R_CAP) if anomalous.any() else R_CAP
    return BAND * r_max, r_max


def _log_barrier(excess: torch.Tensor) -> torch.Tensor:
    # −log σ(−x) = softplus(x); the e^x weight (no gradient) makes far-out patches dominate.
    return (F.softplus(excess) * torch.exp(excess).detach()).mean() if excess.numel() else excess.sum()


def contraction_loss(z: torch.Tensor, anomalous: torch.Tensor, target: torch.Tensor | None = None
                     ) -> torch.Tensor:
    """Log-barrier bidirectional contraction loss on patch features z (N, C) with a boolean mask (N,);
    target (N, C), the constraintor's input, keeps anomalies where they were (module docstring)."""
    anomalous = anomalous.bool()
    radius = contraction_radius(z)
    r_min, r_max = contraction_band(radius, anomalous)
    normal = radius[~anomalous]
    loss = _log_barrier(normal[normal > r_max] - r_max) + _log_barrier(r_min - normal[normal < r_min])
    if anomalous.any():
        if target is not None:
            kept, source = z[anomalous], target[anomalous]
            loss = loss + F.mse_loss(kept, source) + (1 - F.cosine_similarity(kept, source, dim=-1)).mean()
        outer, inside = r_max + PUSH, radius[anomalous]
        loss = loss + _log_barrier(outer - inside[inside < outer])
    return loss


class FeatureConstraintor(nn.Module):
    """Maps (N, C, H, W) features to constrained features of the same shape."""

    def __init__(self, channels: int):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1), nn.BatchNorm2d(channels),
                                 nn.ReLU(), nn.Conv2d(channels, channels, 1))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.net(features)


def constraintor_inputs(backbone: DigitBackbone, images: torch.Tensor, references: torch.Tensor | None,
                        squared: bool = True) -> torch.Tensor:
    """Raw patch features (references=None) or their residuals against the references' features."""
    features = backbone.patch_features(images)
    if references is None:
        return features
    check_images(references, "references")
    return residual_maps(features, backbone.patch_features(references), squared)


def train_constraintor(backbone: DigitBackbone, images: torch.Tensor, labels: torch.Tensor, *,
                       residual: bool = True, squared: bool = True, shots: int = 4, epochs: int = 30,
                       lr: float = 1e-3, batch: int = 64, seed: int = 0) -> FeatureConstraintor:
    """Train on known classes; each image's references are `shots` random normal images of its class,
    drawn afresh per batch as the released code does. residual=False trains on raw features instead."""
    check_images(images)
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    by_class = {int(c): (labels == c).nonzero().flatten() for c in labels.unique()}
    constraintor = FeatureConstraintor(backbone.channels)
    optimizer = torch.optim.Adam(constraintor.parameters(), lr=lr, weight_decay=5e-4)
    for _ in range(epochs):
        for idx in torch.randperm(len(images), generator=generator).split(batch):
            half = len(idx) // 2
            defected, masks = synthetic_defects(images[idx[:half]], generator)
            batch_images = torch.cat([defected, images[idx[half:]]])
            masks = torch.cat([masks, torch.zeros(len(idx) - half, *masks.shape[1:], dtype=torch.bool)])
            with torch.no_grad():
                inputs = torch.empty(len(idx), backbone.channels, *images.shape[1:])
                for c in labels[idx].unique().tolist():
                    rows = (labels[idx] == c).nonzero().flatten()
                    drawn = by_class[c][torch.randint(len(by_class[c]), (shots,), generator=generator)]
                    refs = images[drawn] if residual else None
                    inputs[rows] = constraintor_inputs(backbone, batch_images[rows], refs, squared)
            z = constraintor(inputs).permute(0, 2, 3, 1).flatten(0, 2)
            target = inputs.permute(0, 2, 3, 1).flatten(0, 2)
            loss = contraction_loss(z, masks.flatten(), target)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return constraintor.eval()


@torch.no_grad()
def score_images(backbone: DigitBackbone, constraintor: FeatureConstraintor | None, images: torch.Tensor,
                 references: torch.Tensor | None = None, squared: bool = True) -> torch.Tensor:
    """Image anomaly scores (N,): the largest patch radius A; constraintor=None scores the raw inputs."""
    inputs = constraintor_inputs(backbone, images, references, squared)
    z = inputs if constraintor is None else constraintor.eval()(inputs)
    return contraction_radius(z.permute(0, 2, 3, 1)).flatten(1).amax(dim=1)


def anomaly_benchmark(shots: tuple[int, ...] = (2, 4, 8), seed: int = 0, *, known: tuple[int, ...] = KNOWN,
                      unseen: tuple[int, ...] = UNSEEN, squared: bool = True, epochs: int = 30,
                      backbone_epochs: int = 15, train_shots: int = 4) -> dict:
    """Image-level AUROC on unseen digit classes (normal test images vs the same class with defects) for
    the constraintor on raw features, on residual features, and for the residual radius with no
    constraintor; per shot count, per class and averaged over classes. Raw features use no references:
    their AUROC is the same at every shot count."""
    for k in shots:
        few_shot_references(REFERENCE_POOL, k)
    images, labels = load_digit_images()
    is_known = torch.isin(labels, torch.tensor(known))
    x, y = images[is_known], labels[is_known]
    backbone = train_backbone(x, y, seed=seed, epochs=backbone_epochs)
    trained = {name: train_constraintor(backbone, x, y, residual=name == "residual", squared=squared,
                                        shots=train_shots, epochs=epochs, seed=seed)
               for name in ("raw", "residual")}
    table = {name: {str(k): {} for k in shots} for name in ("raw", "residual", "residual_no_constraintor")}
    sizes = {}
    for c in unseen:
        generator = torch.Generator().manual_seed(1000 * seed + c)
        pool, test, truth = split_unseen_class(images[labels == c], generator)
        sizes[c] = {"normal": int((~truth).sum()), "anomalous": int(truth.sum())}
        raw = auroc(score_images(backbone, trained["raw"], test), truth)
        for k in shots:
            refs = few_shot_references(pool, k)
            table["raw"][str(k)][c] = raw
            for name, model in (("residual", trained["residual"]), ("residual_no_constraintor", None)):
                table[name][str(k)][c] = auroc(score_images(backbone, model, test, refs, squared), truth)
    with torch.no_grad():
        accuracy = (backbone(x).argmax(1) == torch.unique(y, return_inverse=True)[1]).float().mean().item()
    mean = lambda cells: sum(cells.values()) / len(cells)  # noqa: E731
    return {"seed": seed, "shots": list(shots), "known": list(known), "unseen": list(unseen),
            "squared": squared, "backbone_train_accuracy": accuracy, "test_images": sizes,
            "auroc": {name: {k: {"per_class": cells, "mean": mean(cells)} for k, cells in by_shot.items()}
                      for name, by_shot in table.items()}}
