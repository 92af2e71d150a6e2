"""Data, defects and backbone for rankwise.apps.anomaly (ResAD++ scaled down to scikit-learn's digits).

Images are scikit-learn's bundled digits (1797 grey 8×8 images, no download), scaled to [0, 1]. The
backbone is a small CNN trained here with cross-entropy on the known classes only, then frozen; its
patch features are the positions of an 8×8 map: block 1's map (receptive field 5×5) concatenated with
block 2's 4×4 map repeated to 8×8 (receptive field 10×10), as PatchCore and ResAD combine a shallow
and a deeper layer so that a patch sees both local strokes and context.

Synthetic defects stand in for the paper's (DRÆM-style) synthesized anomalies: each image gets one
3×3 square that is either painted bright (ink where there was none), erased (a broken stroke), or
replaced by a 3×3 piece of another image of the set (a misplaced stroke). Of a few seeded candidate
positions the one that changes the image most is used, so that a defect is never invisible; the mask
marks the pixels of the square that changed by more than a quarter of the range.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError

IMAGE_SIZE = 8
DEFECT_SIZE = 3
DEFECT_POSITIONS = 6  # candidate squares per image; the most visible one is kept
VISIBLE = 0.25
REFERENCE_POOL = 8  # normal images set aside per unseen class; k shots take the first k of them


def load_digit_images() -> tuple[torch.Tensor, torch.Tensor]:
    """All of scikit-learn's digits: images (1797, 8, 8) in [0, 1] and their labels (1797,)."""
    try:
        from sklearn.datasets import load_digits
    except ImportError as error:
        raise ConfigError("the digits data ships with scikit-learn: pip install scikit-learn") from error
    digits = load_digits()
    images = torch.tensor(digits.images, dtype=torch.float32) / 16.0
    return images, torch.tensor(digits.target, dtype=torch.long)


def check_images(images: torch.Tensor, name: str = "images") -> None:
    """Raise ConfigError unless `images` is a float tensor of shape (N, 8, 8) with N ≥ 1."""
    if not torch.is_tensor(images) or images.ndim != 3 or tuple(images.shape[1:]) != (IMAGE_SIZE,) * 2 \
            or len(images) == 0 or not images.is_floating_point():
        shape = tuple(images.shape) if torch.is_tensor(images) else type(images).__name__
        raise ConfigError(f"{name} must be a float tensor of shape (N, {IMAGE_SIZE}, {IMAGE_SIZE}), N ≥ 1, "
                          f"got {shape}; pass grey {IMAGE_SIZE}×{IMAGE_SIZE} images scaled to [0, 1].")


def synthetic_defects(images: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """One seeded defect per image: (corrupted images, boolean masks), both (N, 8, 8)."""
    check_images(images)
    count, span, side = len(images), IMAGE_SIZE - DEFECT_SIZE + 1, DEFECT_SIZE
    corrupted, masks = images.clone(), torch.zeros(images.shape, dtype=torch.bool)
    kinds = torch.randint(3, (count,), generator=generator)
    donors = torch.randint(count, (count,), generator=generator)
    for i in range(count):
        best = None
        for _ in range(DEFECT_POSITIONS):
            row, col, src_row, src_col = torch.randint(span, (4,), generator=generator).tolist()
            if kinds[i] == 0:
                patch = torch.ones(side, side)
            elif kinds[i] == 1:
                patch = torch.zeros(side, side)
            else:
                patch = images[donors[i], src_row:src_row + side, src_col:src_col + side]
            change = (patch - images[i, row:row + side, col:col + side]).abs()
            if best is None or change.sum() > best[0]:
                best = (change.sum(), row, col, patch, change)
        _, row, col, patch, change = best
        corrupted[i, row:row + side, col:col + side] = patch
        masks[i, row:row + side, col:col + side] = change > VISIBLE
    return corrupted, masks


def few_shot_references(pool: torch.Tensor | int, shots: int) -> torch.Tensor | None:
    """The first `shots` images of a reference pool (N, 8, 8); an int pool only checks the count."""
    available = pool if isinstance(pool, int) else len(pool)
    if isinstance(shots, bool) or not isinstance(shots, int) or not 1 <= shots <= available:
        raise ConfigError(f"shot count {shots!r} is not available: the pool holds {available} normal "
                          f"reference images; use 1 to {available} shots.")
    return None if isinstance(pool, int) else pool[:shots]


def split_unseen_class(own: torch.Tensor, generator: torch.Generator
                       ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One class's images, shuffled: (reference pool, test images, test labels). The pool is the first
    REFERENCE_POOL images; half of the rest stay normal, the other half get defects (label True)."""
    shuffled = own[torch.randperm(len(own), generator=generator)]
    pool, rest = shuffled[:REFERENCE_POOL], shuffled[REFERENCE_POOL:]
    if len(rest) < 2:
        raise ConfigError(f"a class needs more than {REFERENCE_POOL + 1} images, got {len(own)}.")
    defected, _ = synthetic_defects(rest[len(rest) // 2:], generator)
    test = torch.cat([rest[:len(rest) // 2], defected])
    return pool, test, torch.arange(len(test)) >= len(rest) // 2


class DigitBackbone(nn.Module):
    """A small CNN classifier whose intermediate maps are the frozen patch features."""

    def __init__(self, classes: int, width: int = 32):
        super().__init__()
        self.shallow = nn.Sequential(nn.Conv2d(1, width, 3, padding=1), nn.ReLU(),
                                     nn.Conv2d(width, width, 3, padding=1), nn.ReLU())
        self.deep = nn.Sequential(nn.MaxPool2d(2), nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU())
        self.head = nn.Linear(2 * width, classes)
        self.channels = 3 * width

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.deep(self.shallow(images.unsqueeze(1))).mean(dim=(2, 3)))

    def patch_features(self, images: torch.Tensor) -> torch.Tensor:
        """(N, 8, 8) images → (N, 3·width, 8, 8) patch features."""
        check_images(images)
        shallow = self.shallow(images.unsqueeze(1))
        deep = F.interpolate(self.deep(shallow), size=shallow.shape[-2:], mode="nearest")
        return torch.cat([shallow, deep], dim=1)


def train_backbone(images: torch.Tensor, labels: torch.Tensor, *, seed: int = 0, epochs: int = 15,
                   lr: float = 2e-3, batch: int = 64) -> DigitBackbone:
    """Cross-entropy on the given (known) classes only; returned frozen, in eval mode."""
    check_images(images)
    classes, targets = torch.unique(labels, return_inverse=True)
    torch.manual_seed(seed)
    model = DigitBackbone(len(classes))
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    order = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        for idx in torch.randperm(len(images), generator=order).split(batch):
            loss = F.cross_entropy(model(images[idx]), targets[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return model.eval().requires_grad_(False)


def auroc(scores: torch.Tensor, anomalous: torch.Tensor) -> float:
    """Area under the ROC curve: P(score of an anomaly > score of a normal), ties counted half."""
    positive, negative = scores[anomalous.bool()], scores[~anomalous.bool()]
    if len(positive) == 0 or len(negative) == 0:
        raise ConfigError("AUROC needs at least one normal and one anomalous image.")
    above = (positive[:, None] > negative[None, :]).double().mean()
    tied = (positive[:, None] == negative[None, :]).double().mean()
    return float(above + 0.5 * tied)
