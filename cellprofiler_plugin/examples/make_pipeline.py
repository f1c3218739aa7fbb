"""Write a CellProfiler 4.2 pipeline that segments cells with RunScribble2Label.

Run it with CellProfiler's own Python (it needs ``cellprofiler_core`` and
``cellprofiler``), e.g. the venv built by ``scripts/build_cellprofiler_venv.sh``::

    .cpvenv/bin/python cellprofiler_plugin/examples/make_pipeline.py \\
        --model /data/models/nuclei.onnx --out nuclei.cppipe

(``s2l-cellprofiler pipeline`` runs this script for you.) The pipeline is
Images -> Metadata -> NamesAndTypes (every image is ``DNA``, grayscale) ->
Groups -> RunScribble2Label (objects ``Cells``) -> FlagImage
(``Metadata_Scribble2LabelUnusual``: 1 on images the module measured as unlike the
model's training images; ``Metadata_Scribble2LabelUnderCalled``: 1 where it found cells
the network outlined and did not call) -> ExportToSpreadsheet (CSV files in the Default Output
Folder, ``MyExpt_Image.csv`` has ``Count_Cells``).
``--save-labels`` and ``--save-probability`` add SaveImages modules that save
each image's label matrix / probability as TIFFs Fiji opens,
``<image>_labels.tiff`` (32-bit integer labels, 0 = background) and
``<image>_probability.tiff`` (32-bit float).

``s2l-cellprofiler pipeline`` writes the same file without CellProfiler
(:func:`s2l_tools.interop.cellprofiler.pipeline_text`); this script is what
``--python PY`` runs, to build it with that CellProfiler's own modules.

The modules are instantiated from ``cellprofiler_core`` and saved with
``Pipeline.dump``, so the settings always match the installed CellProfiler
and plugin. The plugin is imported from ``--plugins-dir`` (default: the folder
above this script, where ``runscribble2label.py`` lives).
"""

import argparse
import logging
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def get_parser():
    parser = argparse.ArgumentParser(
        description="Write a CellProfiler 4.2 pipeline using RunScribble2Label.",
        epilog="example: .cpvenv/bin/python " + os.path.relpath(__file__)
        + " --model nuclei.onnx --out nuclei.cppipe",
    )
    parser.add_argument("--model", required=True, help="the .onnx file written by s2l-export")
    parser.add_argument("--out", required=True, help="the .cppipe file to write")
    parser.add_argument("--plugins-dir", default=os.path.dirname(HERE),
                        help="folder holding runscribble2label.py")
    parser.add_argument("--image-name", default="DNA", help="name of the input images")
    parser.add_argument("--objects", default="Cells", help="name of the output objects")
    parser.add_argument("--threshold", type=float, default=None,
                        help="probability threshold (default: the model's)")
    parser.add_argument("--min-size", type=int, default=None,
                        help="minimum object size in pixels (default: the model's)")
    parser.add_argument("--declump", choices=("watershed", "none"), default="watershed",
                        help="split touching cells (watershed, the default) or not")
    parser.add_argument("--watershed", dest="declump", action="store_const", const="watershed",
                        help="the same as --declump watershed")
    parser.add_argument("--tile", type=int, default=0,
                        help="tile size, a multiple of 32 (default 0: the model's)")
    parser.add_argument("--no-flips", dest="flips", action="store_false",
                        help="one network call per tile (default: averaged over four flips)")
    parser.add_argument("--gains", default="1", metavar="G[,G...]",
                        help="brightness gains to average, e.g. 1,1.5,2 (default: 1, the "
                        "image as it is)")
    parser.add_argument("--save-labels", action="store_true",
                        help="also save each label matrix as <image>_labels.tiff")
    parser.add_argument("--save-probability", action="store_true",
                        help="also save each probability map as <image>_probability.tiff")
    return parser


def _save_tiff(image_name, file_image_name, suffix, bit_depth):
    """SaveImages: ``image_name`` as ``<input image name><suffix>.tiff``, uncompressed."""
    from cellprofiler.modules.saveimages import (FF_TIFF, FN_FROM_IMAGE, IF_IMAGE,
                                                 SaveImages)

    save = SaveImages()
    save.save_image_or_figure.value = IF_IMAGE
    save.image_name.value = image_name
    save.file_name_method.value = FN_FROM_IMAGE
    save.file_image_name.value = file_image_name
    save.wants_file_name_suffix.value = True
    save.file_name_suffix.value = suffix
    save.file_format.value = FF_TIFF
    save.bit_depth.value = bit_depth
    save.tiff_compress.value = False
    save.overwrite.value = True
    return save


def build_pipeline(args):
    """The pipeline as a ``cellprofiler_core.pipeline.Pipeline``."""
    from cellprofiler.modules.exporttospreadsheet import ExportToSpreadsheet
    from cellprofiler.modules.saveimages import BIT_DEPTH_FLOAT, BIT_DEPTH_RAW
    from cellprofiler_core.modules.groups import Groups
    from cellprofiler_core.modules.images import Images
    from cellprofiler_core.modules.metadata import Metadata
    from cellprofiler_core.modules.namesandtypes import (
        ASSIGN_ALL,
        LOAD_AS_GRAYSCALE_IMAGE,
        NamesAndTypes,
    )
    from cellprofiler_core.pipeline import Pipeline

    sys.path.insert(0, os.path.abspath(args.plugins_dir))
    from runscribble2label import (C_S2L, DECLUMP_NONE, DECLUMP_SHAPE, FTR_UNDER, FTR_UNUSUAL,
                                   RunScribble2Label)

    modules = []

    images = Images()
    modules.append(images)

    metadata = Metadata()
    metadata.wants_metadata.value = False
    modules.append(metadata)

    nat = NamesAndTypes()
    nat.assignment_method.value = ASSIGN_ALL
    nat.single_image_provider.value = args.image_name
    nat.single_load_as_choice.value = LOAD_AS_GRAYSCALE_IMAGE
    modules.append(nat)

    groups = Groups()
    groups.wants_groups.value = False
    modules.append(groups)

    s2l = RunScribble2Label()
    s2l.x_name.value = args.image_name
    s2l.y_name.value = args.objects
    s2l.model_path.value = os.path.abspath(args.model) if os.path.isfile(args.model) else args.model
    if args.threshold is not None:
        s2l.use_model_threshold.value = False
        s2l.threshold.value = args.threshold
    if args.min_size is not None:
        s2l.use_model_min_size.value = False
        s2l.min_size.value = args.min_size
    s2l.declump.value = DECLUMP_SHAPE if args.declump == "watershed" else DECLUMP_NONE
    s2l.tile_size.value = args.tile
    s2l.flips.value = args.flips
    s2l.gains.value = ",".join("{:g}".format(float(g)) for g in args.gains.split(","))
    if args.save_probability:
        s2l.save_probability.value = True
    modules.append(s2l)

    from cellprofiler.modules.flagimage import S_IMAGE, FlagImage

    # Metadata_Scribble2LabelUnusual: 1 on images unlike the training ones;
    # Metadata_Scribble2LabelUnderCalled: 1 where the network outlined cells it did not call
    flag = FlagImage()
    flag.add_flag()
    for group, (name, feature) in zip(flag.flags, (("Scribble2LabelUnusual", FTR_UNUSUAL),
                                                   ("Scribble2LabelUnderCalled", FTR_UNDER))):
        group.feature_name.value = name
        rule = group.measurement_settings[0]
        rule.source_choice.value = S_IMAGE
        rule.measurement.value = "_".join((C_S2L, feature, args.objects))  # as the module does
        rule.wants_minimum.value = False
        rule.wants_maximum.value = True
        rule.maximum_value.value = 0.5
    modules.append(flag)

    if args.save_labels:
        from cellprofiler.modules.convertobjectstoimage import ConvertObjectsToImage

        convert = ConvertObjectsToImage()
        convert.object_name.value = args.objects
        convert.image_name.value = args.objects + "Labels"
        convert.image_mode.value = "uint16"
        modules.append(convert)
        # "No conversion": the int32 labels as they are (16-bit would rescale them)
        modules.append(_save_tiff(args.objects + "Labels", args.image_name, "_labels",
                                  BIT_DEPTH_RAW))
    if args.save_probability:
        modules.append(_save_tiff(s2l.probability_name.value, args.image_name, "_probability",
                                  BIT_DEPTH_FLOAT))

    export = ExportToSpreadsheet()
    export.wants_overwrite_without_warning.value = True
    modules.append(export)

    pipeline = Pipeline()
    for number, module in enumerate(modules, start=1):
        module.module_num = number
        pipeline.add_module(module)
    return pipeline


def main(argv=None):
    args = get_parser().parse_args(argv)
    logging.basicConfig(level=logging.ERROR)
    import cellprofiler_core.preferences

    cellprofiler_core.preferences.set_headless()
    if not os.path.isfile(args.model):
        print("warning: {}: no such file yet; the pipeline will run once it exists"
              .format(args.model), file=sys.stderr)
    pipeline = build_pipeline(args)
    tmp = args.out + ".part"
    with open(tmp, "w", encoding="utf-8") as fd:
        pipeline.dump(fd, save_image_plane_details=False)
    os.replace(tmp, args.out)
    print("wrote {} ({} modules)".format(args.out, len(pipeline.modules())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
