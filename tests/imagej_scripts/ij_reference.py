# Jython 2.7, for the test scripts beside it: the mask ImageJ itself makes for
# one ROI, the reference that s2l_tools.io.roi.rasterize_roi is checked against.
#
# Area ROIs:                    ip.fill(roi)                       (Edit > Fill)
# Straight lines wider than 1:  ip.fillPolygon(roi.getPolygon())   (Edit > Fill)
# Other lines and points:       roi.drawPixels(ip)                 (Edit > Draw)
from ij.gui import Roi
from ij.process import ByteProcessor


def imagej_mask(roi, width, height):
    """A ByteProcessor, 255 where ImageJ marks ``roi``, else 0."""
    ip = ByteProcessor(width, height)
    ip.setColor(255)
    ip.setLineWidth(1)
    if roi.isArea():
        ip.fill(roi)
    elif roi.getType() == Roi.LINE and roi.getStrokeWidth() > 1:
        ip.fillPolygon(roi.getPolygon())
    else:
        roi.drawPixels(ip)
    return ip
