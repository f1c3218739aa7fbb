"""``s2l-train --diameter``: every training image with small objects enlarged so its median
object is at least a given size.

DSB's fluorescent nuclei range from ~10 to ~50 px across; a network trained on all of them
at their own scale draws a one-pixel halo around the small ones, a third of such a
nucleus's area (docs/benchmarks.md, "One object size"). With ``--diameter D`` each
training image is resized by ``D / d``, ``d`` its median object diameter, clipped to
[:data:`~s2l_tools.inference.postprocess.MIN_SCALE`,
:data:`~s2l_tools.inference.postprocess.MAX_SCALE`] (1 to 3: images of bigger objects
stay at their own size, shrinking them cost IoU), and never past
:data:`~s2l_tools.inference.postprocess.MAX_PIXELS` (a megapixel):

- ``d`` is measured on the image's full mask (``--method full``), or estimated from
  the map of a random forest trained on the scribbles (:mod:`s2l_tools.classic.forest`,
  the fast start's pixel classifier, at the images' own scale): its objects, touching
  ones split, as :func:`s2l_tools.inference.postprocess.estimate_diameter` counts them;
- the scribbles, held-out strokes and masks are resized with the image (nearest);
- each image keeps its share of the epoch's crops by its own area, not the resized one
  (:func:`s2l_tools.training.data.epoch_plan`);
- an image whose scale a run already recorded (``--resume``, ``--from RUN``) keeps it,
  so that RUN's EMA maps still fit it.

The model keeps ``D`` in its metadata; prediction finds each image's scale from a first
pass (:func:`s2l_tools.inference.postprocess.at_diameter`).
"""

from __future__ import annotations

from dataclasses import replace

from s2l_tools.inference.postprocess import (estimate_diameter, median_diameter,
                                             resize_image, scale_for, scaled_shape)
from s2l_tools.training.data import TrainingData

__all__ = ["recorded_scales", "estimate_diameters", "training_scales", "rescale"]


def recorded_scales(record: dict | None, data: TrainingData) -> dict[int, float]:
    """Scales a run's input record (:func:`s2l_tools.training.data.inputs_record`) gave
    images of ``data``: by index, for the same stem and image content."""
    if not record:
        return {}
    old = {e["stem"]: e for e in record.get("images", []) if "scale" in e}
    known = {}
    for i, (stem, digest) in enumerate(zip(data.stems, data.digests)):
        e = old.get(stem)
        if e is not None and e.get("image") == digest.get("image"):
            known[i] = float(e["scale"])
    return known


def estimate_diameters(data: TrainingData, todo, *, from_masks: bool = False, seed: int = 0,
                       threads: int = 1) -> dict[int, float]:
    """The median object diameter of images ``todo`` of ``data`` (pixels; NaN: none found).

    With ``from_masks`` (``--method full``) measured on the full masks, else from a random
    forest trained on the scribbles of every image (seeded: the same on every Ray worker).
    A run on scribbles never looks at masks a dataset may also hold (for scoring).
    """
    todo = list(todo)
    if not todo:
        return {}
    if from_masks:
        return {i: median_diameter(data.masks[i]) for i in todo}
    from s2l_tools.classic.forest import map_forest_probability

    found = map_forest_probability(estimate_diameter, data.images, data.scribbles, todo,
                                   threads=threads, seed=seed)
    return dict(zip(todo, found))


def training_scales(data: TrainingData, target: float, *, record: dict | None = None,
                    from_masks: bool = False, seed: int = 0,
                    threads: int = 1) -> tuple[list[float], dict[int, float]]:
    """Each image's scale for ``--diameter target``: recorded ones kept, the others estimated
    (:func:`estimate_diameters`).

    Returns the scales and the diameters estimated now (by index).
    """
    known = recorded_scales(record, data)
    found = estimate_diameters(data, [i for i in range(len(data.images)) if i not in known],
                               from_masks=from_masks, seed=seed, threads=threads)
    scales = [known[i] if i in known else scale_for(found[i], target, data.images[i].shape)
              for i in range(len(data.images))]
    return scales, found


def rescale(data: TrainingData, scales) -> TrainingData:
    """``data`` with each image (and its scribbles, held-out strokes and mask) resized by
    its scale; ``scales`` recorded in it. The digests stay those of the images as read."""
    scales = [float(s) for s in scales]
    if len(scales) != len(data.images):
        raise ValueError(f"{len(scales)} scales for {len(data.images)} images")
    shapes = [scaled_shape(im.shape, s) for im, s in zip(data.images, scales)]

    def labels(arrays):
        return [None if a is None else resize_image(a, shape, order=0)
                for a, shape in zip(arrays, shapes)] if arrays else arrays

    return replace(
        data,
        images=[resize_image(im, shape, order=1) for im, shape in zip(data.images, shapes)],
        scribbles=labels(data.scribbles),
        masks=labels(data.masks),
        heldout=labels(data.heldout),
        scales=scales,
        source_shapes=[tuple(int(n) for n in im.shape[1:]) for im in data.images],
    )
