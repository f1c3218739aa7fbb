"""The small demo datasets the training tests share."""

from __future__ import annotations


def scribbled_demo(tmp_path_factory, *, n_train: int = 3, n_val: int = 0, seed: int = 3):
    """A demo dataset of 64 x 64 images (ROOT/train with its ROI scribbles converted, and
    ROOT/val when ``n_val``): the small training data of the tests; returns ROOT."""
    from s2l_tools.cli.scribbles import main as scribbles_main
    from s2l_tools.data.demo_data import make_demo_dataset

    root = tmp_path_factory.mktemp("ds")
    make_demo_dataset(root, n_train=n_train, n_val=n_val, shape=(64, 64), seed=seed)
    assert scribbles_main([str(root / "train")]) == 0
    return root
