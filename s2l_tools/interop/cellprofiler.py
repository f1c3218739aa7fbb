"""Install the RunScribble2Label module into CellProfiler 4.2 (the work of
``s2l-cellprofiler``, whose command line is :mod:`s2l_tools.cli.cellprofiler`).

:func:`install_plugin` (``s2l-cellprofiler install --plugins-dir DIR``) copies
the module (``cellprofiler_plugin/runscribble2label.py``) and its helpers into
``DIR``: ``s2l_tools/inference/onnx.py``, ``tiling.py`` and ``postprocess.py``
become ``_s2l_onnx_inference.py``, ``_s2l_tiling.py`` and ``_s2l_postprocess.py``
(CellProfiler imports every ``*.py`` file of its plugins folder that does not
start with ``_`` as a module). The plugin segments with
:func:`s2l_tools.inference.onnx.segment`; ``s2l-predict`` loads ``.onnx``
models with the same session loader and metadata reader and runs them through
:func:`s2l_tools.inference.predict.predict_image`, with the same tiling and
post-processing modules (the tests check that the results agree).

:func:`write_pipeline` (``s2l-cellprofiler pipeline --model model.onnx --out
example.cppipe``) writes a ready-to-run pipeline. By default it needs no
CellProfiler: :func:`pipeline_text` writes the file as CellProfiler 4.2 saves it
(the tests check it is byte for byte what CellProfiler 4.2.8.1 writes, and that
it runs there). With ``python=`` (``--python PY``) it is built instead by
``cellprofiler_plugin/examples/make_pipeline.py`` run with that CellProfiler's
own Python (it needs ``cellprofiler_core``), so its settings follow that
installation.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Sequence
from pathlib import Path

from s2l_tools.io.atomic import atomic_path
from s2l_tools.errors import S2LError
from s2l_tools.inference.tiling import gains_problem

__all__ = ["PLUGIN_FILE", "HELPERS", "plugin_source_dir", "install_plugin", "pipeline_text",
           "write_pipeline"]

PLUGIN_FILE = "runscribble2label.py"
#: the example pipeline's FlagImage flags, ``Metadata_<name>``, and the module's image
#: measurement each is 1 on (``Scribble2Label_<feature>_<objects>``)
FLAGS = (("Scribble2LabelUnusual", "Unusual"), ("Scribble2LabelUnderCalled", "UnderCalled"))
#: package module -> name of the copy beside the plugin
HELPERS = {
    "inference/onnx.py": "_s2l_onnx_inference.py",
    "inference/tiling.py": "_s2l_tiling.py",
    "inference/postprocess.py": "_s2l_postprocess.py",
}
_PACKAGE_DIR = Path(__file__).resolve().parent.parent  # s2l_tools/


def plugin_source_dir() -> Path:
    """The folder holding ``runscribble2label.py`` and ``examples/make_pipeline.py``.

    Looked up as package data (``s2l_tools/cellprofiler_plugin``, for a wheel
    that ships it) and then in the source checkout (``cellprofiler_plugin``
    beside ``s2l_tools``, for an editable install).

    Raises
    ------
    S2LError
        Neither exists (a wheel built without the plugin).
    """
    candidates = [_PACKAGE_DIR / "cellprofiler_plugin", _PACKAGE_DIR.parent / "cellprofiler_plugin"]
    for folder in candidates:
        if (folder / PLUGIN_FILE).is_file():
            return folder
    raise S2LError(f"{candidates[-1] / PLUGIN_FILE}: the CellProfiler plugin is not part of this "
                   "installation; install s2l-tools from its source checkout (pip install -e .)")


def install_plugin(plugins_dir: str | os.PathLike) -> list[Path]:
    """Copy the plugin and its helper files into a CellProfiler plugins folder.

    Parameters
    ----------
    plugins_dir : path-like
        CellProfiler's plugins folder; created if missing. Earlier copies of
        these four files are replaced; nothing else there is touched.

    Returns
    -------
    written : list of Path
        The four files, plugin first.
    """
    plugins_dir = Path(plugins_dir)
    if plugins_dir.exists() and not plugins_dir.is_dir():
        raise S2LError(f"--plugins-dir {plugins_dir}: exists and is not a folder; give "
                       "CellProfiler's plugins folder")
    sources = [(plugin_source_dir() / PLUGIN_FILE, PLUGIN_FILE)]
    sources += [(_PACKAGE_DIR / src, dst) for src, dst in HELPERS.items()]
    for src, _ in sources:
        if not src.is_file():
            raise S2LError(f"{src}: missing from this installation; reinstall s2l-tools")
    # helpers first, the plugin last: the plugin never appears without them
    for src, dst in sources[1:] + sources[:1]:
        with atomic_path(plugins_dir / dst) as tmp:
            tmp.write_bytes(src.read_bytes())
            tmp.chmod(0o644)  # mkstemp makes 0600; a shared plugins folder needs readable files
    return [plugins_dir / dst for _, dst in sources]


def _cellprofiler_python(python: str | os.PathLike) -> Path:
    path = Path(python)
    if not path.is_file():
        raise S2LError(f"{path}: no CellProfiler Python here; give the Python that CellProfiler "
                       "runs in (e.g. its venv's bin/python; scripts/build_cellprofiler_venv.sh "
                       "builds one), or leave out --python to write the pipeline without it")
    return path


# The modules of the example pipeline whose settings do not depend on the model, as
# CellProfiler 4.2.8.1 saves them (module name: variable revision, notes, setting lines).
_FIXED_MODULES = {
    'Images': (2, (
        "['To begin creating your project, use the Images module to compile a list of "
        'files and/or folders that you want to analyze. You can also specify a set of '
        "rules to include only the desired files in your selected folders.']"
    ), (
        ':',
        'Filter images?:Images only',
        'Select the rule criteria:and (extension does isimage) '
        '(directory doesnot containregexp "[\\\\\\\\/]\\\\.")',
    )),
    'Metadata': (6, (
        "['The Metadata module optionally allows you to extract information describing "
        'your images (i.e, metadata) which will be stored along with your measurements. '
        'This information can be contained in the file name and/or location, or in an '
        "external file.']"
    ), (
        'Extract metadata?:No',
        'Metadata data type:Text',
        'Metadata types:{}',
        'Extraction method count:1',
        'Metadata extraction method:Extract from file/folder names',
        'Metadata source:File name',
        'Regular expression to extract from file name:'
        '^(?P<Plate>.*)_(?P<Well>[A-P][0-9]{2})_s(?P<Site>[0-9])_w(?P<ChannelNumber>[0-9])',
        'Regular expression to extract from folder name:(?P<Date>[0-9]{4}_[0-9]{2}_[0-9]{2})$',
        'Extract metadata from:All images',
        'Select the filtering criteria:and (file does contain "")',
        'Metadata file location:Elsewhere...|',
        'Match file and image metadata:[]',
        'Use case insensitive matching?:No',
        'Metadata file name:None',
        'Does cached metadata exist?:No',
    )),
    'NamesAndTypes': (8, (
        "['The NamesAndTypes module allows you to assign a meaningful name to each image "
        "by which other modules will refer to it.']"
    ), (
        'Assign a name to:All images',
        'Select the image type:Grayscale image',
        'Name to assign these images:{image}',
        'Match metadata:[]',
        'Image set matching method:Order',
        'Set intensity range from:Image metadata',
        'Assignments count:1',
        'Single images count:0',
        'Maximum intensity:255.0',
        'Process as 3D?:No',
        'Relative pixel spacing in X:1.0',
        'Relative pixel spacing in Y:1.0',
        'Relative pixel spacing in Z:1.0',
        'Select the rule criteria:and (file does contain "")',
        'Name to assign these images:{image}',
        'Name to assign these objects:Cell',
        'Select the image type:Grayscale image',
        'Set intensity range from:Image metadata',
        'Maximum intensity:255.0',
    )),
    'Groups': (2, (
        "['The Groups module optionally allows you to split your list of images into "
        'image subsets (groups) which will be processed independently of each other. '
        'Examples of groupings include screening batches, microtiter plates, time-lapse '
        "movies, etc.']"
    ), (
        'Do you want to group your images?:No',
        'grouping metadata count:1',
        'Metadata category:None',
    )),
    'ExportToSpreadsheet': (13, (
        '[]'
    ), (
        'Select the column delimiter:Comma (",")',
        'Add image metadata columns to your object data file?:No',
        'Add image file and folder names to your object data file?:No',
        'Select the measurements to export:No',
        'Calculate the per-image mean values for object measurements?:No',
        'Calculate the per-image median values for object measurements?:No',
        'Calculate the per-image standard deviation values for object measurements?:No',
        'Output file location:Default Output Folder|',
        'Create a GenePattern GCT file?:No',
        'Select source of sample row name:Metadata',
        'Select the image to use as the identifier:None',
        'Select the metadata to use as the identifier:None',
        'Export all measurement types?:Yes',
        'Press button to select measurements:',
        'Representation of Nan/Inf:NaN',
        'Add a prefix to file names?:Yes',
        'Filename prefix:MyExpt_',
        'Overwrite existing files without warning?:Yes',
        'Data to export:Do not use',
        'Combine these object measurements with those of the previous object?:No',
        'File name:DATA.csv',
        'Use the object name for the file name?:Yes',
    )),
}

_DATE_REVISION = 4281  # cellprofiler_core 4.2.8.1
#: RunScribble2Label.variable_revision_number (cellprofiler_plugin/runscribble2label.py)
PLUGIN_REVISION = 3
_MODULE_HEAD = ("{name}:[module_num:{num}|svn_version:'Unknown'|variable_revision_number:{rev}|"
                "show_window:False|notes:{notes}|batch_state:array([], dtype=uint8)|"
                "enabled:True|wants_pause:False]")


def _yes(flag: bool) -> str:
    return "Yes" if flag else "No"


def gains_text(gains: Sequence[float]) -> str:
    """The module's "Brightness gains to average" as CellProfiler saves it: ``1,1.5,2``."""
    return ",".join(f"{float(g):g}" for g in gains)


def _save_images(image: str, prefix_image: str, suffix: str, bit_depth: str) -> list[str]:
    """SaveImages (revision 16): ``image`` as ``<prefix_image's file name><suffix>.tiff``."""
    return [
        "Select the type of image to save:Image", f"Select the image to save:{image}",
        "Select method for constructing file names:From image filename",
        f"Select image name for file prefix:{prefix_image}", "Enter single file name:OrigBlue",
        "Number of digits:4", "Append a suffix to the image file name?:Yes",
        f"Text to append to the image name:{suffix}", "Saved file format:tiff",
        "Output file location:Default Output Folder|", f"Image bit depth:{bit_depth}",
        "Overwrite existing files without warning?:Yes", "When to save:Every cycle",
        "Record the file and path information to the saved image?:No",
        "Create subfolders in the output folder?:No", "Base image folder:Elsewhere...|",
        "How to save the series:T (Time)", "Save with lossless compression?:No",
    ]


def pipeline_text(
    model: str | os.PathLike,
    *,
    image_name: str = "DNA",
    objects: str = "Cells",
    threshold: float | None = None,
    min_size: int | None = None,
    watershed: bool = True,
    tile: int = 0,
    flips: bool = True,
    gains: Sequence[float] = (1.0,),
    save_labels: bool = False,
    save_probability: bool = False,
) -> str:
    """The example pipeline as CellProfiler 4.2 saves it, made without CellProfiler.

    Images -> Metadata -> NamesAndTypes (every image is ``image_name``,
    grayscale) -> Groups -> RunScribble2Label (objects ``objects``) -> FlagImage
    (``Metadata_Scribble2LabelUnusual``: 1 where ``Scribble2Label_Unusual_<objects>`` is,
    an image unlike the training images; ``Metadata_Scribble2LabelUnderCalled``: 1 where
    ``Scribble2Label_UnderCalled_<objects>`` is, cells outlined and not called; nothing is
    skipped) ->
    [ConvertObjectsToImage + SaveImages ``<image>_labels.tiff``] ->
    [SaveImages ``<image>_probability.tiff``] -> ExportToSpreadsheet
    (``MyExpt_Image.csv`` with ``Count_<objects>``, in the Default Output Folder).

    Parameters
    ----------
    model : path-like
        The ONNX model; an existing file is written as its absolute path.
    image_name, objects : str
        Names of the input images and of the output objects.
    threshold, min_size : optional
        Probability threshold and smallest object (pixels); default: the model's.
    watershed : bool
        Split touching cells (RunScribble2Label's "Shape (watershed)", the default).
    tile : int
        Tile size, a multiple of 32; 0: the model's.
    flips : bool
        Average each tile's prediction over its four flips (the module's
        default, as ``s2l-predict``'s); False: one network call per tile.
    gains : sequence of float
        Average over the normalised image multiplied by each gain (``s2l-predict
        --gains``); ``(1,)``: the image as it is.
    save_labels : bool
        Save each label matrix as ``<image>_labels.tiff``: 32-bit integer
        labels (0 = background), saved without conversion, which Fiji opens
        (CellProfiler's 16-bit option would rescale the labels).
    save_probability : bool
        Save each foreground probability as ``<image>_probability.tiff``
        (32-bit float).

    Returns
    -------
    text : str
        The ``.cppipe`` file's text (CellProfiler's pipeline format version 5).
    """
    model = os.fspath(model)
    path = os.path.abspath(model) if os.path.isfile(model) else model
    for name, value in (("model", path), ("image_name", image_name), ("objects", objects)):
        if "\n" in value or "\r" in value or (name != "model" and not value.strip()):
            raise S2LError(f"{name} {value!r}: must be one line of text, not empty")
    s2l = [
        f"Select the input image:{image_name}", f"Name the output object:{objects}",
        f"Model file:{path}",
        f"Use the model's probability threshold?:{_yes(threshold is None)}",
        f"Probability threshold:{0.5 if threshold is None else float(threshold)}",
        f"Use the model's minimum object size?:{_yes(min_size is None)}",
        f"Minimum object size (pixels):{32 if min_size is None else int(min_size)}",
        f"Method to distinguish clumped objects:{'Shape (watershed)' if watershed else 'None'}",
        "Fill holes in identified objects?:Yes", f"Tile size (pixels; 0 for the model's):{tile}",
        f"Average over flipped copies?:{_yes(flips)}",
        f"Brightness gains to average:{gains_text(gains)}",
        f"Save the probability image?:{_yes(save_probability)}",
        "Name the probability image:Scribble2LabelProbability",
    ]
    flag = [f"Hidden:{len(FLAGS)}"]  # FlagImage (revision 5): Metadata_<name> = 1 where
    for name, feature in FLAGS:       # Scribble2Label_<feature>_<objects> is 1
        flag += [
            "Hidden:1", "Name the flag's category:Metadata",
            f"Name the flag:{name}", "How should measurements be linked?:Flag if any fail",
            "Skip image set if flagged?:No", "Flag is based on:Whole-image measurement",
            "Select the object to be used for flagging:None",
            f"Which measurement?:Scribble2Label_{feature}_{objects}",
            "Flag images based on low values?:No", "Minimum value:0.0",
            "Flag images based on high values?:Yes", "Maximum value:0.5",
            "Rules file location:Elsewhere...|", "Rules file name:rules.txt", "Class number:",
            "Allow fuzzy feature matching?:No",
        ]
    flag.append("Ignore flag skips on last cycle?:No")
    fixed = {k: (rev, notes, [line.replace("{image}", image_name) for line in lines])
             for k, (rev, notes, lines) in _FIXED_MODULES.items()}
    modules = [("Images", *fixed["Images"]), ("Metadata", *fixed["Metadata"]),
               ("NamesAndTypes", *fixed["NamesAndTypes"]), ("Groups", *fixed["Groups"]),
               ("RunScribble2Label", PLUGIN_REVISION, "[]", s2l), ("FlagImage", 5, "[]", flag)]
    if save_labels:
        modules.append(("ConvertObjectsToImage", 1, "[]", [
            f"Select the input objects:{objects}", f"Name the output image:{objects}Labels",
            "Select the color format:uint16", "Select the colormap:Default"]))
        modules.append(("SaveImages", 16, "[]", _save_images(f"{objects}Labels", image_name,
                                                             "_labels", "No conversion")))
    if save_probability:
        modules.append(("SaveImages", 16, "[]", _save_images(
            "Scribble2LabelProbability", image_name, "_probability", "32-bit floating point")))
    modules.append(("ExportToSpreadsheet", *fixed["ExportToSpreadsheet"]))
    out = ["CellProfiler Pipeline: http://www.cellprofiler.org", "Version:5",
           f"DateRevision:{_DATE_REVISION}", "GitHash:", f"ModuleCount:{len(modules)}",
           "HasImagePlaneDetails:False", ""]
    for num, (name, rev, notes, lines) in enumerate(modules, start=1):
        out.append(_MODULE_HEAD.format(name=name, num=num, rev=rev, notes=notes))
        out += ["    " + line for line in lines]
        out.append("")
    return "\n".join(out)


def write_pipeline(
    model: str | os.PathLike,
    out: str | os.PathLike,
    *,
    python: str | os.PathLike | None = None,
    threshold: float | None = None,
    min_size: int | None = None,
    watershed: bool = True,
    flips: bool = True,
    gains: Sequence[float] = (1.0,),
    save_labels: bool = False,
    save_probability: bool = False,
) -> Path:
    """Write an example CellProfiler pipeline (``.cppipe``) that runs RunScribble2Label.

    Without ``python`` the file is written by :func:`pipeline_text` (no
    CellProfiler needed); with it, by ``examples/make_pipeline.py`` run with
    that CellProfiler's own Python (needs ``cellprofiler_core``).

    Parameters
    ----------
    model : path-like
        The ``.onnx`` file written by ``s2l-export``; it is checked first.
    out : path-like
        The pipeline to write; its name must end in ``.cppipe``.
    python : path-like, optional
        CellProfiler's Python, to build the pipeline with that installation's
        modules; default: none needed.
    threshold : float, optional
        Probability threshold in [0, 1); default: the model's.
    min_size : int, optional
        Objects smaller than this (pixels) are removed; default: the model's.
    watershed, flips, save_labels, save_probability : bool
        Split touching cells; average over flipped copies; also save each
        label matrix / probability map as a TIFF (``<image>_labels.tiff``,
        ``<image>_probability.tiff``).
    gains : sequence of float
        Brightness gains to average (``s2l-predict --gains``); default: 1 alone.

    Returns
    -------
    out : Path

    Raises
    ------
    S2LError
        A setting is out of range, the model is not an s2l-tools ONNX file,
        ``python`` is not a file, or building the pipeline with it failed.
    """
    from s2l_tools.inference.onnx import read_meta, threshold_problem

    if threshold is not None and (why := threshold_problem(threshold)):
        raise S2LError(f"--threshold {threshold:g}: {why}")
    if min_size is not None and min_size < 0:
        raise S2LError(f"--min-size {min_size}: must be 0 or more (pixels)")
    if (why := gains_problem(tuple(gains))):
        raise S2LError(f"--gains: {why}")
    read_meta(model)  # ModelLoadError, an S2LError: one line
    out = Path(out)
    if out.suffix.lower() not in (".cppipe", ".cp"):
        raise S2LError(f"--out {out}: the file name must end in .cppipe (e.g. example.cppipe)")
    if python is None:
        text = pipeline_text(model, threshold=threshold, min_size=min_size, watershed=watershed,
                             flips=flips, gains=gains, save_labels=save_labels,
                             save_probability=save_probability)
        with atomic_path(out) as tmp:
            tmp.write_text(text, encoding="utf-8")
        return out
    python = _cellprofiler_python(python)
    script = plugin_source_dir() / "examples" / "make_pipeline.py"
    cmd = [str(python), "-W", "ignore", str(script), "--model", str(Path(model).resolve()),
           "--out", str(out)]
    if threshold is not None:
        cmd += ["--threshold", repr(threshold)]
    if min_size is not None:
        cmd += ["--min-size", str(min_size)]
    cmd += ["--declump", "watershed" if watershed else "none", "--gains", gains_text(gains)]
    cmd += [flag for flag, on in (("--no-flips", not flips), ("--save-labels", save_labels),
                                  ("--save-probability", save_probability)) if on]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["(no message)"])[-1]
        raise S2LError(f"{script}: failed with CellProfiler's Python {python} ({last})")
    return out
