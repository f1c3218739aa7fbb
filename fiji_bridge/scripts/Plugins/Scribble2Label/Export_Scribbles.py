#@ ImagePlus imp
#@ File (label="Dataset folder (DATA)", style="directory") dataset
#@ String (label="Scribbles from", choices={"ROI Manager", "Overlay"}, style="radioButtonHorizontal") source
#@ String (label="Stroke colours (optional, e.g. #ffff00=fg #00ffff=bg)", value="", required=false) colours
# Scribble2Label > Export Scribbles: write DATA/images/<image>.tif and
# DATA/rois/<image>.zip (group 1 foreground, 2 background) for s2l-scribbles.
# All the work is in Fiji.app/jars/Lib/s2l_fiji.py.
import s2l_fiji

TITLE = "Export Scribbles"
try:
    class_of = s2l_fiji.parse_color_map(colours)
    rois = s2l_fiji.rois_from(imp, source)
    rois = s2l_fiji.ask_classes(rois, class_of, title=TITLE)
    if rois is not None:
        img, zp, n_fg, n_bg = s2l_fiji.export_scribbles(imp, rois, dataset, class_of=class_of)
        s2l_fiji.message(TITLE, "Wrote %s\nand %s\n(%d foreground, %d background ROIs).\n"
                         "Next: s2l-scribbles %s" % (img, zp, n_fg, n_bg, dataset))
except s2l_fiji.S2LFijiError as e:
    s2l_fiji.message(TITLE, str(e))
