#@ ImagePlus imp
#@ String (label="Run name (DATA/runs/<name>)", value="run1") run_name
#@ String (label="s2l-train options", value="--preset laptop", required=false) options
#@ Boolean (label="Choose the s2l-tools environment again", value=false) again
# Scribble2Label > Train: train on the dataset of the current image (opened from
# DATA/images/, as Export Scribbles writes it): s2l-scribbles DATA, then
# s2l-train DATA --out DATA/runs/<name> <options>, with their output in the Log.
# The s2l-tools environment (where s2l-train is installed) is asked for once.
# All the work is in Fiji.app/jars/Lib/s2l_fiji.py.
import s2l_fiji

TITLE = "Train"
try:
    env = s2l_fiji.environment(again=again)
    run = s2l_fiji.train(imp, run_name=run_name, options=options, env=env)
    s2l_fiji.message(TITLE, "Trained: %s\n(curves.png and panels/ there show how it went).\n"
                     "Next: Plugins > Scribble2Label > Predict with this run." % run)
except s2l_fiji.S2LFijiError as e:
    s2l_fiji.message(TITLE, str(e))
