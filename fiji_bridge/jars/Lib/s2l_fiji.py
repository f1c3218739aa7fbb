# -*- coding: utf-8 -*-
"""s2l_fiji: the Fiji side of s2l-tools (Jython 2.7, ImageJ 1 API).

Install this file as ``Fiji.app/jars/Lib/s2l_fiji.py``: Jython puts
``<folder of the jython jar>/Lib`` on ``sys.path`` and Fiji keeps its jython
jar in ``Fiji.app/jars``, so every Jython script in Fiji can ``import s2l_fiji``.
The menu commands in ``scripts/Plugins/Scribble2Label`` are thin wrappers
around the functions here; these functions take an ImagePlus and Roi objects
and open no window (except :func:`add_to_manager`, the ROI Manager being a
window), so they also run headless (``java -Djava.awt.headless=true ...``).

Dataset layout written and read (the one s2l-tools uses)::

    DATA/images/<stem>.tif      the image (no overlay)
    DATA/rois/<stem>.zip        the scribbles: a RoiSet.zip, group 1 = foreground,
                                group 2 = background (s2l-scribbles DATA reads it)

Classes of an ROI (first rule that matches), the same rules as
``s2l_tools.io.roi.roi_class``:

1. its group (Edit > Selection > Properties): 1 foreground, 2 background;
2. its name, at the start, any case: ``fg``, ``cell``, ``fore``, ``nuc``
   foreground; ``bg``, ``back`` background;
3. its stroke colour, when a colour map is given (``{'#ffff00': 'fg'}``).
"""

import os
import re

from java.io import BufferedOutputStream, DataOutputStream, File, FileOutputStream
from java.nio.file import AtomicMoveNotSupportedException, Files, StandardCopyOption
from java.util.zip import ZipEntry, ZipOutputStream

from ij import IJ, ImagePlus
from ij.gui import Overlay, Roi
from ij.io import FileSaver, RoiEncoder
from ij.plugin.filter import ThresholdToSelection
from ij.process import ImageProcessor

__all__ = [
    "GROUP_FOREGROUND", "GROUP_BACKGROUND", "S2LFijiError", "UnclassifiedRoisError",
    "roi_class", "unclassified_rois", "image_stem", "export_scribbles",
    "import_segmentation", "label_rois", "add_to_manager", "add_to_overlay",
    "show_probability", "parse_color_map", "rois_from", "ask_classes", "message",
]

#: ROI group of each class (what s2l-scribbles reads by default; s2l_tools.labels'
#: GROUP_FOREGROUND / GROUP_BACKGROUND). Not the values of a scribble mask, where
#: foreground is 2 and background 1 (s2l_tools.labels.FOREGROUND / BACKGROUND).
GROUP_FOREGROUND = 1
GROUP_BACKGROUND = 2
CLASS_NAMES = {GROUP_FOREGROUND: "foreground", GROUP_BACKGROUND: "background"}

NAME_RULES = [
    (re.compile(r"(fg|cell|fore|nuc)", re.IGNORECASE), GROUP_FOREGROUND),
    (re.compile(r"(bg|back)", re.IGNORECASE), GROUP_BACKGROUND),
]

IMAGE_SUFFIXES = (".ome.tiff", ".ome.tif", ".tiff", ".tif", ".png", ".jpeg", ".jpg")
PROBABILITY_NAME = "s2l-probability"


class S2LFijiError(Exception):
    """A user error, with a one-line message saying what to do."""


class UnclassifiedRoisError(S2LFijiError):
    """ROIs of no class: ``names`` lists them (nothing was written)."""

    def __init__(self, names):
        self.names = list(names)
        shown = ", ".join(self.names[:20]) + (" ..." if len(self.names) > 20 else "")
        S2LFijiError.__init__(
            self,
            "%d ROI(s) have no class: %s; set their group (Edit > Selection > Properties: "
            "group 1 foreground, group 2 background) or name them 'fg...'/'bg...'"
            % (len(self.names), shown))


# ----------------------------------------------------------------------------- classes


def _class_group(value):
    """'fg'/'foreground'/1 -> GROUP_FOREGROUND, 'bg'/'background'/2 -> GROUP_BACKGROUND."""
    if value in (GROUP_FOREGROUND, GROUP_BACKGROUND):
        return value
    text = str(value).strip().lower()
    if text in ("fg", "foreground", "fore", "1"):
        return GROUP_FOREGROUND
    if text in ("bg", "background", "back", "2"):
        return GROUP_BACKGROUND
    raise S2LFijiError("class %r: use 'fg' (foreground) or 'bg' (background)" % (value,))


def _hex(color):
    """java.awt.Color or '#rrggbb' / '#aarrggbb' -> '#rrggbb' (lower case)."""
    if color is None:
        return None
    if hasattr(color, "getRGB"):
        return "#%06x" % (color.getRGB() & 0xFFFFFF)
    text = str(color).strip().lower()
    if not text.startswith("#"):
        text = "#" + text
    if len(text) == 9:
        text = "#" + text[3:]
    if not re.match(r"^#[0-9a-f]{6}$", text):
        raise S2LFijiError("colour %r: write it as '#rrggbb'" % (color,))
    return text


def parse_color_map(text):
    """'#ffff00=fg, #00ffff=bg' -> {'#ffff00': 1, '#00ffff': 2} ('' -> None)."""
    if text is None or not str(text).strip():
        return None
    table = {}
    for item in re.split(r"[,;\s]+", str(text).strip()):
        if not item:
            continue
        if "=" not in item:
            raise S2LFijiError("colour map entry %r: write '#rrggbb=fg' or '#rrggbb=bg'" % item)
        color, cls = item.split("=", 1)
        table[_hex(color)] = _class_group(cls)
    return table


def roi_class(roi, class_of=None):
    """GROUP_FOREGROUND (1), GROUP_BACKGROUND (2) or None for one ROI.

    Parameters
    ----------
    roi : ij.gui.Roi
    class_of : dict or callable, optional
        Consulted after the group and the name: a stroke colour map
        ``{'#rrggbb': 'fg'|'bg'}`` or a function ``roi -> 'fg'|'bg'|None``.
    """
    group = roi.getGroup()
    if group in (GROUP_FOREGROUND, GROUP_BACKGROUND):
        return group
    name = roi.getName()
    if name:
        for pattern, group_of_name in NAME_RULES:
            if pattern.match(name):
                return group_of_name
    if class_of is None:
        return None
    if callable(class_of):
        value = class_of(roi)
        return None if value is None else _class_group(value)
    color = _hex(roi.getStrokeColor())
    table = dict((_hex(k), _class_group(v)) for k, v in class_of.items())
    return table.get(color)


def _display_name(roi, index):
    name = roi.getName()
    return ("'%s'" % name) if name else ("#%d (unnamed)" % (index + 1))


def unclassified_rois(rois, class_of=None):
    """Display names of the ROIs :func:`roi_class` gives no class (in order)."""
    return [_display_name(r, i) for i, r in enumerate(rois) if roi_class(r, class_of) is None]


def _unsupported(roi):
    """Why an ROI cannot be a scribble (s2l-scribbles refuses these), or None."""
    cls = roi.getClass().getSimpleName()
    if cls in ("TextRoi", "Arrow", "ImageRoi"):
        return {"TextRoi": "a text ROI", "Arrow": "an arrow", "ImageRoi": "an image ROI"}[cls]
    if roi.getType() == Roi.ANGLE:
        return "an angle"
    if hasattr(roi, "isSplineFit") and roi.isSplineFit():
        return "spline-fitted (Edit > Selection > Interpolate it first)"
    if roi.getType() == Roi.RECTANGLE and roi.getCornerDiameter() > 0:
        return "a rounded rectangle"
    return None


# ----------------------------------------------------------------------------- files


def image_stem(title):
    """Image title without its image suffix ('a.ome.tif' -> 'a'), safe as a file name."""
    name = title or "image"
    lower = name.lower()
    for suffix in IMAGE_SUFFIXES:
        if lower.endswith(suffix) and len(name) > len(suffix):
            name = name[:-len(suffix)]
            break
    name = re.sub(r"[/\\:]", "_", name).strip()
    if not name or name.startswith("."):
        raise S2LFijiError("image title %r gives no usable file name; rename the image "
                           "(Image > Rename...)" % (title,))
    return name


def _mkdirs(folder):
    f = File(folder)
    if not f.isDirectory() and not f.mkdirs():
        raise S2LFijiError("%s: cannot create this folder; check the path and permissions" % folder)


def _temp_in(folder, stem):
    """A fresh hidden temp file in ``folder`` (hidden: s2l-tools ignores it)."""
    return File.createTempFile(".s2l-" + stem + "-", ".part", File(folder))


def _replace(tmp, target):
    """Move ``tmp`` onto ``target`` atomically (replacing it)."""
    src, dst = tmp.toPath(), File(target).toPath()
    try:
        Files.move(src, dst, [StandardCopyOption.ATOMIC_MOVE, StandardCopyOption.REPLACE_EXISTING])
    except AtomicMoveNotSupportedException:
        Files.move(src, dst, [StandardCopyOption.REPLACE_EXISTING])


def _roiset_names(rois):
    """Zip entry names as the ROI Manager makes them: the ROI's name (or its
    'yyyy-xxxx' centre label), made unique with '-1', '-2', ...; no slashes."""
    used = set()
    names = []
    for roi in rois:
        name = roi.getName()
        if not name:
            b = roi.getBounds()
            name = "%04d-%04d" % (b.y + b.height // 2, b.x + b.width // 2)
        name = re.sub(r"[/\\]", "_", name)
        if name.lower().endswith(".roi"):
            name = name[:-4]
        base, n = name, 1
        while name in used:
            name = "%s-%d" % (base, n)
            n += 1
        used.add(name)
        names.append(name)
    return names


def _write_roiset(rois, names, path):
    zos = ZipOutputStream(BufferedOutputStream(FileOutputStream(path)))
    try:
        out = DataOutputStream(zos)
        encoder = RoiEncoder(out)
        for roi, name in zip(rois, names):
            zos.putNextEntry(ZipEntry(name + ".roi"))
            encoder.write(roi)
            out.flush()
    finally:
        zos.close()


# ----------------------------------------------------------------------------- export


def export_scribbles(imp, rois, dataset_dir, stem=None, class_of=None):
    """Write ``DATA/images/<stem>.tif`` and ``DATA/rois/<stem>.zip``.

    Every ROI is saved with its group set to its class (1 foreground,
    2 background); the user's ROIs are not changed (copies are saved). Both
    files are written to temp files in their folders first and then moved
    over the old ones atomically, so a re-export replaces them and a failure
    leaves the old files intact.

    Parameters
    ----------
    imp : ij.ImagePlus
        One 2-D image (grey or RGB); stacks and hyperstacks are refused.
    rois : sequence of ij.gui.Roi
        The scribbles (ROI Manager or overlay), in drawing order (the later
        ROI wins where strokes overlap).
    dataset_dir : str or java.io.File
    stem : str, optional
        File name without suffix; default: the image title without extension.
    class_of : dict or callable, optional
        Stroke colour map or function, see :func:`roi_class`.

    Returns
    -------
    (image_path, rois_path, n_fg, n_bg) : tuple

    Raises
    ------
    UnclassifiedRoisError
        Some ROIs have no class (``.names`` lists them); nothing is written.
    S2LFijiError
        A stack, no ROIs, an ROI type that cannot be a scribble, or a clash
        with another image file of the same stem.
    """
    if imp is None:
        raise S2LFijiError("no image; open the image the scribbles were drawn on")
    title = imp.getTitle()
    if imp.getStackSize() > 1:
        raise S2LFijiError(
            "%s: a stack/hyperstack (%d planes) cannot be exported; Scribble2Label works on "
            "2-D images: extract one plane (Image > Duplicate...) and scribble on that"
            % (title, imp.getStackSize()))
    # suggestions of s2l-suggest (Show Suggestions) are never scribbles
    rois = [r for r in (rois or []) if r is not None and r.getGroup() != GROUP_SUGGESTION]
    if not rois:
        raise S2LFijiError("%s: no ROIs to export; draw scribbles and add them to the ROI "
                           "Manager (press T) or the overlay (press B)" % title)
    missing = unclassified_rois(rois, class_of)
    if missing:
        raise UnclassifiedRoisError(missing)
    bad = [(i, r, _unsupported(r)) for i, r in enumerate(rois)]
    bad = ["%s is %s" % (_display_name(r, i), why) for i, r, why in bad if why]
    if bad:
        raise S2LFijiError("%s: cannot be scribbles: %s; delete or redraw them with a line or "
                           "area tool" % (title, "; ".join(bad[:10])))
    stem = image_stem(title) if stem is None else image_stem(stem)
    root = dataset_dir.getPath() if hasattr(dataset_dir, "getPath") else str(dataset_dir)
    images_dir = os.path.join(root, "images")
    rois_dir = os.path.join(root, "rois")
    image_path = os.path.join(images_dir, stem + ".tif")
    rois_path = os.path.join(rois_dir, stem + ".zip")
    if os.path.isdir(images_dir):
        for other in sorted(os.listdir(images_dir)):
            if other != stem + ".tif" and other.lower() in [stem.lower() + s for s in IMAGE_SUFFIXES]:
                raise S2LFijiError("%s: already holds %s for '%s'; remove it or export under "
                                   "another name" % (images_dir, other, stem))
    if os.path.exists(os.path.join(rois_dir, stem + ".roi")):
        raise S2LFijiError("%s: a single-ROI file competes with %s.zip; remove it"
                           % (os.path.join(rois_dir, stem + ".roi"), stem))

    copies, n_fg, n_bg = [], 0, 0
    for roi in rois:
        group = roi_class(roi, class_of)
        c = roi.clone()
        c.setGroup(group)
        copies.append(c)
        if group == GROUP_FOREGROUND:
            n_fg += 1
        else:
            n_bg += 1
    names = _roiset_names(rois)
    for c, name in zip(copies, names):
        c.setName(name)

    _mkdirs(images_dir)
    _mkdirs(rois_dir)
    # the image alone: a new ImagePlus on the same processor has no overlay or selection
    plain = ImagePlus(stem, imp.getProcessor())
    plain.setCalibration(imp.getCalibration())
    info = imp.getProperty("Info")
    if info is not None:
        plain.setProperty("Info", info)
    tmp_img = _temp_in(images_dir, stem)
    tmp_rois = _temp_in(rois_dir, stem)
    try:
        if not FileSaver(plain).saveAsTiff(tmp_img.getPath()):
            raise S2LFijiError("%s: could not write the image; check disk space and permissions"
                               % image_path)
        _write_roiset(copies, names, tmp_rois.getPath())
        _replace(tmp_img, image_path)
        _replace(tmp_rois, rois_path)
    finally:
        for t in (tmp_img, tmp_rois):
            if t.exists():
                t.delete()
    return image_path, rois_path, n_fg, n_bg


def rois_from(imp, source):
    """The ROIs of 'ROI Manager' (all of them) or 'Overlay' (of ``imp``), in order.

    The probability overlay of :func:`show_probability` is not a scribble and
    is left out.
    """
    if source == "Overlay":
        ov = imp.getOverlay() if imp is not None else None
        rois = list(ov.toArray()) if ov is not None else []
    elif source == "ROI Manager":
        from ij.plugin.frame import RoiManager
        rm = RoiManager.getInstance()
        rois = list(rm.getRoisAsArray()) if rm is not None else []
    else:
        raise S2LFijiError("source %r: use 'ROI Manager' or 'Overlay'" % (source,))
    return [r for r in rois if r.getName() != PROBABILITY_NAME]


# ----------------------------------------------------------------------------- GUI helpers

#: Largest number of unclassified ROIs the class dialog asks about one by one.
MAX_ASK = 25


def message(title, text):
    """Tell the user: a message box with a display, the Log/stdout without one."""
    from java.awt import GraphicsEnvironment
    if GraphicsEnvironment.isHeadless():
        print("%s: %s" % (title, text))
    else:
        IJ.showMessage(title, text)


def ask_classes(rois, class_of=None, title="Export Scribbles"):
    """Ask the user for the class of each unclassified ROI (a GenericDialog).

    Choices per ROI: foreground, background, or 'leave out' (said explicitly,
    never silent). Sets the group of the chosen ROIs (the user's ROIs: the
    choice sticks for the next export) and returns the ROIs to export, or
    None when the user cancels or there are too many to ask about.
    """
    from ij.gui import GenericDialog
    rois = [r for r in rois if r is not None and r.getGroup() != GROUP_SUGGESTION]
    todo = [(i, r) for i, r in enumerate(rois) if roi_class(r, class_of) is None]
    if not todo:
        return list(rois)
    names = [_display_name(r, i) for i, r in todo]
    if len(todo) > MAX_ASK:
        message(title, "%d ROIs have no class (%s ...).\nSet their group with Edit > Selection > "
                "Properties (1 foreground, 2 background) or name them fg.../bg..., then export "
                "again." % (len(todo), ", ".join(names[:10])))
        return None
    gd = GenericDialog(title)
    gd.addMessage("These ROIs have no class (group 1/2, name fg.../bg..., or a mapped colour).\n"
                  "Choose one for each:")
    choices = ["foreground", "background", "leave out"]
    for i, r in todo:  # first word 'roi<N>' is the macro key (recordable)
        gd.addChoice("ROI%d %s" % (i + 1, ("'%s'" % r.getName()) if r.getName() else "(unnamed)"),
                     choices, choices[0])
    gd.showDialog()
    if gd.wasCanceled():
        message(title, "Export cancelled; nothing written. ROIs without a class: %s"
                % ", ".join(names))
        return None
    leave = set()
    for i, r in todo:
        choice = gd.getNextChoiceIndex()
        if choice == 2:
            leave.add(i)
        else:
            r.setGroup(GROUP_FOREGROUND if choice == 0 else GROUP_BACKGROUND)
    if leave:
        IJ.log("Export Scribbles: left out on request: %s"
               % ", ".join(_display_name(rois[i], i) for i in sorted(leave)))
    return [r for i, r in enumerate(rois) if i not in leave]


# ----------------------------------------------------------------------------- import


def _open(label_path_or_imp):
    if isinstance(label_path_or_imp, ImagePlus):
        return label_path_or_imp
    path = label_path_or_imp.getPath() if hasattr(label_path_or_imp, "getPath") else str(label_path_or_imp)
    if not os.path.isfile(path):
        raise S2LFijiError("%s: no such file; give the <stem>.tif written by s2l-predict" % path)
    lab = IJ.openImage(path)
    if lab is None:
        raise S2LFijiError("%s: ImageJ cannot open this file as an image" % path)
    return lab


def _boxes(ip):
    """{label: [x0, y0, x1, y1]} (inclusive) of every non-zero value.

    Two passes of one set() per row (Java-speed iteration), over the image
    and over its 90-degree rotation, instead of a Python loop per pixel.
    """
    w, h = ip.getWidth(), ip.getHeight()
    unsigned = ip.getBitDepth() == 16  # Java shorts are signed

    def spans(pixels, width, height):
        out = {}
        for y in range(height):
            for v in set(pixels[y * width:(y + 1) * width]):
                if v:
                    s = out.get(v)
                    if s is None:
                        out[v] = [y, y]
                    else:
                        s[1] = y
        return out

    rows = spans(ip.getPixels(), w, h)
    # rotateLeft: new (x', y') = (y, w - 1 - x), so row y' is column w - 1 - y'
    cols = spans(ip.rotateLeft().getPixels(), h, w)
    boxes = {}
    for v, (y0, y1) in rows.items():
        c0, c1 = cols[v]
        key = v & 0xFFFF if unsigned else v
        boxes[key] = [w - 1 - c1, y0, w - 1 - c0, y1]
    return boxes


def label_rois(label_path_or_imp, name_prefix="cell"):
    """One ROI per object of an instance label image, named ``cell-0001`` by label.

    Each label is thresholded exactly (``setThreshold(v, v)``) inside its
    bounding box and traced with ThresholdToSelection: a traced polygon, or a
    composite ROI for objects with holes or several pieces. Filling the ROIs
    gives back exactly the labels.

    Parameters
    ----------
    label_path_or_imp : str, java.io.File or ij.ImagePlus
        8/16-bit or 32-bit image of integer labels, 0 = background.

    Returns
    -------
    (rois, label_imp) : (list of ij.gui.Roi, ij.ImagePlus), in label order
    """
    lab = _open(label_path_or_imp)
    if lab.getStackSize() > 1:
        raise S2LFijiError("%s: a stack; give a 2-D label image" % lab.getTitle())
    if lab.getBitDepth() == 24:
        raise S2LFijiError("%s: an RGB image is not a label image; give the 16-bit <stem>.tif "
                           "from s2l-predict" % lab.getTitle())
    ip = lab.getProcessor()
    boxes = _boxes(ip)
    if lab.getBitDepth() == 32:
        bad = [v for v in boxes
               if v != v or v < 0 or v > 16777216 or v != int(v)]  # NaN, negative, inexact
        if bad:
            raise S2LFijiError("%s: values such as %s are not labels (whole numbers >= 0); "
                               "is this a probability map?" % (lab.getTitle(), bad[0]))
    rois = []
    tts = ThresholdToSelection()
    for v in sorted(boxes):
        x0, y0, x1, y1 = boxes[v]
        ip.setRoi(x0, y0, x1 - x0 + 1, y1 - y0 + 1)
        crop = ip.crop()
        crop.setThreshold(v, v, ImageProcessor.NO_LUT_UPDATE)
        roi = tts.convert(crop)
        b = roi.getBounds()
        roi.setLocation(x0 + b.x, y0 + b.y)
        roi.setName("%s-%04d" % (name_prefix, int(v)))
        rois.append(roi)
    ip.resetRoi()
    return rois, lab


def add_to_overlay(imp, rois, replace_prefix=None):
    """Add ROIs to ``imp``'s overlay (dropping ROIs named ``replace_prefix-*`` first)."""
    ov = imp.getOverlay()
    if ov is None:
        ov = Overlay()
    elif replace_prefix:
        for r in list(ov.toArray()):
            n = r.getName() or ""
            if n.startswith(replace_prefix + "-"):
                ov.remove(r)
    for r in rois:
        ov.add(r)
    imp.setOverlay(ov)
    return ov


def add_to_manager(rois, imp=None, replace_prefix=None):
    """Add ROIs to the ROI Manager (a window: needs a display).

    With ``replace_prefix``, earlier ROIs named ``<replace_prefix>-*`` are
    removed first; every other ROI (the user's scribbles) stays, in order.
    """
    from ij.plugin.frame import RoiManager
    rm = RoiManager.getInstance()
    if rm is None:
        rm = RoiManager()
    if replace_prefix:
        old = list(rm.getRoisAsArray())
        keep = [r for r in old if not (r.getName() or "").startswith(replace_prefix + "-")]
        if len(keep) != len(old):
            rm.reset()
            for r in keep:
                rm.addRoi(r)
    for r in rois:
        if imp is not None:
            rm.add(imp, r, -1)
        else:
            rm.addRoi(r)
    return rm


def import_segmentation(label_path_or_imp, target="manager", imp=None, name_prefix="cell",
                        replace=False):
    """Instance labels (``s2l-predict``'s ``<stem>.tif``) -> ROIs in Fiji.

    Parameters
    ----------
    label_path_or_imp : str, java.io.File or ij.ImagePlus
    target : {'manager', 'overlay', None}
        Where the ROIs go: the ROI Manager (needs a display), the overlay of
        ``imp`` (default: the label image), or nowhere (just return them).
    imp : ij.ImagePlus, optional
        The image the segmentation belongs to (must have the same size).
    name_prefix : str
        ROIs are named ``<name_prefix>-<label>`` (label zero-padded to 4 digits).
    replace : bool
        First remove earlier ``<name_prefix>-*`` ROIs from the ROI Manager or
        the overlay (a re-import after retraining); other ROIs stay.

    Returns
    -------
    rois : list of ij.gui.Roi
        Named ``cell-0001``... by label number, in label order.
    """
    if target not in ("manager", "overlay", None):
        raise S2LFijiError("target %r: use 'manager' or 'overlay'" % (target,))
    rois, lab = label_rois(label_path_or_imp, name_prefix=name_prefix)
    if imp is not None and (imp.getWidth(), imp.getHeight()) != (lab.getWidth(), lab.getHeight()):
        raise S2LFijiError("%s is %dx%d but %s is %dx%d; import the labels predicted for this image"
                           % (lab.getTitle(), lab.getWidth(), lab.getHeight(), imp.getTitle(),
                              imp.getWidth(), imp.getHeight()))
    if target == "overlay":
        add_to_overlay(imp if imp is not None else lab, rois,
                       replace_prefix=name_prefix if replace else None)
    elif target == "manager":
        add_to_manager(rois, imp=imp, replace_prefix=name_prefix if replace else None)
    return rois


# ----------------------------------------------------------------------------- probability


def show_probability(imp, prob_path, lut="Fire", opacity=0.5, vmin=0.0, vmax=1.0):
    """Overlay a probability map on ``imp`` as a coloured, translucent ImageRoi.

    The map (``s2l-predict --prob``'s ``<stem>_prob.tif``, float 0..1) is
    scaled ``vmin..vmax`` -> 0..255 and coloured with ``lut``; an earlier
    probability overlay is replaced.

    Returns
    -------
    roi : ij.gui.ImageRoi (named 's2l-probability')
    """
    from ij.gui import ImageRoi
    from ij.plugin import LutLoader
    prob = _open(prob_path)
    if (prob.getWidth(), prob.getHeight()) != (imp.getWidth(), imp.getHeight()):
        raise S2LFijiError("%s is %dx%d but %s is %dx%d; use the probability map of this image"
                           % (prob.getTitle(), prob.getWidth(), prob.getHeight(), imp.getTitle(),
                              imp.getWidth(), imp.getHeight()))
    if not 0.0 <= opacity <= 1.0:
        raise S2LFijiError("opacity %s: use a value from 0 to 1" % opacity)
    ip = prob.getProcessor().convertToFloat()
    ip.setMinAndMax(vmin, vmax)
    bp = ip.convertToByte(True)
    cm = LutLoader.getLut(lut)  # built-in LUTs by name, else Fiji.app/luts/<name>.lut
    if cm is None:
        cm = LutLoader.getLut(lut.lower())
    if cm is None:
        raise S2LFijiError("LUT %r not found; try 'Fire', 'Grays' or 'Cyan'" % lut)
    bp.setColorModel(cm)
    roi = ImageRoi(0, 0, bp)
    roi.setOpacity(float(opacity))
    roi.setName(PROBABILITY_NAME)
    ov = imp.getOverlay()
    if ov is None:
        ov = Overlay()
    for r in list(ov.toArray()):
        if r.getName() == PROBABILITY_NAME:
            ov.remove(r)
    ov.add(roi)
    imp.setOverlay(ov)
    return roi


# ----------------------------------------------------------------------------- train / predict
# Plugins > Scribble2Label > Train / Predict run s2l-tools' command-line tools (installed in a
# Python environment of their own, not in Fiji) on the current image's folder, with their
# output in Fiji's Log window.

#: ImageJ preference holding the s2l-tools environment (a venv/conda folder, or its bin/).
ENV_PREF = "s2l.environment"


def _tool_path(folder, tool):
    """``folder``'s ``tool`` executable (bin/ or Scripts/ of an environment), or None."""
    folder = str(folder)
    for sub in ("", "bin", "Scripts"):
        for name in (tool, tool + ".exe"):
            path = os.path.join(folder, sub, name) if sub else os.path.join(folder, name)
            if os.path.isfile(path):
                return path
    return None


def set_environment(folder, save=True):
    """Remember the s2l-tools environment (the folder holding ``bin/s2l-train``).

    Parameters
    ----------
    folder : str or java.io.File
        The environment (e.g. ``/home/me/s2l-tools/.venv``) or its ``bin/`` folder.
    save : bool
        Also write ImageJ's preferences file now (otherwise at Fiji's exit).

    Returns
    -------
    folder : str
    """
    folder = folder.getPath() if hasattr(folder, "getPath") else str(folder)
    if _tool_path(folder, "s2l-train") is None:
        raise S2LFijiError("%s: no s2l-train in it (nor in its bin/); choose the Python "
                           "environment s2l-tools is installed in (e.g. its .venv folder)"
                           % folder)
    from ij import Prefs
    Prefs.set(ENV_PREF, folder)
    if save:
        Prefs.savePreferences()
    return folder


def environment(ask=True, again=False):
    """The s2l-tools environment remembered by :func:`set_environment`.

    Asked for once in a dialog (``ask``, with a display) when none is
    remembered, when it no longer holds s2l-train, or with ``again``.
    """
    from ij import Prefs
    folder = Prefs.get(ENV_PREF, "")
    if folder and not again and _tool_path(folder, "s2l-train") is not None:
        return folder
    from java.awt import GraphicsEnvironment
    if not ask or GraphicsEnvironment.isHeadless():
        raise S2LFijiError("the s2l-tools environment is not set; call "
                           "s2l_fiji.set_environment('/path/to/.venv') once")
    from ij.gui import GenericDialog
    gd = GenericDialog("Scribble2Label: s2l-tools environment")
    gd.addMessage("Where is s2l-tools installed? Choose its Python environment\n"
                  "(the folder with bin/s2l-train, e.g. s2l-tools/.venv).\n"
                  "Asked once; Fiji remembers it.")
    gd.addDirectoryField("Environment", folder or "", 40)
    gd.showDialog()
    if gd.wasCanceled():
        raise S2LFijiError("cancelled: no s2l-tools environment chosen")
    return set_environment(gd.getNextString().strip())


def run_tool(env, tool, args, log=None):
    """Run an s2l-tools command, each output line into ``log`` (default: Fiji's Log).

    Returns the output lines; raises S2LFijiError with the tool's ``error:``
    line when it fails.
    """
    from java.lang import ProcessBuilder
    from java.io import BufferedReader, InputStreamReader
    from java.util import ArrayList
    log = log or IJ.log
    exe = _tool_path(env, tool)
    if exe is None:
        raise S2LFijiError("%s: no %s in this environment; reinstall s2l-tools there or "
                           "choose another" % (env, tool))
    cmd = ArrayList()
    for part in [exe] + [str(a) for a in args]:
        cmd.add(part)
    pb = ProcessBuilder(cmd)
    pb.redirectErrorStream(True)
    pb.environment().put("PYTHONUNBUFFERED", "1")  # lines as they come, not at the end
    pb.environment().put("COLUMNS", "120")
    log("$ %s %s" % (tool, " ".join(str(a) for a in args)))
    proc = pb.start()
    reader = BufferedReader(InputStreamReader(proc.getInputStream(), "UTF-8"))
    lines = []
    while True:
        line = reader.readLine()
        if line is None:
            break
        lines.append(line)
        log(line)
    code = proc.waitFor()
    if code != 0:
        errors = [ln for ln in lines if ln.startswith("error:")]
        raise S2LFijiError("%s failed (exit %d): %s" % (
            tool, code, errors[-1][len("error:"):].strip() if errors else
            (lines[-1] if lines else "no output")))
    return lines


def image_file(imp):
    """The file ``imp`` was opened from (or saved to), or an error saying to save it."""
    info = imp.getOriginalFileInfo() if imp is not None else None
    if info is None or not info.directory or not info.fileName:
        raise S2LFijiError("%s: not saved in a file; save it first (or export the scribbles "
                           "with Export Scribbles and open DATA/images/<image>.tif)"
                           % (imp.getTitle() if imp is not None else "no image open"))
    return os.path.join(info.directory, info.fileName)


def dataset_of(imp):
    """The dataset folder DATA of an image opened from ``DATA/images/``."""
    path = image_file(imp)
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.basename(folder) != "images":
        raise S2LFijiError("%s is not in a dataset's images/ folder; export the scribbles "
                           "with Plugins > Scribble2Label > Export Scribbles and train on "
                           "that dataset" % path)
    return os.path.dirname(folder)


def train(imp, run_name="run1", options="--preset laptop", env=None, log=None):
    """Train on the dataset of the current image: s2l-scribbles, then s2l-train.

    The run goes to ``DATA/runs/<run_name>``; ``options`` are more s2l-train
    flags (default ``--preset laptop``, the CPU budget). Returns the run folder.
    """
    env = env or environment()
    data = dataset_of(imp)
    if not re.match(r"^[\w.-]+$", run_name or ""):
        raise S2LFijiError("run name %r: use letters, digits, '-', '_' or '.'" % (run_name,))
    run = os.path.join(data, "runs", run_name)
    if os.path.isdir(os.path.join(data, "rois")):
        run_tool(env, "s2l-scribbles", [data], log=log)
    run_tool(env, "s2l-train", [data, "--out", run] + (options or "").split(), log=log)
    return run


def predict(imp, run, target="manager", options="", env=None, log=None, warnings=None):
    """Segment the current image with a trained run; the cells become ROIs.

    Runs ``s2l-predict RUN <image> --out RUN/predictions`` and imports
    ``RUN/predictions/<stem>.tif`` into the ROI Manager or ``imp``'s overlay
    (``target``), replacing earlier ``cell-*`` ROIs. Returns the ROIs. Its
    warnings (e.g. an image called far more cell than any training image) are
    appended to the list ``warnings`` when one is given (they are in the Log too).
    """
    env = env or environment()
    run = run.getPath() if hasattr(run, "getPath") else str(run)
    if not (os.path.isfile(os.path.join(run, "model.pt")) or run.endswith((".pt", ".onnx"))):
        raise S2LFijiError("%s: no model.pt in it; choose a run folder written by Train "
                           "(s2l-train)" % run)
    path = image_file(imp)
    folder = run if os.path.isdir(run) else os.path.dirname(run)
    out = os.path.join(folder, "predictions")
    lines = run_tool(env, "s2l-predict", [run, path, "--out", out] + (options or "").split(),
                     log=log)
    if warnings is not None:
        warnings.extend(ln.split(": warning: ", 1)[1] for ln in lines if ": warning: " in ln)
    labels = os.path.join(out, image_stem(os.path.basename(path)) + ".tif")
    return import_segmentation(labels, target=target, imp=imp, replace=True)


__all__ += ["ENV_PREF", "set_environment", "environment", "run_tool", "image_file",
            "dataset_of", "train", "predict"]


# ----------------------------------------------------------------------------- suggestions

#: ROI group of the regions s2l-suggest proposes for new strokes (s2l_tools.labels'
#: GROUP_SUGGESTION): never a scribble class; s2l-scribbles leaves them out.
GROUP_SUGGESTION = 3


def read_roiset(path):
    """The ROIs of a RoiSet.zip, in the order of its members (ij.io.RoiDecoder)."""
    from java.io import ByteArrayOutputStream
    from java.util.zip import ZipFile
    from ij.io import RoiDecoder
    import jarray
    path = path.getPath() if hasattr(path, "getPath") else str(path)
    if not os.path.isfile(path):
        raise S2LFijiError("%s: no such file" % path)
    rois = []
    zf = ZipFile(path)
    try:
        for entry in list(zf.entries()):
            name = entry.getName()
            if not name.lower().endswith(".roi"):
                continue
            stream, buf = zf.getInputStream(entry), ByteArrayOutputStream()
            chunk = jarray.zeros(8192, "b")
            n = stream.read(chunk)
            while n > 0:
                buf.write(chunk, 0, n)
                n = stream.read(chunk)
            stream.close()
            roi = RoiDecoder(buf.toByteArray(), name).getRoi()
            if roi is None:
                raise S2LFijiError("%s: %s is not an ImageJ ROI" % (path, name))
            rois.append(roi)
    finally:
        zf.close()
    return rois


def suggestions_file(imp, folder):
    """``FOLDER/<stem>_suggestions.zip`` of the image ``imp`` (written by s2l-suggest)."""
    folder = folder.getPath() if hasattr(folder, "getPath") else str(folder)
    return os.path.join(folder, image_stem(imp.getTitle()) + "_suggestions.zip")


def suggestion_source(imp, folder):
    """What s2l-suggest scored ``imp``'s regions from (its ``suggestions.csv``): 'store',
    'prediction', 'unusual' (an image called far more cell than any training image:
    its regions are what the network calls cell there) or 'undercalled' (the network
    outlined far more cells than it called: its regions are those cells), or None (no row
    for it)."""
    import csv
    folder = folder.getPath() if hasattr(folder, "getPath") else str(folder)
    path = os.path.join(folder, "suggestions.csv")
    if not os.path.isfile(path):
        return None
    stem = image_stem(imp.getTitle())
    f = open(path, "rb")
    try:
        for row in csv.DictReader(f):
            if row.get("image") == stem:
                return row.get("source")
    finally:
        f.close()
    return None


def load_suggestions(imp, folder, target="manager"):
    """Show s2l-suggest's regions for ``imp`` in the ROI Manager or its overlay.

    Reads ``FOLDER/<stem>_suggestions.zip`` (``s2l-suggest RUN --out FOLDER``),
    removes earlier suggestions (ROIs of group :data:`GROUP_SUGGESTION`) from
    the target and adds these, so a reload after another round replaces them;
    the user's scribbles stay. Returns the ROIs added (named ``suggest_01``...,
    best first).
    """
    if imp is None:
        raise S2LFijiError("no image; open the image to show suggestions for")
    if target not in ("manager", "overlay"):
        raise S2LFijiError("target %r: use 'manager' or 'overlay'" % (target,))
    path = suggestions_file(imp, folder)
    if not os.path.isfile(path):
        raise S2LFijiError("%s: no suggestions for %s (an image without any, or s2l-suggest "
                           "not run); run s2l-suggest RUN --out %s"
                           % (path, imp.getTitle(), os.path.dirname(path)))
    rois = read_roiset(path)
    w, h = imp.getWidth(), imp.getHeight()
    from java.awt import Color
    for r in rois:
        # ImageJ gives a grouped ROI its group's colour (group 3: yellow, the usual
        # foreground stroke colour): back to s2l-suggest's magenta
        r.setStrokeColor(Color(255, 0, 255))
        b = r.getBounds()
        if b.x < 0 or b.y < 0 or b.x + b.width > w or b.y + b.height > h:
            raise S2LFijiError("%s: %s lies outside the %dx%d image %s; show the suggestions "
                               "of this image" % (path, r.getName(), w, h, imp.getTitle()))
    if target == "overlay":
        ov = imp.getOverlay() or Overlay()
        for r in list(ov.toArray()):
            if r.getGroup() == GROUP_SUGGESTION:
                ov.remove(r)
        for r in rois:
            ov.add(r)
        imp.setOverlay(ov)
        return rois
    from ij.plugin.frame import RoiManager
    rm = RoiManager.getInstance() or RoiManager()
    old = list(rm.getRoisAsArray())
    keep = [r for r in old if r.getGroup() != GROUP_SUGGESTION]
    if len(keep) != len(old):
        rm.reset()
        for r in keep:
            rm.addRoi(r)
    for r in rois:
        rm.add(imp, r, -1)
    return rois


__all__ += ["GROUP_SUGGESTION", "read_roiset", "suggestions_file", "load_suggestions"]
