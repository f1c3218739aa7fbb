# Jython 2.7 driver for tests/test_suggest.py: fiji_bridge's Show Suggestions in real
# ImageJ 1.
#
#   usage: suggestions_driver.py LIB_DIR SPEC.json
#
# SPEC holds "mode" ('headless': the overlay; 'manager': the ROI Manager, needs a
# display), "image", "folder" (s2l-suggest's --out) and "menu". Prints 'KEY value'
# lines, then 'S2L-DONE'.
import json
import os
import sys

sys.path.insert(0, sys.argv[1])
spec = json.load(open(sys.argv[2]))

from java.io import File
from java.lang import System
from ij import IJ, WindowManager
from ij.gui import Roi

import s2l_fiji


def out(key, *values):
    print(" ".join([key] + [str(v) for v in values]))


def describe(rois):
    return json.dumps([[r.getName(), r.getGroup(), s2l_fiji._hex(r.getStrokeColor()),
                        len(r.getContainedPoints())] for r in rois])


try:
    imp = IJ.openImage(spec["image"])
    if spec["mode"] == "headless":
        rois = s2l_fiji.load_suggestions(imp, spec["folder"], target="overlay")
        out("LOADED", describe(rois))
        scribble = Roi(1, 1, 3, 3)
        scribble.setName("fg-keep")
        scribble.setGroup(1)
        imp.getOverlay().add(scribble)
        s2l_fiji.load_suggestions(imp, spec["folder"], target="overlay")  # again: replaced
        out("OVERLAY", json.dumps([r.getName() for r in imp.getOverlay().toArray()]))
        try:
            s2l_fiji.load_suggestions(imp, spec["empty"], target="overlay")
        except s2l_fiji.S2LFijiError as e:
            out("MISSING", str(e))
        WindowManager.setTempCurrentImage(imp)
        execfile(os.path.join(spec["menu"], "Show_Suggestions.py"),
                 {"imp": imp, "folder": File(spec["folder"]), "target": "Overlay",
                  "__name__": "__main__"})
    else:
        from ij.plugin.frame import RoiManager
        rm = RoiManager()
        keep = Roi(1, 1, 3, 3)
        keep.setName("bg-keep")
        keep.setGroup(2)
        rm.addRoi(keep)
        execfile(os.path.join(spec["menu"], "Show_Suggestions.py"),
                 {"imp": imp, "folder": File(spec["folder"]), "target": "ROI Manager",
                  "__name__": "__main__"})
        s2l_fiji.load_suggestions(imp, spec["folder"], target="manager")  # again: replaced
        out("MANAGER", json.dumps([r.getName() for r in rm.getRoisAsArray()]))
except:  # noqa: E722 - report anything, then exit (a window would keep the JVM alive)
    import traceback
    traceback.print_exc()
    sys.stdout.flush()
    System.exit(1)
print("S2L-DONE")
sys.stdout.flush()
System.exit(0)
