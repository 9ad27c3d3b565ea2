"""Time facerefiner.complete.complete() at S = 512 under the sunglasses probe: smooth fill, with
detail, with detail and a prior (best of 3 calls each). Usage:
python benchmarks/time_complete.py PRIOR.npz PHOTO [PHOTO ...]"""
import sys, time

if len(sys.argv) < 3:
    sys.exit(f"usage: python {sys.argv[0]} PRIOR.npz PHOTO [PHOTO ...]")
from facerefiner.io import load_image
from facerefiner.reconstruct import reconstruct
from facerefiner.metrics import probe_mask
from facerefiner.unwrap import unwrap, uv_raster
from facerefiner.layout import default_layout
from facerefiner.complete import complete
from facerefiner.prior import load_prior, fit, photo_digest
lay = default_layout(); uvr = uv_raster(lay, 512); prior = load_prior(sys.argv[1])
for ph in sys.argv[2:]:
    rgb = load_image(ph); geo = reconstruct(rgb)
    un = unwrap(rgb, geo, 512, layout=lay, mask=probe_mask(geo, "sunglasses"), uvr=uvr)
    ts = {}
    for name in ("smooth", "detail", "detail+prior"):
        best = 1e9
        for _ in range(3):
            t = time.perf_counter()
            guide = None
            if name == "detail+prior":
                img, where, _ = fit(prior, un.texture, un.visibility, uvr.valid, exclude=[photo_digest(rgb)])
                guide = (img, where)
            complete(un.texture, un.visibility, lay, uvr=uvr, detail=name != "smooth", guide=guide)
            best = min(best, time.perf_counter() - t)
        ts[name] = round(best, 2)
    print(ph.split("/")[-1], ts)
