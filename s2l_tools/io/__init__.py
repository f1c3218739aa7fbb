"""Files in and out: images (bioio/tifffile), ImageJ/Fiji ROI sets, atomic writes."""
