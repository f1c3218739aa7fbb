#@ ImagePlus imp
#@ File (label="Probability map from s2l-predict (<stem>_prob.tif)", style="extensions:tif/tiff") prob
#@ String (label="LUT", choices={"Fire", "Cyan Hot", "Green", "Magenta", "Grays"}) lut
#@ Double (label="Opacity", value=0.5, min=0.0, max=1.0, stepSize=0.1, style="slider") opacity
# Scribble2Label > Show Probability: overlay the foreground probability on the
# current image (replacing an earlier one). Work in Fiji.app/jars/Lib/s2l_fiji.py.
import s2l_fiji

try:
    s2l_fiji.show_probability(imp, prob, lut=lut, opacity=opacity)
except s2l_fiji.S2LFijiError as e:
    s2l_fiji.message("Show Probability", str(e))
