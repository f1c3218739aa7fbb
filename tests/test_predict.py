from __future__ import annotations

import csv

import numpy as np
import pytest
import tifffile
import torch
from scipy import ndimage as ndi

from s2l_tools.training.checkpoint import ModelMeta, save_model
from s2l_tools.errors import S2LError
from s2l_tools.io.images import read_image
from s2l_tools.training.model import build_model
from s2l_tools.cli.predict import main
from s2l_tools.inference.predict import predict_image, predict_probability, select_device


def _blobs(rng: np.random.Generator, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """A smooth-blob image (1, h, w) float32 and its foreground (h, w) int64."""
    field = ndi.gaussian_filter(rng.standard_normal((h, w)), 4)
    fg = field > 0.8 * field.std()
    img = fg + 0.1 * rng.standard_normal((h, w))
    return img.astype(np.float32)[None], fg.astype(np.int64)


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    """A tiny random U-Net (its output is saturated but fine for plumbing)."""
    return build_model(encoder="resnet18", in_channels=1, seed=0).eval()


@pytest.fixture(scope="module")
def trained_model() -> torch.nn.Module:
    """A tiny U-Net trained a few steps to find bright blobs (a local task).

    A random U-Net's saturated output depends on its whole receptive field,
    so its tiled and whole-image predictions differ by up to 0.9 (mean 0.2);
    a model that has learnt something local is what tiling is meant for.
    """
    net = build_model(encoder="resnet18", in_channels=1, seed=0)
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    rng = np.random.default_rng(1)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # 5x faster than 2 threads on a busy 2-core machine
    try:
        net.train()
        for _ in range(24):
            xs, ys = zip(*[_blobs(rng, 64, 64) for _ in range(4)])
            loss = torch.nn.functional.cross_entropy(
                net(torch.from_numpy(np.stack(xs))), torch.from_numpy(np.stack(ys))
            )
            opt.zero_grad()
            loss.backward()
            opt.step()
    finally:
        torch.set_num_threads(threads)
    return net.eval()


@pytest.fixture(scope="module")
def meta() -> ModelMeta:
    return ModelMeta(encoder="resnet18", in_channels=1, tile=64, overlap=16, min_size=4,
                     threshold=0.5)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, model, meta):
    run = tmp_path_factory.mktemp("run")
    save_model(run / "model.pt", model.state_dict(), meta)
    return run


@pytest.fixture
def images(tmp_path):
    """Two odd-sized uint16 TIFFs with blobs."""
    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(7)
    for name, (h, w) in {"a": (70, 93), "b": (130, 64)}.items():
        img, _ = _blobs(rng, h, w)
        tifffile.imwrite(folder / f"{name}.tif", (1000 + 2000 * img[0]).clip(0, 65535)
                         .astype(np.uint16))
    return folder


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ")
    assert "\n" not in err
    return err


def _forward(model, x: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        return torch.softmax(model(torch.from_numpy(x[None])), 1)[0, 1].numpy()


# --------------------------------------------------------------------------- library
def test_select_device():
    assert select_device("cpu") == torch.device("cpu")
    assert select_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(S2LError, match="unknown device"):
        select_device("tpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is available")
def test_select_cuda_without_gpu():
    with pytest.raises(S2LError, match="--device cpu"):
        select_device("cuda")


def test_one_tile_equals_direct_forward(model, meta):
    x, _ = _blobs(np.random.default_rng(3), 64, 64)
    no_overlap = ModelMeta(**{**meta.__dict__, "overlap": 0})
    prob = predict_probability(model, x, no_overlap, device="cpu")
    assert prob.shape == (64, 64) and prob.dtype == np.float32
    np.testing.assert_allclose(prob, _forward(model, x), atol=1e-5)


def test_one_tile_equals_forward_on_end_padded_image(model, meta):
    # 48 fits in one 64 tile: padded to 64 at its end by reflection, one forward pass
    x, _ = _blobs(np.random.default_rng(4), 48, 48)
    prob = predict_probability(model, x, meta, device="cpu")
    padded = np.pad(x, ((0, 0), (0, 16), (0, 16)), mode="reflect")
    np.testing.assert_allclose(prob, _forward(model, padded)[:48, :48], atol=1e-5)


@pytest.mark.slow
def test_tiled_agrees_with_whole_image(trained_model, meta):
    model = trained_model
    x, fg = _blobs(np.random.default_rng(5), 160, 224)
    full = _forward(model, x)
    tiled_meta = ModelMeta(**{**meta.__dict__, "tile": 96, "overlap": 32})
    tiled = predict_probability(model, x, tiled_meta, device="cpu", batch_size=3)
    inner = (slice(16, -16), slice(16, -16))  # reflection vs zero padding at the border
    diff = np.abs(tiled - full)[inner]
    # measured: mean 0.005, 99th percentile 0.1, 0.5 % of decisions flip (decoder scSE attention
    # pools over each tile, so tiles never match exactly)
    assert diff.mean() < 0.02
    assert np.percentile(diff, 99) < 0.25
    assert np.mean((tiled > 0.5)[inner] != (full > 0.5)[inner]) < 0.02
    # and the tiles do not hurt the segmentation
    assert np.mean((tiled > 0.5) == fg) > np.mean((full > 0.5) == fg) - 0.01


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("amp", [None, True])
def test_cuda_matches_cpu(model, meta, amp):
    import copy

    x, _ = _blobs(np.random.default_rng(6), 100, 130)
    want = predict_probability(copy.deepcopy(model), x, meta, device="cpu")
    got = predict_probability(copy.deepcopy(model), x, meta, device=select_device("cuda"),
                              amp=amp)
    # the random model's logits are large: compare decisions, and values loosely
    assert np.mean(np.abs(got - want)) < (1e-4 if amp is None else 2e-2)
    assert np.mean((got > 0.5) != (want > 0.5)) < (1e-3 if amp is None else 2e-2)


def test_predict_image_accepts_a_numpy_function(meta):
    def fn(batch):  # pointwise: foreground probability = clip(image)
        p = np.clip(batch[:, :1], 0, 1)
        return np.concatenate([1 - p, p], axis=1)

    x = np.zeros((1, 50, 70), np.float32)
    x[0, 10:30, 20:45] = 0.9
    labels, prob = predict_image(fn, x, meta, min_size=10)
    np.testing.assert_allclose(prob, x[0], atol=1e-6)
    assert labels.dtype == np.int32 and labels.max() == 1
    assert (labels == 1).sum() == 20 * 25


def test_predict_probability_checks_channels(model, meta):
    with pytest.raises(ValueError, match="3 channel"):
        predict_probability(model, np.zeros((3, 64, 64), np.float32), meta, device="cpu")


# --------------------------------------------------------------------------- CLI
def test_cli_folder(run_dir, images, tmp_path, capsys, model, meta):
    import roifile

    out = tmp_path / "pred"
    rc = main([str(run_dir), str(images), "--out", str(out), "--device", "cpu", "--prob",
               "--rois"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert "2 images" in captured.out and "objects" in captured.out
    assert "4 flips averaged" in captured.out
    for stem, shape in {"a": (70, 93), "b": (130, 64)}.items():
        labels = tifffile.imread(out / f"{stem}.tif")
        assert labels.shape == shape and labels.dtype == np.uint16
        prob = tifffile.imread(out / f"{stem}_prob.tif")
        assert prob.shape == shape and prob.dtype == np.float32
        assert 0 <= prob.min() and prob.max() <= 1
        if stem == "a":  # the CLI is the library: same labels from the same image
            want, want_prob = predict_image(model, read_image(images / "a.tif"), meta,
                                            device="cpu", flips=True)
            np.testing.assert_array_equal(labels, want)
            np.testing.assert_allclose(prob, want_prob, atol=1e-6)
        assert labels.max() > 0  # the blobs are found
        rois = roifile.roiread(out / f"{stem}_rois.zip")
        rois = rois if isinstance(rois, list) else [rois]
        assert len(rois) == labels.max()
        # the table's row of this image: its labels' count and share; no record: no flag
        row = next(r for r in csv.DictReader((out / "predictions.csv").open())
                   if r["image"] == f"{stem}.tif")
        assert row["labels"] == f"{stem}.tif" and int(row["objects"]) == labels.max()
        assert float(row["foreground_share"]) == pytest.approx(np.mean(labels > 0), abs=1e-6)
        assert row["unusual"] == "" and row["error"] == ""
    assert sorted(p.name for p in images.iterdir()) == ["a.tif", "b.tif"]


def test_cli_no_flips_is_one_pass(run_dir, images, tmp_path, capsys, model, meta):
    """--no-flips: one network pass per tile, the library's default; the CLI's default
    averages the four flips, which changes the map of a model that is not symmetric."""
    probs = {}
    for flag in ("--no-flips", None):
        out = tmp_path / str(flag)
        rc = main([str(run_dir), str(images / "a.tif"), "--out", str(out), "--device", "cpu",
                   "--prob", *([flag] if flag else [])])
        captured = capsys.readouterr()
        assert rc == 0, captured.err
        assert ("4 flips averaged" in captured.out) == (flag is None)
        probs[flag] = tifffile.imread(out / "a_prob.tif")
    image = read_image(images / "a.tif")
    for flips, key in ((False, "--no-flips"), (True, None)):
        want = predict_probability(model, image, meta, device="cpu", flips=flips)
        np.testing.assert_allclose(probs[key], want, atol=1e-6)
    assert np.abs(probs["--no-flips"] - probs[None]).max() > 1e-3


def test_cli_gains_average_the_image_brightened(run_dir, images, tmp_path, capsys, model,
                                                meta):
    """--gains 1,2: the map is the mean of the image's and the image x 2's (docs/benchmarks.md,
    "Prediction at several gains"); the default is the image alone."""
    out = tmp_path / "gains"
    rc = main([str(run_dir), str(images / "a.tif"), "--out", str(out), "--device", "cpu",
               "--prob", "--no-flips", "--gains", "1,2"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert "gains 1,2 averaged" in captured.out
    image = read_image(images / "a.tif")
    one = predict_probability(model, image, meta, device="cpu")
    two = predict_probability(model, image * 2, meta, device="cpu")
    got = tifffile.imread(out / "a_prob.tif")
    np.testing.assert_allclose(got, (one + two) / 2, atol=1e-6)
    assert np.abs(got - one).max() > 1e-3
    assert np.array_equal(predict_probability(model, image, meta, device="cpu", gains=(1,)), one)
    with pytest.raises(ValueError, match="gains 1, 0: each must be a number above 0"):
        predict_probability(model, image, meta, gains=(1, 0))


@pytest.mark.parametrize("value", ["1,0", "1,x", "", "nan"])
def test_cli_bad_gains_is_one_line(run_dir, images, tmp_path, capsys, value):
    assert main([str(run_dir), str(images), "--out", str(tmp_path / "o"), "--gains",
                 value]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "--gains" in err and "above 0" in err, err
    assert not (tmp_path / "o").exists()


def test_cli_single_file_and_options(run_dir, images, tmp_path, capsys):
    out = tmp_path / "pred"
    rc = main([str(run_dir / "model.pt"), str(images / "b.tif"), "--out", str(out),
               "--device", "cpu", "--threshold", "0.7", "--min-size", "0", "--no-fill-holes",
               "--watershed", "--tile", "32", "--overlap", "8", "--channel", "0"])
    assert rc == 0, capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["b.tif", "predictions.csv"]
    assert tifffile.imread(out / "b.tif").shape == (130, 64)


def test_cli_names_images_called_far_more_cell_than_the_training_images(
        run_dir, model, images, tmp_path, capsys):
    """An image whose mask covers more of it than unusual_share allows (1.5x the most a
    training image had, and over 40 %) is named in one warning line, and the run still
    succeeds; a model that did not measure its training images (no --auto-threshold, older
    runs) never warns."""
    from s2l_tools.inference.onnx import meta_problem
    from s2l_tools.training.checkpoint import load_model

    measured = tmp_path / "measured"
    measured.mkdir()
    save_model(measured / "model.pt", model.state_dict(),
               ModelMeta(encoder="resnet18", in_channels=1, tile=64, overlap=16, min_size=4,
                         train_share_max=0.3))
    assert load_model(measured / "model.pt")[1].train_share_max == 0.3
    for run, threshold in ((measured, "0"), (measured, "0.999999"), (run_dir, "0")):
        out = tmp_path / f"pred_{run.name}_{threshold}"
        rc = main([str(run), str(images), "--out", str(out), "--device", "cpu", "--no-flips",
                   "--threshold", threshold, "--min-size", "0"])
        err = capsys.readouterr().err
        assert rc == 0, err
        shares = {}
        for name in ("a.tif", "b.tif"):
            labels = tifffile.imread(out / name)
            shares[name] = np.count_nonzero(labels) / labels.size
        named = [n for n, share in shares.items() if run == measured and share > 0.45]
        if threshold == "0":  # every pixel called cell
            assert min(shares.values()) == 1.0
        table = {r["image"]: r for r in csv.DictReader((out / "predictions.csv").open())}
        assert {n: table[n]["unusual"] for n in shares} == {
            n: ("" if run != measured else str(int(n in named))) for n in shares}
        lines = [line for line in err.splitlines() if "far more cell than" in line]
        if named:
            assert len(lines) == 1, err
            assert f"{len(named)} image" in lines[0] and "the most on a training image 30 %" in lines[0]
            assert all(f"{n} {100 * shares[n]:.0f} %" in lines[0] for n in named)
            assert "--from RUN" in lines[0]
        else:
            assert not lines, err
    assert meta_problem({"train_share_max": 1.5}) == "train_share_max is 1.5, not a share in [0, 1]"
    assert meta_problem({"train_share_max": None}) is None


def test_cli_names_images_where_the_network_outlined_more_cells_than_it_called(
        run_dir, images, meta, tmp_path, capsys):
    """An image where the network sees cells (p over 0.1) it does not call (under the
    threshold) is named in one warning line and flagged in predictions.csv; the run still
    succeeds. Above every probability nothing is called, so the blobs the network sees are
    named; at 0 everything is called, so nothing is."""
    from s2l_tools.inference.postprocess import under_called

    for threshold in ("0.999999", "0", None):
        out = tmp_path / f"pred_{threshold}"
        rc = main([str(run_dir), str(images), "--out", str(out), "--device", "cpu", "--prob",
                   *(["--threshold", threshold] if threshold else [])])
        err = capsys.readouterr().err
        assert rc == 0, err
        cut = float(threshold) if threshold else meta.threshold
        named = [n for n in ("a.tif", "b.tif")
                 if under_called(tifffile.imread(out / n.replace(".tif", "_prob.tif")), cut)]
        if threshold == "0.999999":
            assert named == ["a.tif", "b.tif"]
        elif threshold == "0":
            assert named == []
        table = {r["image"]: r for r in csv.DictReader((out / "predictions.csv").open())}
        assert {n: table[n]["under_called"] for n in table} == {
            n: str(int(n in named)) for n in ("a.tif", "b.tif")}
        lines = [line for line in err.splitlines() if "outlined far more cells" in line]
        if named:
            assert len(lines) == 1, err
            assert lines[0].startswith(f"s2l-predict: warning: {len(named)} image")
            assert all(n in lines[0] for n in named) and "--from RUN" in lines[0]
            assert lines[0].endswith("predict again with --gains 1,1.5,2")
        else:
            assert not lines, err
    # predicted with gains already: the warning does not suggest them again
    assert main([str(run_dir), str(images), "--out", str(tmp_path / "g"), "--device", "cpu",
                 "--threshold", "0.999999", "--gains", "1,2", "--no-flips"]) == 0
    lines = [line for line in capsys.readouterr().err.splitlines()
             if "outlined far more cells" in line]
    assert len(lines) == 1 and "--gains" not in lines[0] and lines[0].endswith("--from RUN)")


def test_cli_refuses_to_overwrite_inputs(run_dir, images, capsys):
    before = (images / "a.tif").read_bytes()
    rc = main([str(run_dir), str(images), "--out", str(images), "--device", "cpu"])
    assert rc == 1
    err = _one_line_error(capsys)
    assert "a.tif" in err and "overwrite" in err
    assert (images / "a.tif").read_bytes() == before
    assert sorted(p.name for p in images.iterdir()) == ["a.tif", "b.tif"]


def test_cli_channel_mismatch(run_dir, tmp_path, capsys):
    import imageio.v3 as iio

    folder = tmp_path / "rgb"
    folder.mkdir()
    rgb = np.random.default_rng(0).integers(0, 255, (40, 50, 3), dtype=np.uint8)
    iio.imwrite(folder / "rgb.png", rgb)
    out = tmp_path / "pred"
    rc = main([str(run_dir), str(folder), "--out", str(out), "--device", "cpu"])
    assert rc == 1
    err = _one_line_error(capsys)
    assert "rgb.png" in err and "3 channel" in err and "trained on 1" in err
    assert "--channel" in err
    assert not out.exists() or not any(out.iterdir())


@pytest.mark.parametrize("content", ["random", "tensor"])
def test_cli_model_not_ours(images, tmp_path, capsys, content):
    bad = tmp_path / "model.pt"
    if content == "random":
        bad.write_bytes(np.random.default_rng(0).bytes(1000))
    else:
        torch.save(torch.zeros(3), bad)
    rc = main([str(bad), str(images), "--out", str(tmp_path / "pred"), "--device", "cpu"])
    assert rc == 1
    err = _one_line_error(capsys)
    assert str(bad) in err and "not an s2l-tools model" in err
    assert not (tmp_path / "pred").exists()


def test_cli_no_images(run_dir, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    rc = main([str(run_dir), str(empty), "--out", str(tmp_path / "pred")])
    assert rc == 1
    assert "no images" in _one_line_error(capsys)


@pytest.mark.parametrize("flag", [["--tile", "50"], ["--overlap", "64", "--tile", "64"],
                                  ["--threshold", "1.5"], ["--min-size", "-1"]])
def test_cli_bad_options(run_dir, images, tmp_path, capsys, flag):
    rc = main([str(run_dir), str(images), "--out", str(tmp_path / "pred"), "--device", "cpu",
               *flag])
    assert rc == 1
    assert flag[0] in _one_line_error(capsys)
    assert not (tmp_path / "pred").exists()


def test_cli_onnx_model_matches_torch(run_dir, images, tmp_path, capsys, model, meta):
    from s2l_tools.inference.export import export_onnx

    onnx_path = tmp_path / "model.onnx"
    export_onnx(model, meta, onnx_path, check=False)
    rc = main([str(onnx_path), str(images / "a.tif"), "--out", str(tmp_path / "onnx"),
               "--device", "cpu", "--prob"])
    assert rc == 0, capsys.readouterr().err
    want_labels, want_prob = predict_image(model, read_image(images / "a.tif"), meta,
                                           device="cpu", flips=True)
    prob = tifffile.imread(tmp_path / "onnx" / "a_prob.tif")
    labels = tifffile.imread(tmp_path / "onnx" / "a.tif")
    np.testing.assert_allclose(prob, want_prob, atol=1e-3)
    assert np.mean((labels > 0) == (want_labels > 0)) > 0.999


def test_cli_onnx_uses_the_shared_session_loader(model, meta, images, tmp_path, capsys,
                                                   monkeypatch):
    """The ONNX path loads with onnx_inference.load_session: S2L_ORT_THREADS applies, and
    its errors are one line."""
    from s2l_tools.inference.export import export_onnx

    onnx_path = tmp_path / "model.onnx"
    export_onnx(model, meta, onnx_path, check=False)
    monkeypatch.setenv("S2L_ORT_THREADS", "many")
    rc = main([str(onnx_path), str(images / "a.tif"), "--out", str(tmp_path / "pred"),
               "--device", "cpu"])
    assert rc == 1
    assert "S2L_ORT_THREADS=many: must be a whole number" in _one_line_error(capsys)
    assert not (tmp_path / "pred").exists()


def test_cli_onnx_not_ours(images, tmp_path, capsys):
    bad = tmp_path / "model.onnx"
    bad.write_bytes(np.random.default_rng(0).bytes(300))
    rc = main([str(bad), str(images), "--out", str(tmp_path / "pred"), "--device", "cpu"])
    assert rc == 1
    assert "not an ONNX model" in _one_line_error(capsys)


# --------------------------------------------------------------------------- outputs and bad images
def test_cli_refuses_to_replace_foreign_files(run_dir, images, tmp_path, capsys):
    """s2l-predict --out silently replaced a folder of ground-truth masks of the same names."""
    out = tmp_path / "masks"
    out.mkdir()
    truth = np.arange(70 * 93, dtype=np.uint16).reshape(70, 93)
    tifffile.imwrite(out / "a.tif", truth)
    rc = main([str(run_dir), str(images), "--out", str(out), "--device", "cpu"])
    assert rc == 1
    err = _one_line_error(capsys)
    assert str(out / "a.tif") in err and "not written by s2l-predict" in err
    assert "--overwrite" in err
    assert sorted(p.name for p in out.iterdir()) == ["a.tif"]  # nothing written
    np.testing.assert_array_equal(tifffile.imread(out / "a.tif"), truth)
    # a foreign ROI set is refused too
    (out / "a.tif").unlink()
    import zipfile

    with zipfile.ZipFile(out / "b_rois.zip", "w") as zf:
        zf.writestr("my-cell.roi", b"x")
    rc = main([str(run_dir), str(images), "--out", str(out), "--device", "cpu", "--rois"])
    assert rc == 1 and "b_rois.zip: exists and was not written" in _one_line_error(capsys)
    # --overwrite replaces them
    rc = main([str(run_dir), str(images), "--out", str(out), "--device", "cpu", "--rois",
               "--overwrite"])
    assert rc == 0, capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["a.tif", "a_rois.zip", "b.tif",
                                                     "b_rois.zip", "predictions.csv"]


def test_cli_table_is_never_someone_elses(run_dir, images, tmp_path, capsys):
    """OUT/predictions.csv of the user's own (not our header) is refused, nothing written;
    --overwrite replaces it; our own table is replaced by the next run's."""
    out = tmp_path / "pred"
    out.mkdir()
    (out / "predictions.csv").write_text("my,own\n1,2\n")
    rc = main([str(run_dir), str(images), "--out", str(out), "--device", "cpu"])
    assert rc == 1
    err = _one_line_error(capsys)
    assert "predictions.csv: exists and was not written by s2l-predict" in err
    assert sorted(p.name for p in out.iterdir()) == ["predictions.csv"]
    assert (out / "predictions.csv").read_text() == "my,own\n1,2\n"
    for extra in (["--overwrite"], []):
        rc = main([str(run_dir), str(images), "--out", str(out), "--device", "cpu", *extra])
        assert rc == 0, capsys.readouterr().err
        rows = list(csv.DictReader((out / "predictions.csv").open()))
        assert [r["image"] for r in rows] == ["a.tif", "b.tif"]
    # a folder in the table's way: one line naming it, nothing written
    other = tmp_path / "other"
    (other / "predictions.csv").mkdir(parents=True)
    rc = main([str(run_dir), str(images), "--out", str(other), "--device", "cpu"])
    assert rc == 1
    err = _one_line_error(capsys)
    assert str(other / "predictions.csv") in err and "a folder is in the way" in err
    assert sorted(p.name for p in other.iterdir()) == ["predictions.csv"]


def test_cli_replaces_its_own_results(run_dir, images, tmp_path, capsys):
    out = tmp_path / "pred"
    for _ in range(2):
        rc = main([str(run_dir), str(images), "--out", str(out), "--device", "cpu", "--prob",
                   "--rois"])
        assert rc == 0, capsys.readouterr().err
    assert len(list(out.iterdir())) == 7  # 3 per image and the table


def test_cli_goes_on_past_bad_images_and_lists_them(run_dir, images, tmp_path, capsys):
    """A folder with a bad image stopped half-way with no summary."""
    (images / "0_empty.tif").write_bytes(b"")
    (images / "c_broken.tif").write_bytes(b"II*\x00" + bytes(40))
    out = tmp_path / "pred"
    rc = main([str(run_dir), str(images), "--out", str(out), "--device", "cpu"])
    assert rc == 1
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert lines[-1].startswith("error: 2 of 4 images skipped (0_empty.tif, c_broken.tif;")
    assert [ln.split(":")[0] for ln in lines[:-1]] == ["skipped", "skipped"]
    assert "0_empty.tif: the file is empty" in captured.err
    assert "2 images" in captured.out
    assert sorted(p.name for p in out.iterdir()) == ["a.tif", "b.tif", "predictions.csv"]
    # the table: a row per image, the skipped ones with their reason
    rows = list(csv.DictReader((out / "predictions.csv").open()))
    assert [r["image"] for r in rows] == ["0_empty.tif", "a.tif", "b.tif", "c_broken.tif"]
    assert "the file is empty" in rows[0]["error"] and rows[0]["objects"] == ""
    assert rows[3]["error"] and not rows[1]["error"] and rows[1]["labels"] == "a.tif"


def test_cli_one_bad_image_of_several_is_one_line(run_dir, images, tmp_path, capsys):
    (images / "z.tif").write_bytes(b"")
    out = tmp_path / "pred"
    rc = main([str(run_dir), str(images), "--out", str(out), "--device", "cpu"])
    assert rc == 1
    err = _one_line_error(capsys)
    assert "z.tif: the file is empty" in err and "the other 2 image(s) are segmented" in err
    assert sorted(p.name for p in out.iterdir()) == ["a.tif", "b.tif", "predictions.csv"]


def test_cli_help_says_what_happens_to_bad_images(capsys):
    assert main(["--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "skipped" in text and "exit status 1" in text and "--overwrite" in text


# --------------------------------------------------------------------------- damaged ONNX metadata
@pytest.fixture(scope="module")
def exported(model, meta, tmp_path_factory):
    from s2l_tools.inference.export import export_onnx

    return export_onnx(model, meta, tmp_path_factory.mktemp("onnx") / "model.onnx",
                       check=False)


def _onnx_with(exported, path, *, meta_changes=None, props=None):
    """A copy of ``exported`` with its s2l.meta JSON (``meta_changes``) or other props changed."""
    import json

    import onnx

    from s2l_tools.inference.onnx import clear_cache

    proto = onnx.load(str(exported))
    for entry in proto.metadata_props:
        if entry.key == "s2l.meta" and meta_changes:
            d = json.loads(entry.value)
            d.update(meta_changes)
            entry.value = json.dumps(d)
        if props and entry.key in props:
            entry.value = props[entry.key]
    onnx.save(proto, str(path))
    clear_cache()
    return path


@pytest.mark.parametrize("changes, props, expect", [
    ({"classes": 3}, None, "the graph's output has 2 channel(s), the metadata says classes 3"),
    ({"in_channels": 2}, None, "the graph's input has 1 channel(s), the metadata says "
                               "in_channels 2"),
    ({"tile": "512"}, None, 'tile is "512", not a whole number'),
    ({"tile": 100}, None, "tile 100 is not a multiple of 32"),
    ({"normalization": [1, 99]}, None, "normalization is [1, 99], not an object"),
    ({"normalization": {"method": "percentile", "low": 99, "high": 1}}, None,
     "normalization percentiles 99, 1"),
    ({"threshold": "high"}, None, 'threshold is "high"'),
    ({"threshold": 1.0}, None, "threshold is 1.0: must be in [0, 1)"),
    ({"min_size": -3}, None, "min_size is -3"),
    (None, {"s2l.input": "pixels"}, "the graph has no input 'pixels'"),
    (None, {"s2l.output": ""}, "s2l.output is empty"),
])
def test_cli_onnx_metadata_disagreeing_with_the_graph(exported, images, tmp_path, capsys,
                                                       changes, props, expect):
    """Such files gave empty segmentations with exit 0, or internal errors."""
    path = _onnx_with(exported, tmp_path / "model.onnx", meta_changes=changes, props=props)
    rc = main([str(path), str(images / "a.tif"), "--out", str(tmp_path / "pred"),
               "--device", "cpu"])
    err = _one_line_error(capsys)
    assert rc == 1, err
    assert str(path) in err and expect in err and "s2l-export" in err
    assert not (tmp_path / "pred").exists()
