"""The scribble-mask convention shared by every tool, and the Fiji ROI groups.

A scribble mask is a ``uint8`` array the size of its image:

=====  ==========================================
value  meaning
=====  ==========================================
0      unlabeled (no scribble)
1      background (class 0)
2      foreground / cell (class 1)
k + 1  class ``k`` when there are more classes
=====  ==========================================

This is scikit-image's seed convention (``random_walker``): 0 = unlabeled,
1..K = classes.

Scribbles drawn in Fiji carry their class in their ROI group instead (Edit >
Selection > Properties), with other numbers: :data:`GROUP_FOREGROUND` = 1 and
:data:`GROUP_BACKGROUND` = 2 (``fiji_bridge`` writes these groups,
:mod:`s2l_tools.io.roi` reads them). Mask values are :data:`FOREGROUND` = 2 and
:data:`BACKGROUND` = 1: never mix the two pairs up.
"""

#: scribble-mask values (the codes stored in a mask)
UNLABELED = 0
BACKGROUND = 1
FOREGROUND = 2

#: class indices (mask value = class + 1, see :func:`class_to_code`)
BACKGROUND_CLASS = 0
FOREGROUND_CLASS = 1

#: ImageJ ROI group of a foreground scribble (not a mask value)
GROUP_FOREGROUND = 1
#: ImageJ ROI group of a background scribble (not a mask value)
GROUP_BACKGROUND = 2
#: ImageJ ROI group of a region ``s2l-suggest`` proposes for new strokes: never a scribble
GROUP_SUGGESTION = 3


def class_to_code(k: int) -> int:
    """Mask value of class ``k`` (0 = background, 1 = foreground, ...)."""
    if not 0 <= k <= 254:
        raise ValueError(f"class index {k} out of range 0..254")
    return k + 1
