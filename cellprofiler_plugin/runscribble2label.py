__doc__ = """\
RunScribble2Label
=================

**RunScribble2Label** segments cells with a U-Net trained by **s2l-tools**
(Scribble2Label: a few scribbles drawn in Fiji are enough to train it) and
exported to ONNX with ``s2l-export RUN --out model.onnx``.

The network runs on overlapping tiles of the image through ONNX Runtime (on an
NVIDIA GPU when ``onnxruntime-gpu`` is installed, otherwise on the CPU); the
foreground probability is thresholded, holes are filled, touching cells can be
split, and small objects are removed. The result is the same as
``s2l-predict`` gives for the model outside CellProfiler.

|

============ ============ ===============
Supports 2D? Supports 3D? Respects masks?
============ ============ ===============
YES          NO           NO
============ ============ ===============

Installation
^^^^^^^^^^^^
Run ``s2l-cellprofiler install --plugins-dir DIR`` and point CellProfiler's
plugins directory at ``DIR`` (*File > Preferences*, or
``--plugins-directory DIR`` on the command line). It copies this module and
its three helper files (``_s2l_onnx_inference.py``, ``_s2l_tiling.py``,
``_s2l_postprocess.py``). CellProfiler's Python needs ``onnxruntime``
(``python -m pip install onnxruntime==1.19.2``).

Inputs
^^^^^^
A grayscale image for a one-channel model; a color image (load it as
*Color image* in **NamesAndTypes**) for a multi-channel model. Intensities
may have any scale: each channel is normalised by its own percentiles, as
during training.

Measurements made by this module
^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^
**Image measurements:**

-  *Count:* the number of objects found.
-  *Scribble2Label\\_ForegroundShare:* the share of the image's pixels
   inside the objects (0 to 1).
-  *Scribble2Label\\_Unusual:* 1 when the objects cover far more of the
   image than the network called cell on any of its training images (more
   than 1.5 times the largest share it had there, and more than 40 % of the
   image), else 0; empty (NaN) for a model trained without
   ``--auto-threshold`` (the laptop preset records the share). A network
   trained on scribbles tends to call much of the background cell on a kind
   of image its scribbles did not cover (grainy, dim, another stain): filter
   or flag such images (e.g. with **FlagImage**, as the example pipeline of
   ``s2l-cellprofiler pipeline`` does), look at them, and if the
   objects are wrong, scribble one such image and retrain. ``s2l-predict``
   warns about the same images.
-  *Scribble2Label\_UnderCalled:* 1 when the network outlined far more
   cells in the image than it called (faint parts of the probability map,
   over 0.1 but with under 30 % of them above the threshold, make at least
   30 % of all it saw and 1 % of the image), else 0. A network that meets a
   kind of cell its scribbles barely showed often misses them this way: the
   objects then miss cells. The example pipeline flags such images with
   **FlagImage** too. ``s2l-predict`` warns about the same images. For a
   model trained on about five images, try *Brightness gains to average*
   1,1.5,2.

**Object measurements:**

-  *Location\\_X, Location\\_Y:* the center of mass of each object.
-  *Number\\_Object\\_Number:* the object's number (1..Count).

Technical notes
^^^^^^^^^^^^^^^
The model file carries everything this module needs (input channels,
normalisation, tile size and overlap, suggested threshold and minimum
object size). The ONNX Runtime session is loaded once per model file and
reused for every image (it is reloaded when the file changes).

On the CPU each session uses one thread per core. When CellProfiler runs
several workers, set the environment variable ``S2L_ORT_THREADS`` (e.g. to
1 with one worker per core) so that they do not compete for the cores. On a
GPU, memory grows only as needed, so several workers can share one GPU.

References
^^^^^^^^^^
-  Lee H, Jeong W-K (2020) "Scribble2Label: Scribble-supervised cell
   segmentation via self-generating pseudo-labels with consistency."
   *MICCAI 2020*, LNCS 12261, 14-23.
   (`link <https://doi.org/10.1007/978-3-030-59710-8_2>`__)
"""

import os
import sys

import numpy
from cellprofiler_core.image import Image
from cellprofiler_core.module.image_segmentation import ImageSegmentation
from cellprofiler_core.object import Objects
from cellprofiler_core.setting import Binary, ValidationError
from cellprofiler_core.setting.choice import Choice
from cellprofiler_core.setting.text import Float, ImageName, Integer, Pathname, Text

DECLUMP_NONE = "None"
DECLUMP_SHAPE = "Shape (watershed)"
_DECLUMP = {DECLUMP_NONE: "none", DECLUMP_SHAPE: "watershed"}

C_S2L = "Scribble2Label"
FTR_SHARE, FTR_UNUSUAL, FTR_UNDER = "ForegroundShare", "Unusual", "UnderCalled"

_INSTALL = "reinstall the plugin with: s2l-cellprofiler install --plugins-dir DIR"


def centers_of_labels(labels):
    """(y, x) centre of mass of each object of a 2-D label matrix, in label order.

    The same numbers as ``Objects.center_of_mass()`` (scipy's center_of_mass
    over the labels present), from ``numpy.bincount`` over the objects' pixels
    only (the sums of whole-number coordinates are exact in float64, so the
    order of summation does not matter).

    Parameters
    ----------
    labels : (H, W) int ndarray
        0 = background.

    Returns
    -------
    centers : (N, 2) float64 ndarray
        One row per label present, in increasing label order.
    """
    labels = numpy.asarray(labels)
    flat = labels.ravel()
    if flat.size == 0 or flat.max() <= 0:
        return numpy.zeros((0, 2))
    n = int(flat.max()) + 1
    inside = numpy.flatnonzero(flat)
    owner = flat[inside]
    rows, cols = numpy.divmod(inside, labels.shape[1])
    counts = numpy.bincount(owner, minlength=n)
    row_sums = numpy.bincount(owner, weights=rows, minlength=n)
    col_sums = numpy.bincount(owner, weights=cols, minlength=n)
    present = numpy.flatnonzero(counts[1:]) + 1
    return numpy.stack(
        [row_sums[present] / counts[present], col_sums[present] / counts[present]], 1
    )


def _inference():
    """The shared inference module (``_s2l_onnx_inference.py`` beside this file).

    Imported on first use so that a missing helper gives a clear error in
    the module instead of the module vanishing from CellProfiler.
    """
    here = os.path.dirname(os.path.abspath(__file__))
    if here not in sys.path:
        sys.path.append(here)
    try:
        import _s2l_onnx_inference

        return _s2l_onnx_inference
    except ImportError as first:
        try:  # a development install of s2l-tools in CellProfiler's Python
            from s2l_tools.inference import onnx as onnx_inference

            return onnx_inference
        except ImportError:
            raise ImportError(
                "RunScribble2Label: cannot import its helper _s2l_onnx_inference ({}); "
                "{}".format(first, _INSTALL)
            ) from None


class RunScribble2Label(ImageSegmentation):
    category = "Object Processing"

    module_name = "RunScribble2Label"

    variable_revision_number = 3

    def create_settings(self):
        super(RunScribble2Label, self).create_settings()
        self.y_name.value = "Cells"

        self.model_path = Pathname(
            "Model file",
            "",
            wildcard="ONNX model (*.onnx)|*.onnx|All files (*.*)|*.*",
            doc="""\
The ONNX file written by ``s2l-export RUN --out model.onnx`` (its full
path).""",
        )

        self.use_model_threshold = Binary(
            "Use the model's probability threshold?",
            True,
            doc="""\
Select *Yes* to use the threshold stored in the model file (set when it was
trained, usually 0.5). Select *No* to enter your own.""",
        )

        self.threshold = Float(
            "Probability threshold",
            0.5,
            minval=0.0,
            maxval=0.999,
            doc="""\
*(Used only when not using the model's threshold)*

A pixel belongs to a cell when the network's foreground probability is
above this value. Raise it to shrink objects and drop faint ones, lower it
to grow them.""",
        )

        self.use_model_min_size = Binary(
            "Use the model's minimum object size?",
            True,
            doc="""\
Select *Yes* to use the minimum object size stored in the model file.
Select *No* to enter your own.""",
        )

        self.min_size = Integer(
            "Minimum object size (pixels)",
            32,
            minval=0,
            doc="""\
*(Used only when not using the model's minimum size)*

Objects smaller than this area, in pixels, are discarded. 0 keeps all.""",
        )

        self.declump = Choice(
            "Method to distinguish clumped objects",
            [DECLUMP_NONE, DECLUMP_SHAPE],
            DECLUMP_SHAPE,
            doc="""\
-  *{none}:* every connected region of foreground is one object.
-  *{shape}:* touching cells are split by a watershed of the distance
   transform, seeded at its peaks (cells that are roughly round split
   well). The default: on the DSB nuclei it found many more of the
   nuclei that touch (F1 at IoU 0.5 up by 0.07-0.13 on fluorescence
   images) at the same foreground overlap.""".format(none=DECLUMP_NONE, shape=DECLUMP_SHAPE),
        )

        self.fill_holes = Binary(
            "Fill holes in identified objects?",
            True,
            doc="Select *Yes* to fill background enclosed by a single object.",
        )

        self.tile_size = Integer(
            "Tile size (pixels; 0 for the model's)",
            0,
            minval=0,
            doc="""\
The network sees the image in overlapping square tiles of this size
(a multiple of 32). 0 uses the tile size the model was trained with.
Smaller tiles need less memory; the result hardly changes.""",
        )

        self.flips = Binary(
            "Average over flipped copies?",
            True,
            doc="""\
Select *Yes* to predict each tile four times (as it is, flipped left-right,
up-down and both) and average the four results, as ``s2l-predict`` does by
default: slightly better objects (+0.006-0.008 foreground IoU on DSB nuclei) at
four times the network's time. Select *No* for large screens where speed
matters more. Pipelines saved before this setting existed load with *No*,
so they keep giving the same objects.""",
        )

        self.gains = Text(
            "Brightness gains to average",
            "1",
            doc="""\
The network predicts the image (after its normalisation) multiplied by each of
these gains, separated by commas, and averages the results, as ``s2l-predict
--gains`` does. *1* (the default): the image as it is. *1,1.5,2* for a model
trained on about five images that calls dim nuclei background: on DSB
nuclei, models trained on 5 scribbled images rose from 0.719 to 0.754
foreground IoU (8 of 9 models); with 8 images it did not help, and models
trained on 40 images lost about 0.02. Each gain is one more prediction's
time.""",
        )

        self.save_probability = Binary(
            "Save the probability image?",
            False,
            doc="""\
Select *Yes* to add the network's foreground probability (0 to 1) to the
image set, e.g. to save it with **SaveImages** or to threshold it yourself.""",
        )

        self.probability_name = ImageName(
            "Name the probability image",
            "Scribble2LabelProbability",
            doc="""\
*(Used only when saving the probability image)*

The name of the foreground probability image.""",
        )

    def settings(self):
        return [
            self.x_name,
            self.y_name,
            self.model_path,
            self.use_model_threshold,
            self.threshold,
            self.use_model_min_size,
            self.min_size,
            self.declump,
            self.fill_holes,
            self.tile_size,
            self.flips,
            self.gains,
            self.save_probability,
            self.probability_name,
        ]

    def visible_settings(self):
        result = [self.x_name, self.y_name, self.model_path, self.use_model_threshold]
        if not self.use_model_threshold.value:
            result.append(self.threshold)
        result.append(self.use_model_min_size)
        if not self.use_model_min_size.value:
            result.append(self.min_size)
        result += [self.declump, self.fill_holes, self.tile_size, self.flips, self.gains,
                   self.save_probability]
        if self.save_probability.value:
            result.append(self.probability_name)
        return result

    def volumetric(self):
        return False

    def model_file(self):
        return self.model_path.value.strip()

    def validate_module(self, pipeline):
        path = self.model_file()
        if not path:
            raise ValidationError(
                "Choose the model file (the .onnx file written by s2l-export)",
                self.model_path,
            )
        try:
            _inference().read_meta(path)  # reads a few bytes, not the weights
        except (ValueError, ImportError) as exc:
            raise ValidationError(str(exc), self.model_path)
        tile = self.tile_size.value
        if tile != 0 and (tile < 32 or tile % 32):
            raise ValidationError(
                "The tile size must be 0 (the model's) or a multiple of 32, e.g. 512; "
                "got {}".format(tile),
                self.tile_size,
            )
        try:
            _inference().parse_gains(self.gains.value)
        except ValueError as exc:
            raise ValidationError(str(exc), self.gains)

    def run(self, workspace):
        inference = _inference()
        x = workspace.image_set.get_image(self.x_name.value)
        if x.volumetric:
            raise ValueError(
                "RunScribble2Label segments 2-D images; {} is a volume".format(
                    self.x_name.value
                )
            )
        data = x.pixel_data
        # CellProfiler's color images are (H, W, C); the model takes (C, H, W)
        channels_first = numpy.moveaxis(data, -1, 0) if x.multichannel else data[None]

        session = inference.load_session(self.model_file())
        meta = inference.model_meta(session)
        in_channels = int(meta["in_channels"])
        if channels_first.shape[0] != in_channels:
            raise ValueError(
                "Image {} has {} channel(s) but the model {} takes {}; load the image as "
                "{} in NamesAndTypes".format(
                    self.x_name.value,
                    channels_first.shape[0],
                    os.path.basename(self.model_file()),
                    in_channels,
                    "a Grayscale image" if in_channels == 1 else "a Color image",
                )
            )

        labels, probability = inference.segment(
            session,
            channels_first,
            threshold=None if self.use_model_threshold.value else self.threshold.value,
            min_size=None if self.use_model_min_size.value else self.min_size.value,
            declump=_DECLUMP[self.declump.value],
            fill_holes=self.fill_holes.value,
            tile=self.tile_size.value or None,
            flips=self.flips.value,
            gains=inference.parse_gains(self.gains.value),
        )

        objects = Objects()
        objects.segmented = labels
        objects.parent_image = x
        workspace.object_set.add_objects(objects, self.y_name.value)
        self.add_measurements(workspace, labels=labels)
        share = inference.mask_share(labels)
        limit = inference.unusual_limit(meta.get("train_share_max"))
        unusual = numpy.nan if limit is None else float(share > limit)
        cut = meta.get("threshold", 0.5) if self.use_model_threshold.value else self.threshold.value
        under = float(inference.under_called(probability, cut))
        self.add_image_measurement(workspace, FTR_SHARE, share)
        self.add_image_measurement(workspace, FTR_UNUSUAL, unusual)
        self.add_image_measurement(workspace, FTR_UNDER, under)

        if self.save_probability.value:
            workspace.image_set.add(
                self.probability_name.value, Image(probability, parent_image=x)
            )

        if self.show_window:
            workspace.display_data.x_data = data
            workspace.display_data.y_data = labels
            workspace.display_data.probability = probability
            workspace.display_data.dimensions = x.dimensions
            workspace.display_data.share = share
            workspace.display_data.unusual = unusual
            workspace.display_data.under = under

    def image_feature(self, feature):
        """The image measurement ``Scribble2Label_<feature>_<objects name>``."""
        return "_".join((C_S2L, feature, self.y_name.value))

    def add_image_measurement(self, workspace, feature, value):
        """Record :meth:`image_feature` ``feature`` for this image."""
        from cellprofiler_core.constants.measurement import IMAGE

        workspace.measurements.add_measurement(IMAGE, self.image_feature(feature), value)

    def get_measurement_columns(self, pipeline, object_name=None):
        from cellprofiler_core.constants.measurement import COLTYPE_FLOAT, IMAGE

        columns = super(RunScribble2Label, self).get_measurement_columns(pipeline, object_name)
        for feature in (FTR_SHARE, FTR_UNUSUAL, FTR_UNDER):
            columns.append((IMAGE, self.image_feature(feature), COLTYPE_FLOAT))
        return columns

    def get_categories(self, pipeline, object_name):
        from cellprofiler_core.constants.measurement import IMAGE

        categories = super(RunScribble2Label, self).get_categories(pipeline, object_name)
        if object_name == IMAGE:
            categories = categories + [C_S2L]
        return categories

    def get_measurements(self, pipeline, object_name, category):
        from cellprofiler_core.constants.measurement import IMAGE

        if object_name == IMAGE and category == C_S2L:
            return [FTR_SHARE, FTR_UNUSUAL, FTR_UNDER]
        return super(RunScribble2Label, self).get_measurements(pipeline, object_name, category)

    def get_measurement_objects(self, pipeline, object_name, category, measurement):
        from cellprofiler_core.constants.measurement import IMAGE

        if object_name == IMAGE and category == C_S2L and measurement in (
                FTR_SHARE, FTR_UNUSUAL, FTR_UNDER):
            return [self.y_name.value]
        return []

    def add_measurements(self, workspace, object_name=None, labels=None):
        """ImageSegmentation's measurements (Location_Center_X/Y/Z, Number_Object_Number,
        Count), with the centres from :func:`centers_of_labels`.

        CellProfiler's own version finds them with two ``numpy.unique`` sorts and
        ``scipy.ndimage.center_of_mass`` over the label matrix: about 0.1 s of a
        1024 x 1024 image's time in this module, where ``bincount`` over the objects'
        pixels takes about 5 ms (benchmarks/cellprofiler_bench.py).
        """
        if labels is None:
            return super().add_measurements(workspace, object_name)
        from cellprofiler_core.constants.measurement import (
            FF_COUNT,
            IMAGE,
            M_LOCATION_CENTER_X,
            M_LOCATION_CENTER_Y,
            M_LOCATION_CENTER_Z,
            M_NUMBER_OBJECT_NUMBER,
        )

        name = object_name or self.y_name.value
        centers = centers_of_labels(labels)
        count = len(centers)
        m = workspace.measurements
        m.add_measurement(name, M_LOCATION_CENTER_X, centers[:, 1] if count else [])
        m.add_measurement(name, M_LOCATION_CENTER_Y, centers[:, 0] if count else [])
        m.add_measurement(name, M_LOCATION_CENTER_Z, [0] * count)
        m.add_measurement(name, M_NUMBER_OBJECT_NUMBER, numpy.arange(1, count + 1))
        m.add_measurement(IMAGE, FF_COUNT % name, numpy.array([count], dtype=float))

    def display(self, workspace, figure):
        d = workspace.display_data
        figure.set_subplots(dimensions=d.dimensions, subplots=(3, 1))
        if d.x_data.ndim == 3:
            figure.subplot_imshow_color(0, 0, d.x_data, title=self.x_name.value, normalize=True)
        else:
            figure.subplot_imshow_grayscale(0, 0, d.x_data, title=self.x_name.value)
        title = "{} ({} objects, {:.0f} % of the image{}{})".format(
            self.y_name.value,
            int(d.y_data.max()),
            100 * d.share,
            "; unusual: far more than in training" if d.unusual == 1 else "",
            "; cells outlined, not called" if d.under == 1 else "",
        )
        figure.subplot_imshow_labels(
            1,
            0,
            d.y_data,
            title=title,
            sharexy=figure.subplot(0, 0),
        )
        figure.subplot_imshow(
            2,
            0,
            d.probability,
            title="Foreground probability",
            colormap="viridis",
            colorbar=True,
            vmin=0,
            vmax=1,
            sharexy=figure.subplot(0, 0),
        )

    def upgrade_settings(self, setting_values, variable_revision_number, module_name):
        # When settings() changes, bump variable_revision_number and convert
        # the older values here, one step per revision (with a test per step).
        if variable_revision_number == 1:
            # revision 2 added "Average over flipped copies?" after the tile size;
            # older pipelines keep their results: No
            setting_values = setting_values[:10] + ["No"] + setting_values[10:]
            variable_revision_number = 2
        if variable_revision_number == 2:
            # revision 3 added "Brightness gains to average" after the flips: 1, as before
            setting_values = setting_values[:11] + ["1"] + setting_values[11:]
            variable_revision_number = 3
        return setting_values, variable_revision_number
