"""Tests of the CellProfiler path: s2l_tools.inference.onnx, s2l-cellprofiler and
the RunScribble2Label module in real headless CellProfiler 4.2.8.1.

The fast tests need only this venv. The ``cellprofiler`` tests need the
CellProfiler venv built by ``scripts/build_cellprofiler_venv.sh`` (``make test``
builds it; ``$CP_VENV``, default ``.cpvenv``) and are skipped without it.
"""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from scipy import ndimage as ndi

from s2l_tools.cli.cellprofiler import main as cp_main
from s2l_tools.interop import cellprofiler as s2l_cp
from s2l_tools.inference import onnx as oi
from s2l_tools.training.checkpoint import ModelMeta, save_model
from s2l_tools.inference.export import export_onnx
from s2l_tools.training.model import build_model
from s2l_tools.cli.predict import main as predict_main
from s2l_tools.inference.predict import predict_image

ROOT = Path(__file__).resolve().parents[1]
CP_VENV = Path(os.environ.get("CP_VENV", ROOT / ".cpvenv"))
CP_PYTHON = CP_VENV / "bin" / "python"
CP_READY = (CP_VENV / ".s2l-cp-ok").is_file()
needs_cellprofiler = pytest.mark.skipif(
    not CP_READY,
    reason=f"no CellProfiler venv at {CP_VENV} (build it with "
    "scripts/build_cellprofiler_venv.sh; make test does)",
)
CP_TIMEOUT = 300  # seconds for one CellProfiler run (about 6 s here)
THRESHOLD, MIN_SIZE = 0.5, 8
#: the largest share of a training image the test model "called cell" (as s2l-train
#: --auto-threshold records it): images whose masks cover over 40 % are unusual
TRAIN_SHARE_MAX = 0.2


def _blobs(rng: np.random.Generator, h: int, w: int,
           level: float = 0.8) -> tuple[np.ndarray, np.ndarray]:
    """Smooth bright blobs (h, w) float32 on a noisy background, and their mask (~20 % of
    the pixels at the default ``level``; ~70 % at -0.3)."""
    field = ndi.gaussian_filter(rng.standard_normal((h, w)), 4)
    fg = field > level * field.std()
    return (fg + 0.1 * rng.standard_normal((h, w))).astype(np.float32), fg


@pytest.fixture(scope="module")
def model_files(tmp_path_factory) -> tuple[Path, Path]:
    """(model.pt, model.onnx) of a tiny U-Net trained a few steps to find blobs.

    An untrained U-Net finds arbitrary objects; a few steps make it find the
    blobs, so that object counts are a meaningful comparison.
    """
    net = build_model(encoder="resnet18", in_channels=1, seed=0)
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    rng = np.random.default_rng(1)
    net.train()
    for _ in range(20):
        xs, ys = zip(*[_blobs(rng, 64, 64) for _ in range(4)])
        x = torch.from_numpy(np.stack(xs)[:, None])
        y = torch.from_numpy(np.stack(ys).astype(np.int64))
        loss = torch.nn.functional.cross_entropy(net(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    net.eval()
    meta = ModelMeta(encoder="resnet18", in_channels=1, tile=64, overlap=16,
                     threshold=THRESHOLD, min_size=MIN_SIZE, train_share_max=TRAIN_SHARE_MAX)
    folder = tmp_path_factory.mktemp("model")
    save_model(folder / "model.pt", net.state_dict(), meta)
    export_onnx(net, meta, folder / "model.onnx", check=False)
    return folder / "model.pt", folder / "model.onnx"


@pytest.fixture(scope="module")
def scaled_model_files(model_files, tmp_path_factory) -> tuple[Path, Path]:
    """The same network with a ``diameter`` in its metadata (``s2l-train --diameter``):
    both paths resize each image by the scale a first pass finds (the blobs are ~10 px
    across, so about 2x). Trained without ``--auto-threshold``: no ``train_share_max``."""
    from dataclasses import replace

    from s2l_tools.training.checkpoint import load_model

    net, meta = load_model(model_files[0])
    meta = replace(meta, diameter=20.0, train_share_max=None)
    folder = tmp_path_factory.mktemp("scaled_model")
    save_model(folder / "model.pt", net.state_dict(), meta)
    export_onnx(net, meta, folder / "model.onnx", check=False)
    return folder / "model.pt", folder / "model.onnx"


@pytest.fixture(scope="module")
def onnx_path(model_files) -> Path:
    return model_files[1]


@pytest.fixture(scope="module")
def session(onnx_path):
    return oi.load_session(onnx_path)


@pytest.fixture
def foreign_onnx(tmp_path) -> Path:
    """A valid ONNX model that s2l-export did not write (no s2l metadata)."""
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g", [x], [y])
    path = tmp_path / "foreign.onnx"
    onnx.save(helper.make_model(graph), str(path))
    return path


def _images(folder: Path, n: int = 3, crowded: int = 0) -> list[Path]:
    """``n`` 96x128 uint16 TIFFs of blobs, then ``crowded`` ones of blobs covering ~70 %."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(7)
    paths = []
    for i in range(n + crowded):
        img, _ = _blobs(rng, 96, 128, 0.8 if i < n else -0.3)
        path = folder / f"img{i}.tif"
        tifffile.imwrite(path, (1000 + 2000 * img).clip(0, 65535).astype(np.uint16))
        paths.append(path)
    return paths


# --------------------------------------------------------------------------- onnx_inference
def test_read_meta_is_the_exported_meta(onnx_path):
    from s2l_tools.inference.export import read_onnx_meta

    meta = oi.read_meta(onnx_path)
    assert meta.pop("input") == "image" and meta.pop("output") == "probability"
    assert meta == read_onnx_meta(onnx_path)
    assert meta["tile"] == 64 and meta["min_size"] == MIN_SIZE


def test_missing_model_file(tmp_path):
    with pytest.raises(ValueError, match=r"missing\.onnx: no such model file; give the \.onnx"):
        oi.load_session(tmp_path / "missing.onnx")


@pytest.mark.parametrize("content", [b"", b"not a model at all\n", bytes(range(256)) * 4])
def test_not_onnx_file(tmp_path, content):
    path = tmp_path / "junk.onnx"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=r"junk\.onnx: not an ONNX model .*s2l-export"):
        oi.load_session(path)


def test_tiff_is_not_onnx(tmp_path):
    path = tmp_path / "image.tif"
    tifffile.imwrite(path, np.zeros((8, 8), np.uint16))
    with pytest.raises(ValueError, match=r"image\.tif: not an ONNX model"):
        oi.read_meta(path)


def test_foreign_onnx(foreign_onnx):
    msg = r"foreign\.onnx: an ONNX model without s2l-tools metadata .*s2l-export RUN --out"
    with pytest.raises(ValueError, match=msg):
        oi.load_session(foreign_onnx)
    with pytest.raises(ValueError, match=msg):
        oi.read_meta(foreign_onnx)


def test_channel_mismatch(session):
    with pytest.raises(ValueError, match=r"image has 3 channel\(s\), the model takes 1"):
        oi.segment(session, np.zeros((3, 64, 64), np.float32))


@pytest.mark.parametrize("kwargs, match", [
    ({"threshold": 1.0}, "threshold 1: must be in"),
    ({"min_size": -1}, "min_size -1: must be 0 or more"),
    ({"tile": 48}, "tile size 48: must be a positive multiple of 32"),
    ({"declump": "shape"}, "declump must be one of"),
    ({"gains": (1, 0)}, "gains 1, 0: each must be a number above 0"),
])
def test_bad_options(session, kwargs, match):
    with pytest.raises(ValueError, match=match):
        oi.segment(session, np.zeros((64, 64), np.float32), **kwargs)


def test_segment_shapes_and_scale_invariance(session):
    img, _ = _blobs(np.random.default_rng(3), 70, 93)  # odd size: padded and cropped
    labels, prob = oi.segment(session, img)
    assert labels.shape == prob.shape == (70, 93)
    assert labels.dtype == np.int32 and prob.dtype == np.float32
    assert 0.0 <= prob.min() and prob.max() <= 1.0
    assert labels.max() >= 1
    assert np.array_equal(np.unique(labels), np.arange(labels.max() + 1))
    # (1, H, W) is the same; CellProfiler's 0..1 scaling changes nothing
    labels2, prob2 = oi.segment(session, (img[None] * 1e-3 + 0.25).astype(np.float64))
    assert np.abs(prob2 - prob).max() < 1e-4
    assert (labels2 == labels).mean() > 0.999


def test_segment_options(session):
    img, _ = _blobs(np.random.default_rng(4), 96, 96)
    base, _ = oi.segment(session, img, min_size=0)
    bigger, _ = oi.segment(session, img, min_size=10**6)
    assert base.max() >= 1 and bigger.max() == 0
    tiled, prob = oi.segment(session, img, tile=32, min_size=0)  # overlap 16 -> 8
    assert tiled.shape == (96, 96) and prob.shape == (96, 96)
    split, _ = oi.segment(session, img, declump="watershed", min_size=0)
    assert split.max() >= base.max()


def test_segment_matches_torch_prediction(model_files, session):
    from s2l_tools.training.checkpoint import load_model
    from s2l_tools.io.images import normalize

    model, meta = load_model(model_files[0])
    img, _ = _blobs(np.random.default_rng(5), 100, 140)
    raw = (1000 + 2000 * img).clip(0, 65535).astype(np.uint16)
    want_labels, want_prob = predict_image(model, normalize(raw[None]), meta)
    labels, prob = oi.segment(session, raw)
    assert np.abs(prob - want_prob).max() < 1e-4
    assert labels.max() == want_labels.max() >= 1
    assert (labels == want_labels).mean() >= 0.999
    # brightness gains: the same average as s2l-predict --gains, and not the plain map
    _, want_gains = predict_image(model, normalize(raw[None]), meta, gains=(1, 2))
    _, gains_prob = oi.segment(session, raw, gains=(1, 2))
    assert np.abs(gains_prob - want_gains).max() < 1e-4
    assert np.abs(gains_prob - prob).max() > 1e-3


def test_session_cache(onnx_path, session):
    assert oi.load_session(onnx_path) is session
    assert oi.load_session(str(onnx_path)) is session
    st = onnx_path.stat()
    os.utime(onnx_path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    try:
        fresh = oi.load_session(onnx_path)  # the file "changed": reloaded
        assert fresh is not session
        assert oi.load_session(onnx_path) is fresh
    finally:
        os.utime(onnx_path, ns=(st.st_atime_ns, st.st_mtime_ns))


def test_model_meta_of_a_plain_session(onnx_path):
    import onnxruntime as ort

    plain = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    assert oi.model_meta(plain)["in_channels"] == 1


def test_normalize_percentile_constant_channel():
    x = np.stack([np.full((4, 4), 7.0), np.arange(16.0).reshape(4, 4)])
    out = oi.normalize_percentile(x, 0, 100)
    assert out.dtype == np.float32
    assert np.all(out[0] == 0) and out[1].min() == 0 and out[1].max() == 1


# --------------------------------------------------------------------------- installer
def test_install_copies_plugin_and_helpers(tmp_path, capsys):
    plugins = tmp_path / "plugins"
    assert cp_main(["install", "--plugins-dir", str(plugins)]) == 0
    assert "installed runscribble2label.py" in capsys.readouterr().out
    names = sorted(p.name for p in plugins.iterdir())
    assert names == ["_s2l_onnx_inference.py", "_s2l_postprocess.py", "_s2l_tiling.py",
                     "runscribble2label.py"]
    # only the plugin is a module for CellProfiler (helpers start with "_")
    assert [n for n in names if not n.startswith("_")] == ["runscribble2label.py"]
    assert oct((plugins / "_s2l_tiling.py").stat().st_mode & 0o777) == oct(0o644)
    # again: replaces its own files, nothing else
    (plugins / "other.py").write_text("x = 1\n")
    assert cp_main(["install", "--plugins-dir", str(plugins)]) == 0
    assert (plugins / "other.py").read_text() == "x = 1\n"


def test_installed_helper_imports_standalone(tmp_path):
    """The copied helper works without s2l_tools (as in CellProfiler's Python)."""
    plugins = tmp_path / "plugins"
    s2l_cp.install_plugin(plugins)
    code = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(plugins)!r})
        import _s2l_onnx_inference as m
        assert m.predict_tiled.__module__ == "_s2l_tiling", m.predict_tiled.__module__
        assert "s2l_tools" not in sys.modules, "imported s2l_tools"
        print("ok")
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=tmp_path, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr


def test_install_into_a_file(tmp_path, capsys):
    target = tmp_path / "plugins"
    target.write_text("")
    assert cp_main(["install", "--plugins-dir", str(target)]) == 1
    assert "exists and is not a folder" in capsys.readouterr().err


def test_pipeline_rejects_foreign_model(foreign_onnx, tmp_path, capsys):
    assert cp_main(["pipeline", "--model", str(foreign_onnx), "--out",
                        str(tmp_path / "x.cppipe")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "without s2l-tools metadata" in err


@pytest.mark.parametrize("value", ["0", "1,x"])
def test_pipeline_bad_gains_is_one_line(onnx_path, tmp_path, capsys, value):
    assert cp_main(["pipeline", "--model", str(onnx_path), "--out", str(tmp_path / "x.cppipe"),
                    "--gains", value]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "--gains" in err and "above 0" in err, err
    assert not list(tmp_path.iterdir())


def test_pipeline_needs_cellprofiler_python(onnx_path, tmp_path, capsys):
    assert cp_main(["pipeline", "--model", str(onnx_path), "--out",
                        str(tmp_path / "x.cppipe"), "--python",
                        str(tmp_path / "nope" / "python")]) == 1
    err = capsys.readouterr().err
    assert "no CellProfiler Python here" in err and "leave out --python" in err


EXAMPLE = ROOT / "cellprofiler_plugin" / "examples" / "runscribble2label_example.cppipe"


def test_pipeline_without_cellprofiler(onnx_path, tmp_path, capsys, monkeypatch):
    """No CellProfiler Python anywhere: the pipeline is written all the same (issue 17)."""
    monkeypatch.setenv("CP_VENV", str(tmp_path / "no_venv"))
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "x.cppipe"
    assert cp_main(["pipeline", "--model", str(onnx_path), "--out", str(out),
                    "--save-labels", "--min-size", "12", "--gains", "1,1.50,2"]) == 0
    assert "wrote" in capsys.readouterr().out
    text = out.read_text()
    assert "    Brightness gains to average:1,1.5,2\n" in text
    assert text.startswith("CellProfiler Pipeline: http://www.cellprofiler.org\nVersion:5\n")
    assert f"    Model file:{onnx_path}\n" in text
    assert "    Minimum object size (pixels):12\n" in text
    assert "    Text to append to the image name:_labels\n    Saved file format:tiff\n" in text
    assert not list(tmp_path.glob("*.part")) and ".npy" not in text


def test_committed_example_is_pipeline_text_and_saves_tiff_labels():
    """The example in the repository is what pipeline_text writes (and what CellProfiler
    4.2.8.1 writes: test_pipeline_text_is_what_cellprofiler_writes), with the labels saved as
    TIFF for Fiji."""
    text = EXAMPLE.read_text()
    assert text == s2l_cp.pipeline_text("/path/to/your/model.onnx", save_labels=True)
    assert "Saved file format:tiff" in text and "Saved file format:npy" not in text


# --------------------------------------------------------------------------- CellProfiler
def _run(cmd: list[str], *, cwd: Path, env: dict, timeout: int) -> subprocess.CompletedProcess:
    """Run ``cmd`` in its own process group; kill the whole group on timeout."""
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"{cmd[:4]} timed out after {timeout} s; stderr:\n{err[-4000:]}")
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def _module_settings(cppipe: Path, module: str) -> list[str]:
    """Setting names of ``module`` in a .cppipe file."""
    lines = cppipe.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(module + ":["))
    names = []
    for line in lines[start + 1:]:
        if not line.startswith("    "):
            break
        names.append(line.strip().rsplit(":", 1)[0] if ":" in line else line.strip())
    return names


@pytest.mark.cellprofiler
@needs_cellprofiler
def test_plugin_validation_in_cellprofiler(tmp_path, onnx_path, foreign_onnx):
    """validate_module: accepts the model, rejects a foreign ONNX with a clear message."""
    plugins = tmp_path / "plugins"
    s2l_cp.install_plugin(plugins)
    code = textwrap.dedent(f"""
        import sys
        import cellprofiler_core.preferences as prefs
        prefs.set_headless()
        sys.path.insert(0, {str(plugins)!r})
        from cellprofiler_core.setting import ValidationError
        from runscribble2label import RunScribble2Label
        m = RunScribble2Label()
        m.model_path.value = {str(onnx_path)!r}
        m.validate_module(None)
        m.model_path.value = {str(foreign_onnx)!r}
        try:
            m.validate_module(None)
        except ValidationError as exc:
            print("rejected:", exc.message)
        m.y_name.value = "Nuclei"
        print("columns:", sorted(c[1] for c in m.get_measurement_columns(None)
                                 if c[0] == "Image"))
        cats = m.get_categories(None, "Image")
        print("features:", cats, m.get_measurements(None, "Image", "Scribble2Label"),
              m.get_measurement_objects(None, "Image", "Scribble2Label", "Unusual"))
        m.model_path.value = {str(onnx_path)!r}
        m.tile_size.value = 48
        try:
            m.validate_module(None)
        except ValidationError as exc:
            print("rejected:", exc.message)
        m.tile_size.value = 0
        m.gains.value = "1,1.5,2"
        m.validate_module(None)
        m.gains.value = "1, 0"
        try:
            m.validate_module(None)
        except ValidationError as exc:
            print("rejected:", exc.message)
    """)
    proc = _run([str(CP_PYTHON), "-W", "ignore", "-c", code], cwd=tmp_path,
                env={**os.environ, "HOME": str(tmp_path)}, timeout=120)
    assert proc.returncode == 0, proc.stderr[-4000:]
    rejected = [line for line in proc.stdout.splitlines() if line.startswith("rejected:")]
    assert len(rejected) == 3, proc.stdout + proc.stderr[-2000:]
    assert "without s2l-tools metadata" in rejected[0] and "s2l-export" in rejected[0]
    assert "multiple of 32" in rejected[1]
    assert "gains 1, 0: each must be a number above 0 (e.g. 1,1.5,2)" in rejected[2]
    # the image measurements CellProfiler's measurement pickers offer
    assert ("columns: ['Count_Nuclei', 'Scribble2Label_ForegroundShare_Nuclei', "
            "'Scribble2Label_UnderCalled_Nuclei', 'Scribble2Label_Unusual_Nuclei']"
            ) in proc.stdout, proc.stdout
    assert ("features: ['Count', 'Scribble2Label'] ['ForegroundShare', 'Unusual', "
            "'UnderCalled'] ['Nuclei']") in proc.stdout, proc.stdout


@pytest.mark.cellprofiler
@needs_cellprofiler
def test_older_pipelines_load_as_they_ran(tmp_path):
    """Pipelines saved before "Average over flipped copies?" (revision 1) and before
    "Brightness gains to average" (revision 2) load through CellProfiler's own upgrade path
    with the flips off and the gains 1 (the same objects as before) and every other value in
    its place; a new module has the flips on and the gains 1."""
    plugins = tmp_path / "plugins"
    s2l_cp.install_plugin(plugins)
    text = s2l_cp.pipeline_text("/m.onnx", tile=256, flips=False, save_probability=True)
    lines = text.split("RunScribble2Label:[", 1)[1].split("\n\n", 1)[0].splitlines()[1:]
    rev2 = [line.strip().split(":", 1)[1] for line in lines
            if not line.strip().startswith("Brightness gains to average")]
    rev1 = [line.strip().split(":", 1)[1] for line in lines
            if not line.strip().startswith(("Brightness gains", "Average over flipped"))]
    assert len(rev2) == 13 and len(rev1) == 12
    code = textwrap.dedent(f"""
        import sys
        import cellprofiler_core.preferences as prefs
        prefs.set_headless()
        sys.path.insert(0, {str(plugins)!r})
        from runscribble2label import RunScribble2Label
        m = RunScribble2Label()
        print("new:", m.flips.value, m.gains.value, m.variable_revision_number)
        for rev, values in ((1, {rev1!r}), (2, {rev2!r})):
            m = RunScribble2Label()
            m.set_settings_from_values(values, rev, "RunScribble2Label")
            print("old:", rev, m.flips.value, m.gains.value, m.tile_size.value,
                  m.save_probability.value, m.probability_name.value, m.model_path.value)
    """)
    proc = _run([str(CP_PYTHON), "-W", "ignore", "-c", code], cwd=tmp_path,
                env={**os.environ, "HOME": str(tmp_path)}, timeout=120)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert f"new: True 1 {s2l_cp.PLUGIN_REVISION}" in proc.stdout, proc.stdout
    for rev in (1, 2):
        assert (f"old: {rev} False 1 256 True Scribble2LabelProbability /m.onnx"
                in proc.stdout), proc.stdout


@pytest.mark.cellprofiler
@needs_cellprofiler
@pytest.mark.parametrize("files", ["model_files", "scaled_model_files"])
def test_headless_cellprofiler_matches_s2l_predict(tmp_path, files, request):
    """Images -> ... -> RunScribble2Label -> ExportToSpreadsheet in CellProfiler 4.2.8.1
    (a model of one object size too: the module resizes each image as s2l-predict does).
    The image measurements: the share of the image in objects, the unusual flag
    where the model records its training images' largest share (NaN where not), and the
    under-called flag as s2l-predict's table has it."""
    model_pt, model_onnx = request.getfixturevalue(files)
    images = _images(tmp_path / "images", crowded=1)
    plugins, out = tmp_path / "plugins", tmp_path / "cp_out"
    out.mkdir()
    assert cp_main(["install", "--plugins-dir", str(plugins)]) == 0
    cppipe = tmp_path / "test.cppipe"
    # written without CellProfiler (the default); the same bytes as CellProfiler builds
    options = ["--threshold", str(THRESHOLD), "--min-size", str(MIN_SIZE), "--save-labels",
               "--save-probability"]
    # the model of one object size also averages over two brightness gains, both sides
    gains = ["--gains", "1,2"] if files == "scaled_model_files" else []
    assert cp_main(["pipeline", "--model", str(model_onnx), "--out", str(cppipe),
                    *options, *gains]) == 0
    built = tmp_path / "built.cppipe"
    assert cp_main(["pipeline", "--model", str(model_onnx), "--out", str(built),
                    "--python", str(CP_PYTHON), *options, *gains]) == 0
    assert cppipe.read_text() == built.read_text()
    # the committed example has the settings of the current module
    assert (_module_settings(EXAMPLE, "RunScribble2Label")
            == _module_settings(cppipe, "RunScribble2Label"))

    env = {**os.environ, "HOME": str(tmp_path)}  # no user CellProfiler config
    proc = _run([str(CP_PYTHON), "-W", "ignore", "-m", "cellprofiler", "-c", "-r",
                 "-p", str(cppipe), "-i", str(tmp_path / "images"), "-o", str(out),
                 "--plugins-directory", str(plugins), "-L", "WARNING"],
                cwd=tmp_path, env=env, timeout=CP_TIMEOUT)
    report = f"exit {proc.returncode}; CellProfiler stderr:\n{proc.stderr[-6000:]}"
    image_csv = out / "MyExpt_Image.csv"
    assert image_csv.is_file(), f"no {image_csv.name}: {report}"
    with open(image_csv, newline="") as f:
        rows = list(csv.DictReader(f))
    assert rows and "Count_Cells" in rows[0], f"no Count_Cells column: {report}"
    assert int(rows[0]["ModuleError_05RunScribble2Label"]) == 0, report
    cp_counts = {Path(r["FileName_DNA"]).stem: int(float(r["Count_Cells"])) for r in rows}
    assert sorted(cp_counts) == [p.stem for p in images], report

    # the same model in torch, same threshold and minimum size
    pred = tmp_path / "predict_out"
    assert predict_main([str(model_pt), str(tmp_path / "images"), "--out", str(pred),
                         "--threshold", str(THRESHOLD), "--min-size", str(MIN_SIZE),
                         "--prob", "--device", "cpu", *gains]) == 0
    for path in images:
        want = tifffile.imread(pred / f"{path.stem}.tif").astype(np.int64)
        want_prob = tifffile.imread(pred / f"{path.stem}_prob.tif")
        got = tifffile.imread(out / f"{path.stem}_labels.tiff")
        got_prob = tifffile.imread(out / f"{path.stem}_probability.tiff")
        assert got.dtype == np.int32 and got_prob.dtype == np.float32, path.name
        got = got.astype(np.int64)
        assert want.max() >= 1, f"{path.name}: the test model found nothing"
        assert cp_counts[path.stem] == want.max() == got.max(), path.name
        assert got.shape == want.shape
        assert (got == want).mean() >= 0.99, path.name
        assert np.abs(got_prob - want_prob).max() < 1e-3, path.name
    # the object centres (the module computes them itself, faster): scipy's on the labels
    with open(out / "MyExpt_Cells.csv", newline="") as f:
        cells = list(csv.DictReader(f))
    for path in images:
        got = tifffile.imread(out / f"{path.stem}_labels.tiff")
        mine = [c for c in cells if c["ImageNumber"] == str(images.index(path) + 1)]
        want = ndi.center_of_mass(np.ones_like(got), got, np.arange(1, got.max() + 1))
        assert [int(c["Number_Object_Number"]) for c in mine] == list(range(1, got.max() + 1))
        xy = np.array([[float(c["Location_Center_Y"]), float(c["Location_Center_X"])]
                       for c in mine])
        assert np.allclose(xy, np.array(want), atol=1e-6), path.name
    # Scribble2Label_ForegroundShare / _Unusual: the mask's share, over the model's limit
    limit = oi.unusual_limit(oi.read_meta(model_onnx).get("train_share_max"))
    assert (limit is None) == (files == "scaled_model_files")
    flags = {}
    for r in rows:
        labels = tifffile.imread(out / f"{Path(r['FileName_DNA']).stem}_labels.tiff")
        share = float(r["Scribble2Label_ForegroundShare_Cells"])
        assert share == pytest.approx(oi.mask_share(labels), abs=1e-9), r["FileName_DNA"]
        flag = r["Scribble2Label_Unusual_Cells"]
        # the pipeline's FlagImage: Metadata_Scribble2LabelUnusual, 1 where the module said so
        assert int(float(r["Metadata_Scribble2LabelUnusual"])) == (
            0 if limit is None else int(share > limit)), r["FileName_DNA"]
        if limit is None:
            assert flag.lower() in ("", "nan"), r["FileName_DNA"]
        else:
            flags[Path(r["FileName_DNA"]).stem] = float(flag)
            assert float(flag) == float(share > limit), (r["FileName_DNA"], share, limit)
    if limit is not None:  # the crowded image, and only it
        assert flags == {p.stem: float(p == images[-1]) for p in images}, flags
    # Scribble2Label_UnderCalled: the network's outlines not called, on CellProfiler's own
    # probability map at the pipeline's threshold, and what s2l-predict's table says
    with open(pred / "predictions.csv", newline="") as f:
        table = {Path(r["image"]).stem: r["under_called"] for r in csv.DictReader(f)}
    for r in rows:
        stem = Path(r["FileName_DNA"]).stem
        prob = tifffile.imread(out / f"{stem}_probability.tiff")
        want = oi.under_called(prob, THRESHOLD)
        assert float(r["Scribble2Label_UnderCalled_Cells"]) == float(want), stem
        # the pipeline's FlagImage: Metadata_Scribble2LabelUnderCalled, 1 where the module said so
        assert int(float(r["Metadata_Scribble2LabelUnderCalled"])) == int(want), stem
        assert table[stem] == str(int(want)), stem
    _check_opens_in_imagej(tmp_path, sorted(out.glob("*_labels.tiff")))


def _check_opens_in_imagej(tmp_path: Path, label_files: list[Path]) -> None:
    """Real ImageJ 1 opens CellProfiler's label TIFFs with the label values (not .npy)."""
    sys.path.insert(0, str(Path(__file__).parent))
    from _imagej import IMAGEJ_AVAILABLE, SENTINEL, run_jython

    if not IMAGEJ_AVAILABLE:
        return
    script = tmp_path / "open_labels.py"
    script.write_text(textwrap.dedent(f"""
        import sys
        from ij import IJ
        for path in sys.argv[1:]:
            imp = IJ.openImage(path)
            ip = imp.getProcessor()
            values = [ip.getf(i) for i in range(ip.getPixelCount())]
            print("%s %d %d" % (path, int(max(values)), len([v for v in values if v > 0])))
        print({SENTINEL!r})
    """))
    proc = run_jython(script, *label_files, timeout=120)
    seen = 0
    for line in proc.stdout.splitlines():
        if line.endswith(".tiff") or " " not in line or not line.startswith("/"):
            continue
        path, vmax, nonzero = line.rsplit(" ", 2)
        labels = tifffile.imread(path)
        assert int(vmax) == labels.max() and int(nonzero) == np.count_nonzero(labels), line
        seen += 1
    assert seen == len(label_files) > 0, proc.stdout


@pytest.mark.cellprofiler
@needs_cellprofiler
def test_pipeline_text_is_what_cellprofiler_writes(tmp_path):
    """pipeline_text writes byte for byte what cellprofiler_core's Pipeline.dump writes."""
    script = ROOT / "cellprofiler_plugin" / "examples" / "make_pipeline.py"
    model = "/path/to/your/model.onnx"
    cases = {(): {}, ("--save-labels",): {"save_labels": True},
             ("--threshold", "0.6", "--min-size", "10", "--declump", "none", "--no-flips",
              "--save-probability"):
                 {"threshold": 0.6, "min_size": 10, "watershed": False, "flips": False,
                  "save_probability": True},
             ("--gains", "1,1.50,2"): {"gains": (1, 1.5, 2)}}
    for i, (flags, kwargs) in enumerate(cases.items()):
        out = tmp_path / f"p{i}.cppipe"
        proc = _run([str(CP_PYTHON), "-W", "ignore", str(script), "--model", model, "--out",
                     str(out), *flags], cwd=tmp_path, env={**os.environ, "HOME": str(tmp_path)},
                    timeout=120)
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert out.read_text() == s2l_cp.pipeline_text(model, **kwargs), flags


def test_threads_environment_variable(onnx_path, session, monkeypatch):
    monkeypatch.setenv("S2L_ORT_THREADS", "many")
    with pytest.raises(ValueError, match="S2L_ORT_THREADS=many: must be a whole number"):
        oi.load_session(onnx_path)
    monkeypatch.setenv("S2L_ORT_THREADS", "1")
    one_thread = oi.load_session(onnx_path)
    assert one_thread is not session  # the setting is part of the cache key
    labels, _ = oi.segment(one_thread, np.zeros((40, 40), np.float32))
    assert labels.shape == (40, 40)
