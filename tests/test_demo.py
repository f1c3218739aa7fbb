"""s2l-demo (make demo) runs end to end; here on a 1-epoch budget."""

import json

from s2l_tools.cli import demo


def test_demo_end_to_end(tmp_path, capsys):
    out = tmp_path / "demo"
    assert demo.main(["--out", str(out), "--epochs", "1"]) == 0
    text = capsys.readouterr().out
    for cmd in ("$ s2l-scribbles", "$ s2l-train", "$ s2l-predict", "$ s2l-eval"):
        assert cmd in text
    assert "--preset laptop" in text  # the demo trains what the README tells users to type
    scores = json.loads((out / "scores.json").read_text())
    assert {"iou", "mdice", "f1_50", "ap_50"} <= set(scores) and scores["n_images"] == 4
    assert len(list((out / "predictions").glob("*_rois.zip"))) == 4
    # a second run refuses to mix with the first, --fresh starts again
    assert demo.main(["--out", str(out), "--epochs", "1"]) == 1
    assert "--fresh" in capsys.readouterr().err
