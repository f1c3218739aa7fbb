"""Checks of ``s2l-train --auto-threshold``'s saved cut, shared by the training tests."""

import numpy as np
import torch

from s2l_tools.training.auto_threshold import MIN_KEPT, probability_histogram, share_threshold
from s2l_tools.training.checkpoint import load_model


def logit(p):
    return np.log(p) - np.log1p(-p)


def forest_share(data_dir, seed=0, holdout=0.1):
    """The rule's forest share, computed here from scratch (training strokes only)."""
    from s2l_tools.classic.forest import fit_forest, forest_probability
    from s2l_tools.training.data import load_training_data

    d = load_training_data(data_dir, holdout=holdout, seed=seed)
    forest = fit_forest(d.images, d.scribbles, seed=seed)
    return float(np.mean(np.concatenate([forest_probability(forest, im).ravel() >= 0.5
                                         for im in d.images])))


def check_cut(run_dir, data_dir, *, floor=0.05, share=None, interior=True):
    """The threshold in RUN's model.pt is the rule's on all its training images, recomputed
    here from the model's own predictions and the forest (``share``: the forest's share,
    when already known); returns it. ``interior``: the cut must be neither the floor nor
    the last bin (a model whose maps are all but 0 / 1 would pass any pass)."""
    from s2l_tools.device import inference_dtype
    from s2l_tools.inference.predict import predict_probability
    from s2l_tools.training.data import load_training_data

    model, meta = load_model(run_dir / "model.pt")
    share = forest_share(data_dir) if share is None else share
    amp = inference_dtype(True, torch.device("cpu"))  # as the run's passes
    probs = np.concatenate([predict_probability(model, im, meta, device="cpu", amp=amp,
                                                batch_size=1).ravel()
                            for im in load_training_data(data_dir).images])
    expected = share_threshold(probability_histogram(probs), share, floor, min_kept=MIN_KEPT)
    if interior:  # the check is about the share, not the floor or the saturated end
        assert floor < expected < 0.999, expected
    assert abs(logit(meta.threshold) - logit(expected)) <= 0.0021, (meta.threshold, expected)
    return meta.threshold
