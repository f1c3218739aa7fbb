"""--encoder-weights self: the encoder pretrained on the dataset's own images, cached."""

import numpy as np
import pytest
import torch

from s2l_tools.training import pretrain
from s2l_tools.training.model import build_model
from s2l_tools.training.pretrain import PretrainSettings, cached_pretrained, pretrain_encoder

TINY = PretrainSettings(steps=2, crop=32, batch_size=2)


def blobs(n=3, size=64, seed=0):
    """Grey images of a few bright discs on a dark background, normalised."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    out = []
    for _ in range(n):
        im = np.zeros((size, size), np.float32)
        for cy, cx in rng.integers(8, size - 8, (4, 2)):
            im[(yy - cy) ** 2 + (xx - cx) ** 2 < 36] = 1.0
        out.append((im + 0.05 * rng.standard_normal(im.shape)).astype(np.float32)[None])
    return out


def test_reconstruction_is_learnt_and_weights_load(tmp_path):
    losses = []
    state = pretrain_encoder(blobs(), PretrainSettings(steps=40, crop=32, batch_size=4),
                             progress=losses.append)
    assert len(losses) == 40
    # filling in hidden blocks of discs is learnt: the error falls well below the start's
    assert np.mean(losses[-5:]) < 0.5 * np.mean(losses[:3])
    random = build_model(encoder="resnet18", in_channels=1, seed=0)
    assert set(state) == set(random.encoder.state_dict())
    path = tmp_path / "enc.pth"
    torch.save(state, path)
    loaded = build_model(encoder="resnet18", in_channels=1, weights=path, seed=0)
    w = loaded.encoder.layer4[0].conv1.weight
    assert torch.equal(w, state["layer4.0.conv1.weight"])
    assert not torch.equal(w, random.encoder.layer4[0].conv1.weight)


def test_three_channels_and_deterministic():
    rgb = [np.repeat(im, 3, axis=0) for im in blobs(2)]
    a = pretrain_encoder(rgb, TINY)
    b = pretrain_encoder(rgb, TINY)
    assert a["conv1.weight"].shape[1] == 3
    assert all(torch.equal(a[k], b[k]) for k in a)  # the same seed, the same encoder on a CPU
    with pytest.raises(ValueError, match="no images"):
        pretrain_encoder([], TINY)


def test_cache_keyed_by_images_and_settings(tmp_path, monkeypatch):
    ims = blobs(2)
    calls = []
    real = pretrain.pretrain_encoder
    monkeypatch.setattr(pretrain, "pretrain_encoder",
                        lambda *a, **k: calls.append(1) or real(*a, **k))
    monkeypatch.setenv("S2L_CACHE", str(tmp_path))
    first = cached_pretrained(ims, TINY)
    assert first.parent == tmp_path / "pretrained" and first.is_file() and len(calls) == 1
    assert cached_pretrained(ims, TINY) == first and len(calls) == 1  # from the cache
    assert list(first.parent.iterdir()) == [first]  # nothing half-written left
    other_seed = cached_pretrained(ims, PretrainSettings(steps=2, crop=32, batch_size=2, seed=1))
    other_images = cached_pretrained(blobs(2, seed=5), TINY)
    assert len({first, other_seed, other_images}) == 3 and len(calls) == 3


def test_s2l_train_encoder_weights_self(demo_train, tmp_path, monkeypatch, capsys):
    import json

    from s2l_tools.cli import train

    monkeypatch.setenv("S2L_CACHE", str(tmp_path / "cache"))
    calls = []
    real = pretrain.pretrain_encoder
    monkeypatch.setattr(pretrain, "pretrain_encoder",
                        lambda *a, **k: calls.append(a[1]) or real(*a, **k))
    tiny = ["--encoder", "resnet18", "--crop", "32", "--batch-size", "2", "--samples-per-epoch",
            "4", "--epochs", "1", "--warmup-epochs", "1", "--tile", "64", "--panel-images", "0",
            "--device", "cpu", "--encoder-weights", "self", "--pretrain-steps", "2"]
    assert train.main([str(demo_train), "--out", str(tmp_path / "a"), *tiny]) == 0
    assert "encoder: self-supervised on 3 image(s)" in capsys.readouterr().err
    # the run's own settings and seed
    assert calls == [PretrainSettings(steps=2, crop=32, batch_size=2, seed=0)]
    assert len(list((tmp_path / "cache" / "pretrained").glob("*.pth"))) == 1
    cfg = json.loads((tmp_path / "a" / "config.json").read_text())
    assert cfg["encoder_weights"] == "self" and cfg["pretrain_steps"] == 2
    # a second run on the same images takes the cached encoder
    assert train.main([str(demo_train), "--out", str(tmp_path / "b"), *tiny]) == 0
    assert len(calls) == 1
    assert train.main([str(demo_train), "--out", str(tmp_path / "c"), *tiny[:-1], "0"]) == 1
    assert "--pretrain-steps 0: must be at least 1" in capsys.readouterr().err
    # a cache that cannot be written: one line naming it, before any pretraining
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("")
    monkeypatch.setenv("S2L_CACHE", str(blocker))
    assert train.main([str(demo_train), "--out", str(tmp_path / "d"), *tiny]) == 1
    err = capsys.readouterr().err
    assert str(blocker) in err and "cannot write" in err and "Traceback" not in err
    assert len(calls) == 1
