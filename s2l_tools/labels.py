"""The scribble-mask convention shared by every tool.

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
"""

UNLABELED = 0
BACKGROUND = 1
FOREGROUND = 2

#: class index -> mask value
BACKGROUND_CLASS = 0
FOREGROUND_CLASS = 1


def class_to_code(k: int) -> int:
    """Mask value of class ``k`` (0 = background, 1 = foreground, ...)."""
    if not 0 <= k <= 254:
        raise ValueError(f"class index {k} out of range 0..254")
    return k + 1
