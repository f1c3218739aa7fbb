# Jython 2.7 script for real ImageJ 1: open every RoiSet.zip given (reading the
# zip entries with java.util.zip and decoding them with ij.io.RoiDecoder, as the
# ROI Manager does) and fill each ROI (ip.fill(roi), Edit > Fill) into its own
# blank WIDTH x HEIGHT image, written as raw uint8 bytes to
# OUT_DIR/<zip stem>/<entry index, 4 digits>.raw; prints one line per ROI.
#
#   usage: fill_roiset.py OUT_DIR WIDTH HEIGHT ZIP [ZIP ...]
import os
import sys

from java.io import ByteArrayOutputStream
from java.util.zip import ZipFile
from ij.io import RoiDecoder
from ij.process import ByteProcessor

out_dir, width, height = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
for zpath in sys.argv[4:]:
    stem = os.path.splitext(os.path.basename(zpath))[0]
    sub = os.path.join(out_dir, stem)
    os.makedirs(sub)
    zf = ZipFile(zpath)
    entries = zf.entries()
    i = 0
    while entries.hasMoreElements():
        entry = entries.nextElement()
        stream = zf.getInputStream(entry)
        buf = ByteArrayOutputStream()
        b = stream.read()
        while b != -1:
            buf.write(b)
            b = stream.read()
        stream.close()
        roi = RoiDecoder(buf.toByteArray(), entry.getName()).getRoi()
        ip = ByteProcessor(width, height)
        ip.setColor(255)
        ip.fill(roi)
        out = open(os.path.join(sub, '%04d.raw' % i), 'wb')
        try:
            out.write(ip.getPixels().tostring())
        finally:
            out.close()
        print('%s %04d %s type=%d group=%d' % (stem, i, roi.getName(), roi.getType(), roi.getGroup()))
        i += 1
    zf.close()
print('S2L-DONE')
