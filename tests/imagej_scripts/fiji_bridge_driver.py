# Jython 2.7 driver for tests/test_fiji_bridge.py: runs fiji_bridge's s2l_fiji
# (and its menu scripts) inside real ImageJ 1, all cases of one mode in one JVM.
#
#   usage: fiji_bridge_driver.py LIB_DIR SPEC.json
#
# SPEC (written by the test) holds "mode" ('headless' or 'manager') and the
# paths and ROIs of each case; results are printed as 'KEY value' lines and
# files under the spec's folders. Prints 'S2L-DONE' at the end.
import jarray
import json
import os
import sys
import time

sys.path.insert(0, sys.argv[1])
spec = json.load(open(sys.argv[2]))

from java.io import File
from java.lang import System
from java.util.zip import ZipFile
from ij import IJ, ImagePlus, ImageStack
from ij.gui import Line, OvalRoi, Overlay, PolygonRoi, Roi, ShapeRoi, TextRoi
from ij.io import FileSaver
from ij.process import ByteProcessor, FloatProcessor, ShortProcessor
from java.awt import Color

import s2l_fiji

sys.path.insert(0, os.path.dirname(os.path.abspath(sys.argv[0])))
from ij_reference import imagej_mask


def out(key, *values):
    print(" ".join([key] + [str(v) for v in values]))


def make_roi(d):
    kind = d["kind"]
    if kind in ("polyline", "freeline", "polygon", "freehand"):
        t = {"polyline": Roi.POLYLINE, "freeline": Roi.FREELINE,
             "polygon": Roi.POLYGON, "freehand": Roi.FREEROI}[kind]
        xs = jarray.array([float(p[0]) for p in d["xy"]], "f")
        ys = jarray.array([float(p[1]) for p in d["xy"]], "f")
        roi = PolygonRoi(xs, ys, t)
    elif kind == "oval":
        roi = OvalRoi(*d["rect"])
    elif kind == "rect":
        roi = Roi(*d["rect"])
    elif kind == "line":
        roi = Line(*d["pts"])
    elif kind == "composite":  # outer rectangle with a hole
        roi = ShapeRoi(Roi(*d["outer"])).xor(ShapeRoi(Roi(*d["inner"])))
    elif kind == "text":
        roi = TextRoi(d["rect"][0], d["rect"][1], "hello")
    else:
        raise ValueError(kind)
    if d.get("width"):
        roi.setStrokeWidth(float(d["width"]))
    if d.get("name"):
        roi.setName(d["name"])
    if d.get("group"):
        roi.setGroup(int(d["group"]))
    if d.get("color"):
        c = d["color"]
        roi.setStrokeColor(Color(int(c[1:3], 16), int(c[3:5], 16), int(c[5:7], 16)))
    return roi


def save_raw(ip, path):
    f = open(path, "wb")
    try:
        f.write(ip.getPixels().tostring())
    finally:
        f.close()


def zip_entries(path):
    zf = ZipFile(path)
    try:
        names = [e.getName() for e in zf.entries()]
    finally:
        zf.close()
    return names


def expect_error(key, fn, *args, **kw):
    try:
        fn(*args, **kw)
    except s2l_fiji.UnclassifiedRoisError as e:
        out(key, "UNCLASSIFIED", json.dumps(e.names), "|", str(e))
        return
    except s2l_fiji.S2LFijiError as e:
        out(key, "ERROR", str(e))
        return
    out(key, "NO-ERROR")


def timed(key, fn, *args, **kw):
    t = time.time()
    r = fn(*args, **kw)
    out("TIME", key, "%.3f" % (time.time() - t))
    return r


# ----------------------------------------------------------------------------- export

def run_export(e):
    data = e["data"]
    imp = IJ.openImage(e["image"])
    w, h = imp.getWidth(), imp.getHeight()
    rois = [make_roi(d) for d in e["rois"]]
    colors = s2l_fiji.parse_color_map(e["colors"])

    # unclassified ROIs: reported (all of them), nothing written
    expect_error("UNCLASSIFIED-NOMAP", s2l_fiji.export_scribbles, imp, rois, data)
    expect_error("UNCLASSIFIED-MAP", s2l_fiji.export_scribbles, imp, rois, data, class_of=colors)
    out("WROTE-AFTER-ERRORS", os.path.exists(os.path.join(data, "images")),
        os.path.exists(os.path.join(data, "rois")))

    # first export: another image under the same title, fewer ROIs
    first = imp.duplicate()
    first.getProcessor().invert()
    first.setTitle(imp.getTitle())
    classified = [r for r in rois if s2l_fiji.roi_class(r, colors) is not None]
    res = s2l_fiji.export_scribbles(first, classified[:3], data, class_of=colors)
    out("FIRST-ENTRIES", json.dumps(zip_entries(res[1])))

    # the user gives the unclassified ROI a class (what the dialog does), re-export
    for r in rois:
        if s2l_fiji.roi_class(r, colors) is None:
            r.setGroup(s2l_fiji.GROUP_BACKGROUND)
    ov = Overlay()
    for r in rois:
        ov.add(r)
    imp.setOverlay(ov)  # scribbles in the overlay: the saved image must not carry it
    from_overlay = s2l_fiji.rois_from(imp, "Overlay")
    image_path, rois_path, n_fg, n_bg = timed("export", s2l_fiji.export_scribbles, imp,
                                               from_overlay, data, class_of=colors)
    out("EXPORT", image_path, rois_path, n_fg, n_bg)
    out("ENTRIES", json.dumps(zip_entries(rois_path)))
    out("TITLE-AFTER", imp.getTitle(), imp.getOverlay().size())
    out("GROUPS-UNCHANGED", json.dumps([r.getGroup() for r in rois]))
    # ImageJ's own masks of the exported ROIs, in order
    mdir = e["masks"]
    for i, r in enumerate(rois):
        save_raw(imagej_mask(r, w, h), os.path.join(mdir, "%02d.raw" % i))
        if r.isArea():  # and roi.getMask() for the area ROIs
            m = r.getMask()
            b = r.getBounds()
            if m is None:  # a plain rectangle
                m = ByteProcessor(b.width, b.height)
                m.setColor(255)
                m.fill()
            save_raw(m, os.path.join(mdir, "%02d_getmask.raw" % i))
            out("GETMASK", i, b.x, b.y, b.width, b.height)
        out("CLASS", i, s2l_fiji.roi_class(r, colors))

    # a stack is refused, and so are ROIs that cannot be scribbles
    stack = ImageStack(w, h)
    stack.addSlice(ByteProcessor(w, h))
    stack.addSlice(ByteProcessor(w, h))
    expect_error("STACK", s2l_fiji.export_scribbles, ImagePlus("stack.tif", stack), rois, data)
    text = make_roi({"kind": "text", "rect": [2, 2], "name": "fg-label"})
    expect_error("TEXT", s2l_fiji.export_scribbles, imp, [rois[0], text], data)
    expect_error("NOROIS", s2l_fiji.export_scribbles, imp, [], data)
    # a suggestion of s2l-suggest (group 3) left among the scribbles is never exported
    sugg = make_roi({"kind": "rect", "rect": [1, 1, 6, 6], "name": "suggest_01"})
    sugg.setGroup(s2l_fiji.GROUP_SUGGESTION)
    res = s2l_fiji.export_scribbles(imp, [rois[0], sugg], data + "_sugg", class_of=colors)
    out("SUGGESTION-LEFT-OUT", json.dumps(zip_entries(res[1])))
    expect_error("ONLY-SUGGESTION", s2l_fiji.export_scribbles, imp, [sugg], data + "_sugg")

    # the menu command itself, with the parameters Fiji would inject
    imp2 = IJ.openImage(e["image"])
    imp2.setTitle("other.tif")
    ov2 = Overlay()
    for r in rois:
        ov2.add(r)
    from ij.gui import ImageRoi
    prob_roi = ImageRoi(0, 0, ByteProcessor(w, h))  # a probability overlay: not a scribble
    prob_roi.setName(s2l_fiji.PROBABILITY_NAME)
    ov2.add(prob_roi)
    imp2.setOverlay(ov2)
    g = {"imp": imp2, "dataset": File(e["data2"]), "source": "Overlay", "colours": e["colors"],
         "__name__": "__main__"}
    execfile(e["export_script"], g)


# ----------------------------------------------------------------------------- import

def fill_back(rois, w, h, bits):
    ip = FloatProcessor(w, h) if bits == 32 else ShortProcessor(w, h)
    for r in rois:
        ip.setValue(float(int(r.getName().split("-")[1])))
        ip.fill(r)
    return ip


def run_import(c):
    lab = IJ.openImage(c["path"])
    w, h = lab.getWidth(), lab.getHeight()
    rois = timed("import-" + c["key"], s2l_fiji.import_segmentation, c["path"], target="overlay")
    out("NROIS", c["key"], len(rois))
    if c.get("details"):
        for r in rois:
            out("ROI", c["key"], r.getName(), r.getClass().getSimpleName(), r.getType())
    bits = lab.getBitDepth()
    out("BITS", c["key"], bits)
    back = fill_back(rois, w, h, 32 if bits == 32 else 16)
    FileSaver(ImagePlus("back", back)).saveAsTiff(c["back"])


def run_headless_imports(spec):
    for c in spec["imports"]:
        run_import(c)
    # overlay on a given image; wrong sizes refused; target=None
    first = spec["imports"][0]
    imp = IJ.openImage(spec["image_for_overlay"])
    rois = s2l_fiji.import_segmentation(first["path"], target="overlay", imp=imp)
    out("OVERLAY", imp.getOverlay().size(), len(rois))
    s2l_fiji.import_segmentation(first["path"], target="overlay", imp=imp, replace=True)
    out("OVERLAY-RESET", imp.getOverlay().size())
    small = ImagePlus("small.tif", ByteProcessor(5, 5))
    expect_error("SIZE", s2l_fiji.import_segmentation, first["path"], target="overlay", imp=small)
    expect_error("MISSING", s2l_fiji.import_segmentation, first["path"] + ".nope", target=None)
    expect_error("PROBMAP", s2l_fiji.import_segmentation, spec["prob"], target=None)
    # probability overlay
    roi = s2l_fiji.show_probability(imp, spec["prob"], lut="Fire", opacity=0.4)
    roi = s2l_fiji.show_probability(imp, spec["prob"], lut="Fire", opacity=0.4)  # replaces
    probs = [r for r in imp.getOverlay().toArray() if r.getName() == s2l_fiji.PROBABILITY_NAME]
    ip = roi.getProcessor()
    out("PROB", len(probs), roi.getClass().getSimpleName(), "%.2f" % roi.getOpacity(),
        ip.getWidth(), ip.getHeight(), ip.get(0, 0), ip.get(ip.getWidth() - 1, ip.getHeight() - 1))
    expect_error("PROB-SIZE", s2l_fiji.show_probability, small, spec["prob"])
    # the two other menu commands, with the parameters Fiji would inject
    from ij import WindowManager
    target = IJ.openImage(spec["image_for_overlay"])
    WindowManager.setTempCurrentImage(target)
    execfile(os.path.join(spec["menu"], "Import_Segmentation.py"),
             {"labels": File(first["path"]), "target": "Overlay", "replace": True,
              "__name__": "__main__"})
    execfile(os.path.join(spec["menu"], "Show_Probability.py"),
             {"imp": target, "prob": File(spec["prob"]), "lut": "Grays", "opacity": 0.25,
              "__name__": "__main__"})
    names = [r.getName() for r in target.getOverlay().toArray()]
    out("MENU-OVERLAY", len(names), names[0], names[-1])


def run_manager(spec):
    from ij import WindowManager
    from ij.plugin.frame import RoiManager
    c = spec["imports"][0]
    imp = IJ.openImage(spec["image_for_overlay"])
    rois = timed("import-manager", s2l_fiji.import_segmentation, c["path"], target="manager",
                 imp=imp)
    rm = RoiManager.getInstance()
    out("MANAGER", rm.getCount(), len(rois))
    out("MANAGER-NAMES", json.dumps([r.getName() for r in rm.getRoisAsArray()]))
    rm.addRoi(make_roi({"kind": "rect", "rect": [1, 1, 3, 3], "name": "fg-keep", "group": 1}))
    s2l_fiji.import_segmentation(c["path"], target="manager", imp=imp, replace=True)
    names = [r.getName() for r in rm.getRoisAsArray()]
    out("MANAGER-RESET", rm.getCount(), names[0])
    WindowManager.setTempCurrentImage(imp)
    execfile(os.path.join(spec["menu"], "Import_Segmentation.py"),
             {"labels": File(c["path"]), "target": "ROI Manager", "replace": True,
              "__name__": "__main__"})
    out("MANAGER-MENU", rm.getCount())
    # the ROI Manager as the export source
    rm.reset()
    e = spec["export"]
    for d in e["rois"]:
        rm.addRoi(make_roi(d))
    sub = [r for r in s2l_fiji.rois_from(imp, "ROI Manager")
           if s2l_fiji.roi_class(r, s2l_fiji.parse_color_map(e["colors"])) is not None]
    res = s2l_fiji.export_scribbles(imp, sub, e["data"], stem="from_manager",
                                    class_of=s2l_fiji.parse_color_map(e["colors"]))
    out("MANAGER-EXPORT", res[1], json.dumps(zip_entries(res[1])))
    # the class dialog, answered the way a recorded macro answers it
    from ij import Macro
    from java.lang import Thread
    rois = [make_roi(d) for d in e["rois"]]
    Thread.currentThread().setName("Run$_s2l")  # Macro.getOptions only answers such threads
    Macro.setOptions(Thread.currentThread(), "roi6=background roi7=[leave out]")
    kept = s2l_fiji.ask_classes(rois)
    Macro.setOptions(Thread.currentThread(), None)
    out("DIALOG", json.dumps([(r.getName(), r.getGroup()) for r in kept]))


t0 = time.time()
try:
    if spec["mode"] == "headless":
        run_export(spec["export"])
        run_headless_imports(spec)
    else:
        run_manager(spec)
except:  # noqa: E722 - report anything, then exit (a window would keep the JVM alive)
    import traceback
    traceback.print_exc()
    sys.stdout.flush()
    sys.stderr.flush()
    System.exit(1)
out("TIME", "total", "%.3f" % (time.time() - t0))
print("S2L-DONE")
sys.stdout.flush()
System.exit(0)  # a ROI Manager window would keep the JVM alive
