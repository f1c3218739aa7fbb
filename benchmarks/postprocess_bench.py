"""Post-processing time per image: probability map -> instance labels (not a test; issue 17).

    nice .venv/bin/python benchmarks/postprocess_bench.py [--size 1024] [--repeats 9]
        [--maps 3] [--stages] [--save MAPS.npz | --load MAPS.npz]

    # the same maps in CellProfiler's Python (numpy 1.23, scipy 1.9, scikit-image 0.18):
    nice .venv/bin/python benchmarks/postprocess_bench.py --save /tmp/maps.npz
    PYTHONPATH=. nice .cpvenv/bin/python benchmarks/postprocess_bench.py --load /tmp/maps.npz

Maps: ``make_nuclei_image`` (150-250 nuclei at 1024², about a third in touching
clusters) turned into two kinds of foreground probability: ``image`` (the camera image
scaled so that background is 0 and the median nucleus pixel 1, clipped: noisy edges,
specks) and ``soft`` (the true foreground blurred, sigma 1.5, plus smooth noise: what a
network gives, clumps merged). For each map, ``instances_from_probability`` with the
defaults (declump="watershed") against the whole-image definition it replaces (the
implementation before issue 17 item 5: holes by ``binary_fill_holes``,
``peak_local_max(labels=...)`` looping over the objects, one watershed over the image,
``remove_small_objects``, ``relabel_sequential``),
interleaved, medians of ``--repeats``; the two results are checked equal (with
scikit-image 0.18, whose ``peak_local_max`` writes into its image, they may differ:
the difference is reported, not an error).
``--stages`` also times each step of both, on the first map. The load average is printed
with the result: on a shared machine every time moves with it.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np
from scipy import ndimage as ndi


def nuclei_maps(seed: int, size: int) -> dict[str, np.ndarray]:
    """The ``image`` and ``soft`` probability maps of one synthetic nuclei image."""
    from s2l_tools.data.demo_data import make_nuclei_image

    rng = np.random.default_rng(seed)
    scale = (size / 1024) ** 2
    n = (max(1, int(150 * scale)), max(1, int(250 * scale)))
    img, lab = make_nuclei_image(shape=(size, size), n_cells=n, rng=rng)
    img = img.astype(np.float64)
    bg = np.percentile(img[lab == 0], 50)
    fg = np.percentile(img[lab > 0], 50)
    image = np.clip((img - bg) / (fg - bg), 0, 1).astype(np.float32)
    soft = ndi.gaussian_filter((lab > 0).astype(np.float64), 1.5)
    soft += 0.15 * ndi.gaussian_filter(rng.standard_normal(soft.shape), 1.0)
    return {"image": image, "soft": np.clip(soft, 0, 1).astype(np.float32), "n": int(lab.max())}


def old_fill_holes(labels: np.ndarray) -> np.ndarray:
    """fill_holes_per_object before issue 17 item 5 (the same result): the foreground's
    holes by ``binary_fill_holes``, then each object next to one filled alone."""
    out = labels.copy()
    holes = ndi.binary_fill_holes(labels > 0) & (labels == 0)
    if not holes.any():
        return out
    near = labels[ndi.binary_dilation(holes, structure=np.ones((3, 3), bool))]
    candidates = set(np.unique(near[near > 0]).tolist())
    for i, sl in enumerate(ndi.find_objects(labels), start=1):
        if sl is None or i not in candidates:
            continue
        obj = labels[sl] == i
        new = ndi.binary_fill_holes(obj) & ~obj & (out[sl] == 0)
        if new.any():
            out[sl][new] = i
    return out


def reference(prob: np.ndarray, *, threshold=0.5, min_size=64) -> np.ndarray:
    """The whole-image definition (the implementation before issue 17 item 5)."""
    from s2l_tools.inference import postprocess as pp

    labels = pp.cc_label(prob > threshold, connectivity=2)
    labels = old_fill_holes(labels)
    md = pp._auto_min_distance(np.bincount(labels.ravel()), min_size)
    labels = pp._declump_watershed(labels, md)
    labels = pp.remove_small_objects(labels, min_size)
    return pp.relabel_sequential(labels)


def stages(prob: np.ndarray, *, threshold=0.5, min_size=64) -> dict[str, dict[str, float]]:
    """Seconds per step, before (whole image) and after (objects with >= 2 markers)."""
    from s2l_tools.inference import postprocess as pp

    t = {}

    def clock(name, fn, *a, **k):
        t0 = time.perf_counter()
        out = fn(*a, **k)
        t[name] = time.perf_counter() - t0
        return out

    labels = clock("cc_label", pp.cc_label, prob > threshold, connectivity=2)
    labels = clock("fill_holes_per_object", old_fill_holes, labels)
    areas = clock("bincount areas", np.bincount, labels.ravel())
    md = pp._auto_min_distance(areas, min_size)
    mask = labels > 0
    dist = clock("distance_transform_edt", ndi.distance_transform_edt, mask)
    smooth = clock("gaussian_filter", ndi.gaussian_filter, dist, sigma=1.0) * mask
    coords = clock("peak_local_max (per label)", pp.peak_local_max, smooth, min_distance=md,
                   labels=labels, exclude_border=False)
    peaks = np.zeros(labels.shape, bool)
    peaks[coords[:, 0], coords[:, 1]] = True
    markers = clock("cc_label (peaks)", pp.cc_label, peaks, connectivity=2)
    out = clock("watershed (whole image)", pp.watershed, -smooth, markers, mask=mask,
                connectivity=2)
    out = clock("remove_small_objects", pp.remove_small_objects, out, min_size)
    clock("relabel_sequential", pp.relabel_sequential, out)
    before = dict(t)
    t.clear()
    labels = clock("cc_label", pp.cc_label, prob > threshold, connectivity=2)
    objs = clock("find_objects", ndi.find_objects, labels)
    labels, touching = clock("_fill_holes", pp._fill_holes, labels, lambda: objs)
    areas = clock("bincount areas", np.bincount, labels.ravel())
    fg = clock("flatnonzero (object pixels)", np.flatnonzero, labels)
    dist = clock("_object_distances (EDT box by box)", pp._object_distances, labels, objs)
    smooth = clock("_smooth_at (Gaussian at object pixels)", pp._smooth_at, dist, fg)
    clock("_object_peaks", pp._object_peaks, smooth, labels, fg, areas, md, objs)
    ids, parts, sizes = clock("_split_objects (all of the above from EDT on, + floods)",
                              pp._split_objects, labels, objs, areas, md, touching)

    def relabel():
        keep = sizes >= min_size
        keep[0] = False
        new = (np.cumsum(keep) * keep).astype(np.int32)
        out = new[ids][labels]
        for sl, obj, flood in parts:
            out[sl][obj] = new[flood]
        return out

    clock("size filter + relabel (one look-up)", relabel)
    after = dict(t)
    return {"before": before, "after": after, "min_distance": md}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--repeats", type=int, default=9)
    ap.add_argument("--maps", type=int, default=3, help="synthetic nuclei images (seeds 0..)")
    ap.add_argument("--stages", action="store_true", help="time each step on the first map")
    ap.add_argument("--save", metavar="NPZ", help="only write the maps to this file")
    ap.add_argument("--load", metavar="NPZ", help="maps from --save instead of generating")
    args = ap.parse_args(argv)
    import scipy
    import skimage

    from s2l_tools.inference.postprocess import instances_from_probability

    if args.save:
        out = {}
        for seed in range(args.maps):
            maps = nuclei_maps(seed, args.size)
            out.update({f"{seed}_{k}": v for k, v in maps.items()})
        np.savez_compressed(args.save, **out)
        return 0
    saved = np.load(args.load) if args.load else None
    print(f"numpy {np.__version__}, scipy {scipy.__version__}, scikit-image "
          f"{skimage.__version__}; load average before: {os.getloadavg()}")
    rows = []
    for seed in range(args.maps):
        if saved is not None:
            maps = {k: saved[f"{seed}_{k}"] for k in ("image", "soft", "n")}
            maps["n"] = int(maps["n"])
        else:
            maps = nuclei_maps(seed, args.size)
        for kind in ("image", "soft"):
            prob = maps[kind]
            new = instances_from_probability(prob)
            old = reference(prob)
            if not np.array_equal(new, old):
                print(f"seed {seed} {kind}: results differ in {int((new != old).sum())} pixels "
                      f"({int(old.max())} -> {int(new.max())} objects)")
            t_old, t_new = [], []
            for _ in range(args.repeats):
                t0 = time.perf_counter()
                reference(prob)
                t1 = time.perf_counter()
                instances_from_probability(prob)
                t2 = time.perf_counter()
                t_old.append(t1 - t0)
                t_new.append(t2 - t1)
            row = (seed, kind, maps["n"], int(new.max()), statistics.median(t_old),
                   statistics.median(t_new))
            rows.append(row)
            print("seed %d %-5s nuclei %3d objects %3d: before %.3f s, after %.3f s" % row,
                  flush=True)
        if args.stages and seed == 0:
            for kind in ("image", "soft"):
                runs = [stages(maps[kind]) for _ in range(args.repeats)]
                print(f"stages, seed 0 {kind} (min_distance {runs[0]['min_distance']}), "
                      f"medians of {args.repeats}:")
                for part in ("before", "after"):
                    for name in runs[0][part]:
                        med = statistics.median(r[part][name] for r in runs)
                        print(f"  {part:6s} {name:56s} {med * 1000:7.1f} ms")
    before = statistics.median(r[4] for r in rows)
    after = statistics.median(r[5] for r in rows)
    print(f"median over maps: before {before:.3f} s, after {after:.3f} s "
          f"({before / after:.1f}x); load average after: {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
