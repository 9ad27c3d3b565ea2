"""facerefiner.postprocess: what follows the optimisation (here the lit texture's shading floor)."""

from __future__ import annotations

import torch

from facerefiner.postprocess import HIDDEN_SHADING_FLOOR, lit_texture


def test_the_hidden_side_is_no_darker_than_the_darker_part_of_what_the_photo_shows():
    S = 32
    albedo = torch.full((3, S, S), 0.5)
    shading = torch.zeros(3, S, S)
    vis = torch.zeros(S, S, dtype=torch.bool)
    vis[:, :16] = True
    # the seen half is lit 0.2 .. 1.0 from left to right across its columns, the hidden half is in shadow
    shading[:, :, :16] = torch.linspace(0.2, 1.0, 16)
    valid = torch.ones(S, S, dtype=torch.bool)
    sampled = albedo * shading
    out = lit_texture(albedo, shading, sampled, vis, valid, width=None)
    q = torch.quantile(torch.linspace(0.2, 1.0, 16).repeat(S), HIDDEN_SHADING_FLOOR)
    assert torch.allclose(out[:, :, 20:], 0.5 * q, atol=1e-6)  # the floor, not black
    assert torch.allclose(out[:, :, 15], torch.full((3, S), 0.5), atol=1e-6)  # well lit texels keep their light
    raw = lit_texture(albedo, shading, sampled, vis, valid, width=None, floor=None)
    assert float(raw[:, :, 20:].max()) == 0.0
