"""Scores of masks against ground truth (IoU, Dice, F1) and ``s2l-eval``."""
