"""RunScribble2Label work (onnx_inference.segment) vs bare ONNX Runtime on a 1024x1024 image.

Run: .venv/bin/python benchmarks/cellprofiler_bench.py   (medians of 3; resnet34, untrained)
"""
import time, tempfile, numpy as np, os
from s2l_tools.model import build_model
from s2l_tools.checkpoint import ModelMeta
from s2l_tools.export import export_onnx
from s2l_tools import onnx_inference as oi
d = tempfile.mkdtemp()
m = build_model(encoder="resnet34", in_channels=1, seed=0)
meta = ModelMeta(encoder="resnet34", in_channels=1)
p = os.path.join(d, "m.onnx"); export_onnx(m, meta, p, check=False)
sess = oi.load_session(p)
rng = np.random.default_rng(0)
img = (rng.random((1024, 1024)) * 1000).astype(np.float32)
x = oi.normalize_percentile(img[None])[None]
name = sess.get_inputs()[0].name
def med(f, n=3):
    ts = []
    for _ in range(n):
        t = time.perf_counter(); f(); ts.append(time.perf_counter() - t)
    return float(np.median(ts))
f_bare = med(lambda: sess.run(None, {name: x}))
f_seg = med(lambda: oi.segment(sess, img))
f_seg512 = med(lambda: oi.segment(sess, img, tile=512))
print(f"bare ORT 1024^2 one pass: {f_bare:.2f} s; segment() default tile {meta.tile}: {f_seg:.2f} s "
      f"(ratio {f_seg/f_bare:.2f}); segment(tile=512): {f_seg512:.2f} s (ratio {f_seg512/f_bare:.2f})")
