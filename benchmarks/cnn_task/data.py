"""The CNN task's data: procedurally drawn images of 10 classes, generated deterministically.

Every image is a pattern ``p ∈ [0, 1]`` over the pixel grid, painted as ``bg + (fg − bg)·p``
with a random background and foreground colour (their contrast drawn in [0.35, 1]), plus
Gaussian pixel noise. The class is the pattern; position, size, rotation jitter, frequency,
phase, colours and noise are nuisances:

====  ==========================================================================
0-3   sinusoidal gratings at 0°, 45°, 90°, 135° (±12° jitter, 1.5–3.5 cycles)
4     filled disk          5  ring             6  filled square (any rotation)
7     plus-shaped cross    8  checkerboard     9  filled triangle (any rotation)
====  ==========================================================================

Edges are anti-aliased (a logistic ramp one pixel wide). Nothing is downloaded; the same
``CNNConfig`` fields give bit-identical arrays on every machine.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from .config import CNNConfig

CLASSES = ("grating 0°", "grating 45°", "grating 90°", "grating 135°", "disk", "ring",
           "square", "cross", "checkerboard", "triangle")


@dataclasses.dataclass(frozen=True)
class ImageData:
    """Images ``(n, size, size, channels)`` float32 and integer labels, both splits."""

    train_x: np.ndarray
    train_y: np.ndarray
    val_x: np.ndarray
    val_y: np.ndarray

    @property
    def num_classes(self) -> int:
        return len(CLASSES)


def _ramp(signed_distance, pixel):
    """Anti-aliased inside indicator: 1 well inside (distance < 0), 0 well outside."""
    return 1.0 / (1.0 + np.exp(np.clip(signed_distance / (0.5 * pixel), -30, 30)))


def _draw(label, g, pixel):
    """Pattern of class ``label`` from the per-image geometry ``g`` (arrays (m, size, size))."""
    u, v, r, radius = g["u"], g["v"], g["r"], g["radius"]
    if label < 4:  # gratings: along the class orientation in image coordinates
        orientation = np.deg2rad(45.0 * label) + g["jitter"]
        along = np.cos(orientation) * g["x"] + np.sin(orientation) * g["y"]
        return 0.5 + 0.5 * np.sin(np.pi * g["cycles"] * along + g["phase"])
    if label == 4:
        return _ramp(r - radius, pixel)
    if label == 5:
        return _ramp(np.abs(r - radius) - 0.12, pixel)
    if label == 6:
        return _ramp(np.maximum(np.abs(u), np.abs(v)) - 0.75 * radius, pixel)
    if label == 7:
        arm = 0.15
        return np.maximum(_ramp(np.maximum(np.abs(u) - arm, np.abs(v) - radius), pixel),
                          _ramp(np.maximum(np.abs(v) - arm, np.abs(u) - radius), pixel))
    if label == 8:
        waves = np.sin(np.pi * g["cycles"] * u + g["phase"]) * np.sin(np.pi * g["cycles"] * v)
        return 0.5 + 0.5 * np.tanh(4 * waves)
    # Triangle: intersection of three half-planes at 120° (signed distance = the max).
    sides = [np.cos(a) * u + np.sin(a) * v for a in np.pi * np.array([3, 7, 11]) / 6]
    return _ramp(np.maximum.reduce(sides) - 0.5 * radius, pixel)


def _patterns(labels, rng, size):
    """The class patterns ``(n, size, size)`` in [0, 1] for ``labels``."""
    n = labels.size
    pixel = 2.0 / size
    grid = (np.arange(size) + 0.5) * pixel - 1.0
    y, x = np.meshgrid(grid, grid, indexing="ij")
    column = lambda a: a[:, None, None]  # noqa: E731
    params = dict(
        cx=column(rng.uniform(-0.3, 0.3, n)), cy=column(rng.uniform(-0.3, 0.3, n)),
        radius=column(rng.uniform(0.45, 0.8, n)), angle=column(rng.uniform(0, 2 * np.pi, n)),
        jitter=column(np.deg2rad(rng.uniform(-12, 12, n))),
        cycles=column(rng.uniform(1.5, 3.5, n)), phase=column(rng.uniform(0, 2 * np.pi, n)),
    )
    out = np.empty((n, size, size))
    for label in range(len(CLASSES)):
        mask = labels == label
        g = {k: a[mask] for k, a in params.items()}
        dx, dy = x[None] - g["cx"], y[None] - g["cy"]  # shape coordinates: shifted, rotated
        g.update(x=x[None], y=y[None], r=np.hypot(dx, dy),
                 u=np.cos(g["angle"]) * dx + np.sin(g["angle"]) * dy,
                 v=-np.sin(g["angle"]) * dx + np.cos(g["angle"]) * dy)
        out[mask] = _draw(label, g, pixel)
    return out


def _paint(patterns, rng, channels, noise):
    """Colour the patterns and add noise: ``(n, size, size, channels)`` float32."""
    n = patterns.shape[0]
    bg = rng.uniform(0.0, 1.0, size=(n, channels))
    contrast = rng.uniform(0.35, 1.0, size=(n, 1)) * rng.choice([-1.0, 1.0], size=(n, 1))
    fg = np.clip(bg + contrast * rng.uniform(0.6, 1.0, size=(n, channels)), 0.0, 1.0)
    images = bg[:, None, None, :] + (fg - bg)[:, None, None, :] * patterns[..., None]
    images = images + noise * rng.standard_normal(images.shape)
    return ((images - 0.5) / 0.5).astype(np.float32)


def make_images(count: int, cfg: CNNConfig, rng: np.random.Generator):
    """``count`` images and their balanced, shuffled labels."""
    labels = rng.permutation(np.arange(count) % len(CLASSES))
    patterns = _patterns(labels, rng, cfg.image_size)
    return _paint(patterns, rng, cfg.channels, cfg.noise), labels.astype(np.int32)


def make_data(cfg: CNNConfig) -> ImageData:
    """The training and validation splits of ``cfg`` (seeded by ``cfg.data_seed`` alone)."""
    rng = np.random.default_rng([cfg.data_seed, 0x5EED])
    train_x, train_y = make_images(cfg.train_size, cfg, rng)
    val_x, val_y = make_images(cfg.val_size, cfg, rng)
    return ImageData(train_x, train_y, val_x, val_y)


def batch_indices(cfg: CNNConfig) -> np.ndarray:
    """Training image indices ``(steps, batch_size)``: epochs of seeded permutations."""
    rng = np.random.default_rng([cfg.seed, 0xDA7A])
    needed = cfg.steps * cfg.batch_size
    epochs = -(-needed // cfg.train_size)
    order = np.concatenate([rng.permutation(cfg.train_size) for _ in range(epochs)])
    return order[:needed].reshape(cfg.steps, cfg.batch_size)
