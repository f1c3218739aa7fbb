#@ File (label="Labels from s2l-predict (<stem>.tif)", style="extensions:tif/tiff") labels
#@ String (label="Add ROIs to", choices={"ROI Manager", "Overlay"}, style="radioButtonHorizontal") target
#@ Boolean (label="Replace earlier cell ROIs", value=true) replace
# Scribble2Label > Import Segmentation: one ROI per predicted cell (cell-0001 ...),
# added to the ROI Manager or to the overlay of the current image, for checking
# and correcting. All the work is in Fiji.app/jars/Lib/s2l_fiji.py.
from ij import WindowManager
import s2l_fiji

TITLE = "Import Segmentation"
try:
    imp = WindowManager.getCurrentImage()
    where = "manager" if target == "ROI Manager" else "overlay"
    if where == "overlay" and imp is None:
        raise s2l_fiji.S2LFijiError("open the image the labels belong to first (the overlay goes on it)")
    rois = s2l_fiji.import_segmentation(labels, target=where, imp=imp, replace=replace)
    s2l_fiji.message(TITLE, "%d cells imported from %s" % (len(rois), labels.getName()))
except s2l_fiji.S2LFijiError as e:
    s2l_fiji.message(TITLE, str(e))
