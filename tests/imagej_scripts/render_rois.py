# Jython 2.7 script for real ImageJ 1: decode every .roi file in ROI_DIR and
# write the mask ImageJ makes for it as raw uint8 bytes (H*W, 0/255) to
# OUT_DIR/<name>.raw.
#
#   usage: render_rois.py ROI_DIR OUT_DIR WIDTH HEIGHT
#
# The mask is ij_reference.imagej_mask (Edit > Fill for areas and wide straight
# lines, Edit > Draw for other lines and points).
# Prints 'S2L-DONE' at the end.
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(sys.argv[0])))
from ij.io import RoiDecoder
from ij_reference import imagej_mask

roi_dir, out_dir, width, height = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
names = sorted(n for n in os.listdir(roi_dir) if n.endswith('.roi'))
for name in names:
    roi = RoiDecoder(os.path.join(roi_dir, name)).getRoi()
    ip = imagej_mask(roi, width, height)
    out = open(os.path.join(out_dir, name[:-4] + '.raw'), 'wb')
    try:
        out.write(ip.getPixels().tostring())
    finally:
        out.close()
    print('%s type=%d stroke=%s' % (name, roi.getType(), roi.getStrokeWidth()))
print('S2L-DONE')
