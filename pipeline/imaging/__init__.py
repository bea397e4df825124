"""Pure image functions for one pair: bytes in, arrays or bytes out. No I/O, no Ray.

Modules: `decode` (bytes to upright RGB / bool masks, with header checks and JPEG draft decoding), `masks`
(boxes, regions, dilation and feathering), `geometry` (context windows, inscribed rectangles, EXIF box
mapping), `crop` (windowed resampling with padding), `collage` (the hint and the reference image),
`composite` (paste-back and encoding). `settings.ImageSettings` holds their knobs.
"""
