"""From images and scribbles to training data: ROI sets to scribble masks, synthetic
scribbles, dataset checks, augmentation, the demo's generated data."""
