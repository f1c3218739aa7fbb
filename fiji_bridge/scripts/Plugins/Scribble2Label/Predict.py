#@ ImagePlus imp
#@ File (label="Run folder (written by Train / s2l-train)", style="directory") run
#@ String (label="Add cells to", choices={"ROI Manager", "Overlay"}, style="radioButtonHorizontal") target
#@ String (label="s2l-predict options (e.g. --watershed)", value="", required=false) options
#@ Boolean (label="Choose the s2l-tools environment again", value=false) again
# Scribble2Label > Predict: segment the current image (saved in a file) with a trained
# run: s2l-predict RUN <image> --out RUN/predictions <options>, output in the Log;
# the cells are added as ROIs (cell-0001 ...; earlier cell ROIs replaced).
# All the work is in Fiji.app/jars/Lib/s2l_fiji.py.
import textwrap

import s2l_fiji

TITLE = "Predict"
try:
    env = s2l_fiji.environment(again=again)
    where = "manager" if target == "ROI Manager" else "overlay"
    warnings = []
    rois = s2l_fiji.predict(imp, run, target=where, options=options, env=env,
                            warnings=warnings)
    text = "%d cells found in %s" % (len(rois), imp.getTitle())
    for warning in warnings:  # e.g. far more cell than on any training image: look at it
        text += "\n\nWarning: " + textwrap.fill(warning, 90)
    s2l_fiji.message(TITLE, text)
except s2l_fiji.S2LFijiError as e:
    s2l_fiji.message(TITLE, str(e))
