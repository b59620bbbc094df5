"""data/torchdata.py: the torch eval transform matches serving's numpy one; augmentation is reproducible."""

from __future__ import annotations

import numpy as np
import torch

from seedlings.config import AugmentConfig
from seedlings.data.torchdata import CachedImages, augment, to_model_input
from seedlings.preprocess import PreprocessSpec, normalize


def test_the_eval_transform_is_the_serving_normalisation():
    spec = PreprocessSpec(image_size=8, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    batch = np.random.default_rng(0).integers(0, 256, (2, 8, 8, 3), dtype=np.uint8)
    assert np.allclose(to_model_input(torch.from_numpy(batch), spec).numpy(), normalize(batch, spec), atol=1e-6)


def test_augmentation_keeps_shape_and_range_and_follows_the_generator():
    batch = torch.from_numpy(np.random.default_rng(1).integers(0, 256, (4, 16, 16, 3), dtype=np.uint8))
    a = augment(batch, AugmentConfig(), torch.Generator().manual_seed(5))
    b = augment(batch, AugmentConfig(), torch.Generator().manual_seed(5))
    assert a.shape == (4, 3, 16, 16) and 0 <= a.min() and a.max() <= 1 and torch.equal(a, b)


def test_cached_images_yields_the_rows_asked_for():
    images = np.arange(3 * 2 * 2 * 3, dtype=np.uint8).reshape(3, 2, 2, 3)
    ds = CachedImages(images, np.array([0, 1, 2]), np.array([2, 0]))
    img, label = ds[0]
    assert len(ds) == 2 and label == 2 and torch.equal(img, torch.from_numpy(images[2]))


def test_right_angles_turns_each_image_by_a_quarter_turn_without_blur():
    import torch

    from seedlings.config import AugmentConfig
    from seedlings.data.torchdata import augment

    cfg = AugmentConfig(rotate=False, right_angles=True, flip=False, scale_min=1, scale_max=1, translate=0,
                        brightness=0, contrast=0, saturation=0)
    batch = torch.randint(0, 256, (16, 12, 12, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    out = augment(batch, cfg, torch.Generator().manual_seed(1))
    x = batch.permute(0, 3, 1, 2).float() / 255
    turns = []
    for i in range(len(x)):
        matches = [k for k in range(4) if torch.allclose(out[i], torch.rot90(x[i], k, dims=(1, 2)), atol=1e-5)]
        assert len(matches) == 1, f"image {i} is not an exact quarter turn of its input"
        turns.append(matches[0])
    assert len(set(turns)) > 1, "every image got the same turn"
