"""Classic pixel classifiers on the scribbles (random forest, GrabCut): baselines and
the fast starts of S2L's EMA store."""
