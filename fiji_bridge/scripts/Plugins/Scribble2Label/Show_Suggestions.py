#@ ImagePlus imp
#@ File (label="Suggestions folder (s2l-suggest RUN --out FOLDER)", style="directory") folder
#@ String (label="Show in", choices={"ROI Manager", "Overlay"}) target
# Scribble2Label > Show Suggestions: the regions where new strokes would help most
# (s2l-suggest's FOLDER/<image>_suggestions.zip, magenta, group 3) for the current
# image, replacing earlier suggestions; the scribbles stay. Draw strokes there,
# export them, and retrain with s2l-train DATA --out NEW --from RUN.
# Work in Fiji.app/jars/Lib/s2l_fiji.py.
import s2l_fiji

try:
    rois = s2l_fiji.load_suggestions(imp, folder,
                                     target="overlay" if target == "Overlay" else "manager")
    text = "%d suggested region(s) for %s" % (len(rois), imp.getTitle())
    source = s2l_fiji.suggestion_source(imp, folder)
    if source == "unusual":
        text += ("\n\nThe network calls far more of this image cell than of any training image:"
                 "\nit may be unlike the images you scribbled. The regions are what it calls"
                 "\ncell here: look at them and scribble what they really are.")
    elif source == "undercalled":
        text += ("\n\nThe network outlined far more cells in this image than it called:"
                 "\nits mask may miss cells. The regions are cells it outlined and did not"
                 "\ncall: scribble the cells there.")
    s2l_fiji.message("Show Suggestions", text)
except s2l_fiji.S2LFijiError as e:
    s2l_fiji.message("Show Suggestions", str(e))
