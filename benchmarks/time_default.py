"""Time the default preset end to end (refine() from the decoded photo and geometry), VGG16 loaded
once, the first photo refined once untimed as a warm-up. Usage:
python benchmarks/time_default.py VGG16_WEIGHTS PHOTO [PHOTO ...]"""
import statistics
import sys
import time

if len(sys.argv) < 3:
    sys.exit(f"usage: python {sys.argv[0]} VGG16_WEIGHTS PHOTO [PHOTO ...]")
from facerefiner.io import load_image
from facerefiner.reconstruct import reconstruct
from facerefiner.features import get_extractor
from facerefiner.refine import preset, refine
cfg = preset("default")
ext = get_extractor("vgg16", weights=sys.argv[1])
photos = sys.argv[2:]
refine(load_image(photos[0]), config=cfg, extractor=ext)  # warm-up
tot = []
for p in photos:
    rgb = load_image(p); geo = reconstruct(rgb)
    t = time.perf_counter(); r = refine(rgb, geo, config=cfg, extractor=ext); dt = time.perf_counter() - t
    tot.append(dt)
    print(p.split("/")[-1], round(dt, 1), {k: round(v, 2) for k, v in r.timings.items()})
print("median", round(statistics.median(tot), 1))
