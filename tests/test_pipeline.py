"""The per-face path (facerefiner.pipeline.process_face) and the per-photo wrapper that writes it."""

from __future__ import annotations

import numpy as np
import torch

from facerefiner.features import get_extractor
from facerefiner.io import load_image, to_uint8
from facerefiner.layout import default_layout
from facerefiner.pipeline import RefineOptions, process_face, refine_photo
from facerefiner.reconstruct import reconstruct
from facerefiner.refine import preset

from conftest import FACES, need


def test_process_face_is_what_refine_photo_writes(tmp_path, detector):
    """process_face on arrays (no files) gives the texture, sampled texture, V, views and report
    keys; refine_photo (load, detect, process_face, write) writes exactly that texture."""
    from PIL import Image

    path = need(FACES / "ffhq_00128.png")
    rgb = load_image(path)
    geo = reconstruct(rgb, detector=detector)
    layout = default_layout()
    cfg = preset("quick", steps=(3,), size=64, seed=5)
    opts = RefineOptions(size=64, device="cpu", occlusion="off", delight=False)
    ext = get_extractor("patches")
    f = process_face(rgb, geo, layout, opts, cfg, extractor=ext, source=str(path))
    assert f.texture.shape == (3, 64, 64) and f.sampled.shape == (3, 64, 64) and f.visibility.dtype == torch.bool
    assert f.views.dtype == np.uint8 and f.views.ndim == 3 and f.composite.shape[2] == 3
    assert {"occlusion", "refine", "synthesis", "light"} <= set(f.report) and f.report["light"]["skipped"] == "--no-delight"
    assert not list(tmp_path.iterdir())  # nothing written
    res = refine_photo(path, tmp_path / "out", opts, cfg, layout=layout, detector=detector, extractor=ext)
    assert res.ok, res.error
    written = np.asarray(Image.open(tmp_path / "out" / "ffhq_00128" / "texture.png"))
    assert np.array_equal(written, to_uint8(f.texture))


def test_a_head_with_an_export_scale_writes_its_texture_larger(detector):
    """The ICT head's atlas gives the face fewer texels, so process_face exports at 2 S by default
    (``--export-size`` overrides it); its teeth, gums and eyeballs keep one flat colour each at
    the export size where neither they nor their mirror is seen (the upsampling would blur them
    into their gutters)."""
    from facerefiner.complete import part_map
    from facerefiner.heads import get_head

    path = need(FACES / "ffhq_00128.png")
    rgb = load_image(path)
    head = get_head("ict")
    layout = head.layout()
    geo = reconstruct(rgb, detector=detector, head=head)
    cfg = preset("quick", steps=(2,), size=64, seed=5)
    ext = get_extractor("patches")
    opts = RefineOptions(size=64, device="cpu", occlusion="off", delight=False, head="ict")
    f = process_face(rgb, geo, layout, opts, cfg, extractor=ext, source=str(path))
    assert head.export_scale == 2 and f.texture.shape == (3, 128, 128) and f.report["export_size"] == 128
    labels = part_map(layout, 128)
    from facerefiner.unwrap import unwrap

    from facerefiner.complete import mirror_texture, mirror_uv

    vis = unwrap(rgb, geo, 128, layout=layout).visibility  # what the export at 128 sees of the photo
    mirrored = mirror_texture(vis.float()[None], mirror_uv(layout, 128))[0] > 0.999  # those take the mirror's
    for label in head.part_colours():
        unseen = torch.from_numpy(labels == label) & ~vis & ~mirrored
        if unseen.sum() > 20:
            px = f.texture[:, unseen]
            assert float((px - px[:, :1]).abs().max()) < 1e-6, label
    g = process_face(rgb, geo, layout, RefineOptions(size=64, device="cpu", occlusion="off", delight=False, head="ict",
                                                     export_size=64), cfg, extractor=ext, source=str(path))
    assert g.texture.shape == (3, 64, 64) and "export_size" not in g.report
