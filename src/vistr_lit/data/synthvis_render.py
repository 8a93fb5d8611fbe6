"""Rendering synthvis videos: textured shapes moving, scaling, rotating and occluding on a noisy background.

Categories differ in shape AND texture; colours are random per object, so colour is never the cue. Pure numpy:
``render_video(rng, height, width, length, ...) -> (frames uint8 [V, H, W, 3], tracks)``; each track holds
its category index and its visible masks bool ``[V, H, W]`` (empty where absent, occluded or out of frame).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# (name, shape, texture); the category id is the position + 1.
CATEGORIES = (
    ("disc", "disc", "stripes"),
    ("square", "square", "checker"),
    ("triangle", "triangle", "dots"),
    ("star", "star", "noise"),
    ("ring", "ring", "checker"),
    ("cross", "cross", "stripes"),
)
STAR_POINTS = 5
STAR_INNER = 0.45  # inner radius of the star, relative to the outer one
RING_INNER = 0.55
CROSS_HALF_WIDTH = 0.32
SQUARE_HALF_SIDE = 0.82
TRIANGLE_INRADIUS = 0.5  # of an equilateral triangle with circumradius 1
TEXTURE_FREQ = 2.2  # texture cycles per object radius
DOT_RADIUS = 0.3  # in texture cells
TEXTURE_NOISE = 45.0  # std of the "solid + noise" texture, grey levels
PIXEL_NOISE = 8.0  # std of the sensor noise added to every frame
BG_CELL = 12  # pixels per cell of the low-frequency background noise
BG_LUMA_CONTRAST = 32.0  # std of the smooth background noise, shared by the channels
BG_COLOUR_CONTRAST = 12.0  # std of its per-channel part
BG_PATTERN_CONTRAST = 14.0
COLOUR_GAP = (90.0, 150.0)  # per-channel distance between an object's two texture colours


@dataclass
class Track:
    """One object: contiguous category index and visible masks bool ``[V, H, W]``."""

    category: int
    masks: np.ndarray


def _shape_mask(shape: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Inside test on object-local coordinates (radius 1)."""
    r = np.hypot(u, v)
    if shape == "disc":
        return r <= 1.0
    if shape == "ring":
        return (r <= 1.0) & (r >= RING_INNER)
    if shape == "square":
        return np.maximum(np.abs(u), np.abs(v)) <= SQUARE_HALF_SIDE
    if shape == "cross":
        arm = np.minimum(np.abs(u), np.abs(v)) <= CROSS_HALF_WIDTH
        return arm & (np.maximum(np.abs(u), np.abs(v)) <= 1.0)
    if shape == "triangle":
        inside = np.ones_like(u, dtype=bool)
        for angle in (np.pi / 2, np.pi / 2 + 2 * np.pi / 3, np.pi / 2 + 4 * np.pi / 3):
            inside &= u * np.cos(angle) + v * np.sin(angle) <= TRIANGLE_INRADIUS
        return inside
    if shape == "star":
        sector = 2 * np.pi / STAR_POINTS
        phase = np.mod(np.arctan2(v, u), sector) / sector  # 0..1 across one point
        tip = np.abs(2 * phase - 1)  # 1 at the tips, 0 between them
        return r <= STAR_INNER + (1 - STAR_INNER) * tip
    raise ValueError(f"unknown shape {shape!r}")


def _texture(texture: str, u, v, c1, c2, rng) -> np.ndarray:
    """float ``[..., 3]`` colours of the texture at object-local coordinates."""
    if texture == "stripes":
        pick = np.floor(u * TEXTURE_FREQ).astype(int) % 2 == 0
    elif texture == "checker":
        pick = (np.floor(u * TEXTURE_FREQ) + np.floor(v * TEXTURE_FREQ)).astype(int) % 2 == 0
    elif texture == "dots":
        fu, fv = np.mod(u * TEXTURE_FREQ, 1) - 0.5, np.mod(v * TEXTURE_FREQ, 1) - 0.5
        pick = np.hypot(fu, fv) > DOT_RADIUS
    elif texture == "noise":
        return c1 + rng.normal(0, TEXTURE_NOISE, (*u.shape, 3))
    else:
        raise ValueError(f"unknown texture {texture!r}")
    return np.where(pick[..., None], c1, c2)


def _background(rng, height: int, width: int) -> np.ndarray:
    """float ``[H, W, 3]``: base colour + smooth colour noise + a faint oriented wave pattern."""
    gh, gw = height // BG_CELL + 2, width // BG_CELL + 2
    grid = rng.normal(0, BG_LUMA_CONTRAST, (gh, gw, 1)) + rng.normal(0, BG_COLOUR_CONTRAST, (gh, gw, 3))
    ys = np.linspace(0, gh - 1.001, height)
    xs = np.linspace(0, gw - 1.001, width)
    y0, x0 = ys.astype(int), xs.astype(int)
    fy, fx = (ys - y0)[:, None, None], (xs - x0)[None, :, None]
    smooth = (
        grid[y0][:, x0] * (1 - fy) * (1 - fx)
        + grid[y0 + 1][:, x0] * fy * (1 - fx)
        + grid[y0][:, x0 + 1] * (1 - fy) * fx
        + grid[y0 + 1][:, x0 + 1] * fy * fx
    )
    yy, xx = np.mgrid[0:height, 0:width]
    angle, period = rng.uniform(0, np.pi), rng.uniform(6, 20)
    wave = np.sin((xx * np.cos(angle) + yy * np.sin(angle)) * 2 * np.pi / period)
    base = rng.uniform(70, 180, 3)
    return base + smooth + BG_PATTERN_CONTRAST * wave[..., None]


def _colours(rng) -> tuple[np.ndarray, np.ndarray]:
    c1 = rng.uniform(30, 225, 3)
    away = np.where(c1 < 128, 1.0, -1.0)  # move each channel towards the far end of its range
    c2 = np.clip(c1 + away * rng.uniform(*COLOUR_GAP, 3), 0, 255)
    return c1, c2


def _trajectories(
    rng, n: int, height: int, width: int, length: int, cross_prob: float, enter_leave_prob: float
):
    """Per object: centre ``[V, 2]`` (x, y), radius ``[V]``, angle ``[V]``, present bool ``[V]``."""
    t = np.arange(length, dtype=float)
    side = min(height, width)
    objs = []
    meet = None
    if n >= 2 and rng.random() < cross_prob:  # objects 0 and 1 meet at one place mid-video
        meet = (rng.uniform(0.3, 0.7, 2) * (width, height), rng.uniform(0.35, 0.65) * (length - 1))
    for k in range(n):
        speed = rng.uniform(0.3, 0.03 * side)
        heading = rng.uniform(0, 2 * np.pi)
        vel = speed * np.array([np.cos(heading), np.sin(heading)])
        if meet is not None and k < 2:
            start = meet[0] - vel * meet[1]
        else:
            start = rng.uniform(-0.1, 1.1, 2) * (width, height)
        wobble = rng.uniform(0, 0.03 * side) * np.sin(rng.uniform(0.2, 0.8) * t + rng.uniform(0, 2 * np.pi))
        centre = start[None] + vel[None] * t[:, None] + wobble[:, None]
        r0 = rng.uniform(0.12, 0.24) * side
        radius = r0 * (1 + rng.uniform(-0.45, 0.45) * t / max(length - 1, 1))
        angle = rng.uniform(0, 2 * np.pi) + rng.uniform(-0.15, 0.15) * t
        present = np.ones(length, dtype=bool)
        if length >= 4 and rng.random() < enter_leave_prob:  # appears late and/or leaves early
            a = int(rng.integers(0, length // 2))
            b = int(rng.integers(max(a + 2, length // 2), length + 1))
            present[:a] = False
            present[b:] = False
        objs.append((centre, radius, angle, present))
    return objs, meet is not None


def render_video(
    rng: np.random.Generator,
    height: int,
    width: int,
    length: int,
    num_objects: int,
    cross_prob: float = 0.3,
    enter_leave_prob: float = 0.35,
) -> tuple[np.ndarray, list[Track]]:
    """One video: frames uint8 ``[V, H, W, 3]`` and a :class:`Track` per object visible at least once.

    Objects are drawn in a random z-order; the annotated mask of an object is its visible part.
    """
    objs, crossing = _trajectories(rng, num_objects, height, width, length, cross_prob, enter_leave_prob)
    categories = [int(rng.integers(len(CATEGORIES))) for _ in range(num_objects)]
    colours = [_colours(rng) for _ in range(num_objects)]
    if crossing:  # the hard case for identity: same category, similar colours
        categories[1] = categories[0]
        colours[1] = tuple(np.clip(c + rng.uniform(-25, 25, 3), 0, 255) for c in colours[0])
    order = rng.permutation(num_objects)  # z-order, bottom first
    yy, xx = np.mgrid[0:height, 0:width].astype(float)
    background = _background(rng, height, width)
    frames = np.empty((length, height, width, 3), dtype=np.uint8)
    visible = np.zeros((num_objects, length, height, width), dtype=bool)
    for t in range(length):
        canvas = background.copy()
        covered = np.zeros((height, width), dtype=bool)
        full = {}
        for k in order:
            centre, radius, angle, present = objs[k]
            if not present[t]:
                continue
            dx, dy = (xx - centre[t, 0]) / radius[t], (yy - centre[t, 1]) / radius[t]
            cos, sin = np.cos(angle[t]), np.sin(angle[t])
            u, v = cos * dx + sin * dy, -sin * dx + cos * dy
            _, shape, texture = CATEGORIES[categories[k]]
            inside = _shape_mask(shape, u, v)
            if inside.any():
                canvas[inside] = _texture(texture, u[inside], v[inside], *colours[k], rng)
                full[k] = inside
        for k in order[::-1]:  # top first: visible = drawn minus everything above
            if k in full:
                visible[k, t] = full[k] & ~covered
                covered |= full[k]
        frames[t] = np.clip(canvas + rng.normal(0, PIXEL_NOISE, canvas.shape), 0, 255).astype(np.uint8)
    tracks = [Track(categories[k], visible[k]) for k in range(num_objects) if visible[k].any()]
    return frames, tracks
