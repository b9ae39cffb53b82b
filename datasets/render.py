"""A numpy ray caster for CLEVR-like scenes: a grey ground plane and a few objects under one sun.

World: z up, ground z = 0. An object of radius r rests on the ground; in its local frame
(translate to its centre, rotate by -theta about z, divide by its scale s) it is a unit
shape: sphere |p| <= 1, cylinder px^2 + py^2 <= 1 and |pz| <= 1, cube max|p_i| <= 1.
s = r, except cubes: s = r / sqrt(2) (CLEVR's rule). A ray o + t d stays a ray o' + t d'
in the local frame with the *same* t (d' is not renormalised), so one hit distance serves both.

Each shape gives the interval [t_near, t_far] where a ray is inside it (NaN where it
misses); a ray hits when t_near <= t_far and t_far > 0. The camera sees an object where
its ray hits it, the ground elsewhere; a point is in shadow where the ray from it towards
the sun hits another object. Shading (display space, no gamma), with n the normal, l the sun,
h the half vector between l and the view, sun = max(n.l, 0) if the sun reaches the point else 0:
    light  = AMBIENT * (AMBIENT_DOWN + (1 - AMBIENT_DOWN) * (1 + n_z) / 2) + KEY * sun
    rubber = colour * light
    metal  = colour * (METAL_DIFFUSE * light + GLOSS * (n.h)^8) + SPECULAR * (n.h)^64   (where sun > 0)
             + METAL_REFLECT * (METAL_TINT * colour + 1 - METAL_TINT) * env(reflected view ray)
env is ENV_GROUND below the horizon and ENV_SKY above it (a soft step), so metal reflects a
bright sky on top faces and the dark ground on its sides. Ground: GROUND_GREY * (AMBIENT + KEY * l_z),
times GROUND_SHADOW in shadow.
Every pixel is the mean of SUPERSAMPLE x SUPERSAMPLE rays. Work is restricted to a window
around each object and its shadow, the same window size for a whole batch of scenes, so the
numpy arrays are [scenes, window rows, window cols]. Per-pixel values only meet exactly rounded
element-wise operations (+ - * / sqrt, min, max, comparisons; no BLAS, no transcendental
functions, no float reductions), so a pixel's value does not depend on which other scenes share
its batch or how large the window is.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

SIZES = {"small": 0.35, "large": 0.7}  # radius in scene units
COLOURS = {  # CLEVR's RGB values, in the vocabulary's order
    "cyan": (41, 208, 208), "red": (173, 35, 35), "gray": (87, 87, 87), "blue": (42, 75, 215),
    "yellow": (255, 238, 51), "purple": (129, 38, 192), "brown": (129, 74, 25), "green": (29, 105, 20),
}
MATERIALS = ("rubber", "metal")
SHAPES = ("sphere", "cylinder", "cube")
CUBE_SCALE = 1 / math.sqrt(2)
POSITION_RANGE = 3.0  # object centres lie in [-3, 3]^2
MIN_IMAGE_SIZE = 32
SUPERSAMPLE = 2  # rays per pixel along each axis

# Camera: looks at LOOK_AT from CAMERA_DISTANCE away, CAMERA_ELEVATION above the ground, from the -y side.
LOOK_AT = (0.0, 0.3, 0.0)
CAMERA_DISTANCE = 12.0
CAMERA_ELEVATION = math.radians(40.0)
FIELD_OF_VIEW = math.radians(32.0)  # full angle, both axes (square images)
# Sun: the unit direction towards it (high, from the camera's left and a little in front).
LIGHT = (-0.6, -0.45, 0.95)

GROUND_GREY = 0.62
GROUND_SHADOW = 0.6  # shadowed ground keeps this fraction of its light
AMBIENT = 0.5  # ambient light on an upward-facing surface
AMBIENT_DOWN = 0.5  # fraction of AMBIENT that reaches a downward-facing surface
KEY = 0.55  # sun strength
METAL_DIFFUSE = 0.25
METAL_REFLECT = 0.6
METAL_TINT = 0.8  # metal reflections: this much the metal's colour, the rest white
SPECULAR = 1.2
SPECULAR_SQUARINGS = 6  # exponent 2^6 = 64, by repeated squaring
GLOSS = 0.5  # a broad highlight on metal, exponent 2^3 = 8
GLOSS_SQUARINGS = 3
ENV_GROUND, ENV_SKY = 0.2, 1.5  # brightness reflected from the ground and from the sky
ENV_HORIZON_SHARPNESS = 3.0


def _normalise(v):
    norm = math.sqrt(sum(x * x for x in v))
    return tuple(x / norm for x in v)


def _cross(a, b):
    return (a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0])


LIGHT = _normalise(LIGHT)
CAMERA = (LOOK_AT[0], LOOK_AT[1] - CAMERA_DISTANCE * math.cos(CAMERA_ELEVATION),
          LOOK_AT[2] + CAMERA_DISTANCE * math.sin(CAMERA_ELEVATION))
FORWARD = _normalise(tuple(a - c for a, c in zip(LOOK_AT, CAMERA)))
RIGHT = _normalise(_cross(FORWARD, (0.0, 0.0, 1.0)))
UP = _cross(RIGHT, FORWARD)
TAN_HALF_FOV = math.tan(FIELD_OF_VIEW / 2)
if FORWARD[2] + TAN_HALF_FOV * UP[2] >= 0:
    raise AssertionError("the camera sees above the horizon: lower FIELD_OF_VIEW or raise CAMERA_ELEVATION")


def ground_directions() -> dict[str, np.ndarray]:
    """Unit vectors on the ground: the camera's right and forward axes projected, and their opposites."""
    right = np.array(_normalise((RIGHT[0], RIGHT[1], 0.0))[:2])
    behind = np.array(_normalise((FORWARD[0], FORWARD[1], 0.0))[:2])
    return {"right": right, "left": -right, "front": -behind, "behind": behind}


class Objects(NamedTuple):
    """A batch of scenes with k objects each; every field is [n, k] (position [n, k, 2]).

    size, colour, material, shape: indices into SIZES, COLOURS, MATERIALS, SHAPES;
    position: (x, y) of the centre on the ground; rotation: radians about the vertical axis.
    """
    size: np.ndarray
    colour: np.ndarray
    material: np.ndarray
    shape: np.ndarray
    position: np.ndarray
    rotation: np.ndarray

    @classmethod
    def from_names(cls, scenes: list[list[dict]]) -> "Objects":
        """Objects from dicts such as ``dict(size="large", colour="red", material="metal", shape="cube",
        x=0.5, y=-1.0, rotation=0.3)`` (rotation optional); every scene must hold the same number of objects."""
        tables = {"size": list(SIZES), "colour": list(COLOURS), "material": MATERIALS, "shape": SHAPES}
        if len({len(scene) for scene in scenes}) != 1:
            raise ValueError(f"every scene needs the same number of objects, got {[len(s) for s in scenes]}")
        fields = {name: [] for name in cls._fields}
        for scene in scenes:
            for name in fields:
                fields[name].append([])
            for obj in scene:
                for name, choices in tables.items():
                    if obj[name] not in choices:
                        raise ValueError(f"unknown {name} {obj[name]!r}; choose from {', '.join(choices)}")
                    fields[name][-1].append(list(choices).index(obj[name]))
                fields["position"][-1].append((obj["x"], obj["y"]))
                fields["rotation"][-1].append(obj.get("rotation", 0.0))
        return cls(**{name: np.array(v, np.float64 if name in ("position", "rotation") else np.int64)
                      for name, v in fields.items()})


def check_image_size(image_size: int) -> None:
    if not isinstance(image_size, (int, np.integer)) or image_size < MIN_IMAGE_SIZE:
        raise ValueError(f"image_size must be an integer >= {MIN_IMAGE_SIZE}, got {image_size!r}")


def scale(size: np.ndarray, shape: np.ndarray) -> np.ndarray:
    """The scale s of each object (its radius; radius / sqrt(2) for cubes)."""
    radius = np.array(list(SIZES.values()))[size]
    return np.where(shape == SHAPES.index("cube"), radius * CUBE_SCALE, radius)


def project(x, y, z):
    """Image coordinates (u right, v down, both in [0, 1] inside the frame) of world points."""
    rel = (x - CAMERA[0], y - CAMERA[1], z - CAMERA[2])
    depth = sum(r * f for r, f in zip(rel, FORWARD)) * (2 * TAN_HALF_FOV)
    return (0.5 + sum(r * a for r, a in zip(rel, RIGHT)) / depth,
            0.5 - sum(r * a for r, a in zip(rel, UP)) / depth)


def _box_corners(objects: Objects, on_ground: bool):
    """x, y, z [n, k, 8] of each object's world bounding box, or of that box's shadow on the ground."""
    s = scale(objects.size, objects.shape)
    half = np.where(objects.shape == SHAPES.index("cube"),
                    s * (np.abs(np.cos(objects.rotation)) + np.abs(np.sin(objects.rotation))), s)[..., None]
    sign = np.array([[(i >> b & 1) * 2 - 1 for i in range(8)] for b in range(3)], np.float64)
    x = objects.position[..., 0, None] + half * sign[0]
    y = objects.position[..., 1, None] + half * sign[1]
    z = s[..., None] * (1 + sign[2])
    if on_ground:  # slide each corner along the light onto z = 0
        x, y, z = x - z * (LIGHT[0] / LIGHT[2]), y - z * (LIGHT[1] / LIGHT[2]), 0 * z
    return x, y, z


def bounding_boxes(objects: Objects, with_shadow: bool = False) -> np.ndarray:
    """[n, k, 4] image boxes (u0, v0, u1, v1) that contain each object (and its shadow if asked)."""
    u, v = project(*_box_corners(objects, on_ground=False))
    if with_shadow:
        su, sv = project(*_box_corners(objects, on_ground=True))
        u, v = np.concatenate([u, su], -1), np.concatenate([v, sv], -1)
    return np.stack([u.min(-1), v.min(-1), u.max(-1), v.max(-1)], -1)


# --- unit shapes: the interval of t inside each, for rays o + t d in the local frame (NaN: miss) ---

def _slab(o, d):
    t1, t2 = (-1 - o) / d, (1 - o) / d
    return np.minimum(t1, t2), np.maximum(t1, t2)


def _disc(ox, oy, oz, dx, dy, dz, with_z: bool):
    """Interval inside the unit sphere (with_z) or the infinite unit cylinder about z: roots of |o + t d|^2 = 1."""
    a, b, c = dx * dx + dy * dy, ox * dx + oy * dy, ox * ox + oy * oy - 1
    if with_z:
        a, b, c = a + dz * dz, b + oz * dz, c + oz * oz
    root = np.sqrt(b * b - a * c)  # NaN where the ray misses
    return (-b - root) / a, (-b + root) / a


def _sphere(ox, oy, oz, dx, dy, dz):
    return _disc(ox, oy, oz, dx, dy, dz, with_z=True)


def _cylinder(ox, oy, oz, dx, dy, dz):
    near, far = _disc(ox, oy, oz, dx, dy, dz, with_z=False)
    z_near, z_far = _slab(oz, dz)
    return np.maximum(near, z_near), np.minimum(far, z_far)


def _cube(ox, oy, oz, dx, dy, dz):
    (xn, xf), (yn, yf), (zn, zf) = _slab(ox, dx), _slab(oy, dy), _slab(oz, dz)
    return np.maximum(np.maximum(xn, yn), zn), np.minimum(np.minimum(xf, yf), zf)


def _sphere_normal(px, py, pz):
    return px, py, pz


def _cylinder_normal(px, py, pz):
    cap = np.abs(pz) >= np.sqrt(px * px + py * py)  # which surface the point is nearer to
    return np.where(cap, 0, px), np.where(cap, 0, py), np.where(cap, np.sign(pz), 0)


def _cube_normal(px, py, pz):
    ax, ay, az = np.abs(px), np.abs(py), np.abs(pz)
    x_face, y_face = (ax >= ay) & (ax >= az), (ay > ax) & (ay >= az)
    return (np.where(x_face, np.sign(px), 0), np.where(y_face, np.sign(py), 0),
            np.where(x_face | y_face, 0, np.sign(pz)))


INTERVALS = (_sphere, _cylinder, _cube)  # in SHAPES order
NORMALS = (_sphere_normal, _cylinder_normal, _cube_normal)


def _by_shape(shape, functions, *arrays):
    """Apply functions[shape] row by row: ``shape`` holds one code per row (leading axis) of every array."""
    out = None
    for code, function in enumerate(functions):
        rows = shape.ravel() == code
        if rows.any():
            results = function(*(a[rows] for a in arrays))
            if out is None:
                full = np.broadcast_shapes(*(a.shape for a in arrays))
                out = [np.full(full, np.nan, np.float32) for _ in results]
            for o, r in zip(out, results):
                o[rows] = r
    return out


class _Slot(NamedTuple):
    """Object j of every scene as float32 arrays whose leading axis is the scene (``take`` gathers rows)."""
    shape: np.ndarray
    centre: tuple
    scale: np.ndarray
    cos: np.ndarray
    sin: np.ndarray
    colour: tuple
    metal: np.ndarray

    def take(self, index) -> "_Slot":
        return _Slot(*(tuple(c[index] for c in f) if isinstance(f, tuple) else f[index] for f in self))

    def local_vector(self, v):
        """R^T v / s: a direction in the local frame (un-normalised, so ray distances t are kept)."""
        return ((self.cos * v[0] + self.sin * v[1]) / self.scale, (self.cos * v[1] - self.sin * v[0]) / self.scale,
                v[2] / self.scale)

    def local_point(self, p):
        return self.local_vector(tuple(a - c for a, c in zip(p, self.centre)))

    def hits(self, origin, direction):
        """t_near of each ray and whether the ray hits this object."""
        near, far = _by_shape(self.shape, INTERVALS, *self.local_point(origin), *self.local_vector(direction))
        return near, (near <= far) & (far > 0)

    def normal(self, point):
        """World unit normal at surface points."""
        nx, ny, nz = _by_shape(self.shape, NORMALS, *self.local_point(point))
        norm = np.sqrt(nx * nx + ny * ny + nz * nz)
        nx, ny, nz = nx / norm, ny / norm, nz / norm
        return self.cos * nx - self.sin * ny, self.sin * nx + self.cos * ny, nz


def _slots(objects: Objects) -> list[_Slot]:
    s = scale(objects.size, objects.shape)
    rgb = np.array(list(COLOURS.values()), np.float64)[objects.colour] / 255
    as32 = lambda a: np.asarray(a, np.float32)
    return [_Slot(objects.shape[:, j], (as32(objects.position[:, j, 0]), as32(objects.position[:, j, 1]), as32(s[:, j])),
                  as32(s[:, j]), as32(np.cos(objects.rotation[:, j])), as32(np.sin(objects.rotation[:, j])),
                  tuple(as32(rgb[:, j, c]) for c in range(3)), objects.material[:, j] == MATERIALS.index("metal"))
            for j in range(objects.shape.shape[1])]


def _windows(objects: Objects, image_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel rows [n, k, h] and columns [n, k, w] of a window around each object and its shadow;
    one window size (h, w) serves the whole batch."""
    box = np.clip(bounding_boxes(objects, with_shadow=True) * image_size, 0, image_size)
    lo = np.floor(box[..., :2]).astype(np.int64)
    size = np.minimum((np.ceil(box[..., 2:]).astype(np.int64) - lo).max((0, 1)), image_size)
    lo = np.clip(lo, 0, image_size - size)
    return lo[..., 1, None] + np.arange(size[1]), lo[..., 0, None] + np.arange(size[0])


def _ray_directions(rows, cols, side: int):
    """Un-normalised directions (x, y, z) of the rays through subsample rows x cols (broadcast) of a side^2 grid."""
    a = (((cols + 0.5) * (2 / side) - 1) * TAN_HALF_FOV).astype(np.float32)
    b = ((1 - (rows + 0.5) * (2 / side)) * TAN_HALF_FOV).astype(np.float32)
    return tuple(FORWARD[i] + a * RIGHT[i] + b * UP[i] for i in range(3))


def _ground(direction):
    """Where rays from the camera meet the ground z = 0."""
    t = -CAMERA[2] / direction[2]
    return CAMERA[0] + t * direction[0], CAMERA[1] + t * direction[1], np.float32(0)


def _shade(slot: _Slot, normal, direction, visible):
    """Colour (3 arrays) of surface points of the objects in ``slot`` seen along unit ``direction``."""
    n_dot_l = sum(n * l for n, l in zip(normal, LIGHT))
    sun = np.maximum(n_dot_l, 0) * visible
    light = AMBIENT * (AMBIENT_DOWN + (1 - AMBIENT_DOWN) * (0.5 + 0.5 * normal[2])) + KEY * sun
    half = [l - d for l, d in zip(LIGHT, direction)]
    half_norm = np.sqrt(sum(h * h for h in half))
    gloss = np.maximum(sum(n * h for n, h in zip(normal, half)) / half_norm, 0)
    for _ in range(GLOSS_SQUARINGS):
        gloss = gloss * gloss
    highlight = gloss
    for _ in range(SPECULAR_SQUARINGS - GLOSS_SQUARINGS):
        highlight = highlight * highlight
    d_dot_n = sum(d * n for d, n in zip(direction, normal))
    reflected_z = direction[2] - 2 * d_dot_n * normal[2]
    env = ENV_GROUND + (ENV_SKY - ENV_GROUND) * np.clip(0.5 + ENV_HORIZON_SHARPNESS * reflected_z, 0, 1)
    lit = sun > 0
    white = SPECULAR * highlight * lit
    return tuple(np.where(slot.metal, c * (METAL_DIFFUSE * light + GLOSS * gloss * lit)
                          + METAL_REFLECT * (METAL_TINT * c + (1 - METAL_TINT)) * env + white, c * light)
                 for c in slot.colour)


def _downsample(x: np.ndarray) -> np.ndarray:
    """Mean over the supersampling axes (-3 and -1), added in a fixed order."""
    total = 0
    for a in range(SUPERSAMPLE):
        for b in range(SUPERSAMPLE):
            total = total + x[..., a, :, b]
    return total / SUPERSAMPLE ** 2


def _to_bytes(x: np.ndarray) -> np.ndarray:
    return (np.clip(x, 0, 1) * 255 + 0.5).astype(np.uint8)


GROUND_LIT = GROUND_GREY * (AMBIENT + KEY * LIGHT[2])
GROUND_SHADOWED = GROUND_LIT * GROUND_SHADOW
GROUND_BYTE = _to_bytes(_downsample(np.full((SUPERSAMPLE, 1, SUPERSAMPLE), GROUND_LIT, np.float32)))[0]


class Rendering(NamedTuple):
    images: np.ndarray  # uint8 [n, 3, H, W]
    areas: np.ndarray  # float32 [n, k]: pixels covered by each object (fractions from supersampling)
    object_map: np.ndarray  # int8 [n, H, W]: the object covering the whole pixel, -1 for none or several


def render(objects: Objects, image_size: int) -> Rendering:
    """Ray-cast a batch of scenes; objects must not overlap in the image (callers ensure it).

    Rays are cast only in each object's window. The supersampled frame (three scratch planes of
    n * side^2) is written and read back only there; outside the windows the image is lit ground.
    """
    check_image_size(image_size)
    n, k = objects.shape.shape
    side, size = image_size * SUPERSAMPLE, image_size
    slots = _slots(objects)
    pixel_rows, pixel_cols = _windows(objects, image_size)
    h, w = pixel_rows.shape[-1], pixel_cols.shape[-1]
    sub = np.arange(SUPERSAMPLE)
    rows = (pixel_rows[..., None] * SUPERSAMPLE + sub).reshape(n, k, -1)
    cols = (pixel_cols[..., None] * SUPERSAMPLE + sub).reshape(n, k, -1)
    scene = np.arange(n)[:, None, None, None]
    rays = (scene * side + rows[..., :, None]) * side + cols[..., None, :]  # [n, k, rows, cols] into the frame
    frame = [np.empty(n * side * side, np.float32) for _ in range(3)]
    for plane in frame:
        plane[rays] = GROUND_LIT
    casts = []
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        for j, slot in enumerate(slots):  # shadows on the ground first: objects are drawn over them
            direction = _ray_directions(rows[:, j, :, None], cols[:, j, None, :], side)
            wide = slot.take((slice(None), None, None))
            t, hit = wide.hits(CAMERA, direction)
            shadowed = rays[:, j][wide.hits(_ground(direction), LIGHT)[1] & ~hit]
            for plane in frame:
                plane[shadowed] = GROUND_SHADOWED
            casts.append((direction, t, hit))
        for j, (slot, (direction, t, hit)) in enumerate(zip(slots, casts)):
            hit_scene = np.nonzero(hit)[0]
            if len(hit_scene) == 0:  # object j is out of frame in every scene
                continue
            t, d = t[hit], tuple(c[hit] for c in direction)
            point = tuple(c + t * dc for c, dc in zip(CAMERA, d))
            norm = np.sqrt(d[0] * d[0] + d[1] * d[1] + d[2] * d[2])
            own = slot.take(hit_scene)
            visible = np.ones(len(hit_scene), np.float32)
            for other in slots[:j] + slots[j + 1:]:
                visible[other.take(hit_scene).hits(point, LIGHT)[1]] = 0
            for plane, colour in zip(frame, _shade(own, own.normal(point), tuple(c / norm for c in d), visible)):
                plane[rays[:, j][hit]] = colour
    pixels = (scene * size + pixel_rows[..., :, None]) * size + pixel_cols[..., None, :]  # [n, k, h, w]
    images = np.full((3, n * size * size), GROUND_BYTE, np.uint8)
    for image, plane in zip(images, frame):
        image[pixels] = _to_bytes(_downsample(plane[rays].reshape(n, k, h, SUPERSAMPLE, w, SUPERSAMPLE)))
    object_map = np.full(n * size * size, -1, np.int8)
    areas = np.zeros((n, k), np.float32)
    for j, (_, _, hit) in enumerate(casts):  # object j lies inside window j
        coverage = _downsample(hit.reshape(n, h, SUPERSAMPLE, w, SUPERSAMPLE).astype(np.float32))
        areas[:, j] = coverage.sum((1, 2))
        object_map[pixels[:, j][coverage == 1]] = j
    images = np.ascontiguousarray(images.reshape(3, n, size, size).transpose(1, 0, 2, 3))
    return Rendering(images, areas, object_map.reshape(n, size, size))
