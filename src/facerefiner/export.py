"""Mesh files for 3D tools: Wavefront OBJ + MTL (and, later, glTF binary)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .layout import UVLayout


def write_obj(path: str | Path, vertices: np.ndarray, layout: UVLayout, texture_name: str = "texture.png",
              material: str = "face") -> None:
    """Write ``path`` (.obj) and its .mtl beside it.

    Args:
        vertices: (V, 3) model-frame positions (y up, right-handed, cm).
        layout: provides faces (counter-clockwise seen from outside) and per-vertex UVs, written
            in OBJ convention (v = 0 at the bottom row of the texture image).
        texture_name: the diffuse texture file, relative to the .obj.
    """
    path = Path(path)
    mtl = path.with_suffix(".mtl")
    v = np.asarray(vertices, dtype=np.float64)
    vt = layout.vt_obj()
    lines = [f"# facerefiner face mesh: {len(v)} vertices, {len(layout.faces)} triangles, y up, cm",
             f"mtllib {mtl.name}", f"o face"]
    lines += [f"v {x:.6f} {y:.6f} {z:.6f}" for x, y, z in v]
    lines += [f"vt {a:.7f} {b:.7f}" for a, b in vt]
    lines += [f"usemtl {material}", "s 1"]
    lines += [f"f {a + 1}/{a + 1} {b + 1}/{b + 1} {c + 1}/{c + 1}" for a, b, c in layout.faces]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    mtl.write_text(f"newmtl {material}\nKa 1.000 1.000 1.000\nKd 1.000 1.000 1.000\nKs 0.000 0.000 0.000\n"
                   f"d 1.0\nillum 1\nmap_Kd {texture_name}\n", encoding="utf-8")


def read_obj_vertices(path: str | Path) -> np.ndarray:
    """The (V, 3) ``v`` positions of an OBJ file (for tests and round trips)."""
    pts = [list(map(float, ln.split()[1:4])) for ln in Path(path).read_text().splitlines() if ln.startswith("v ")]
    return np.asarray(pts, dtype=np.float64)
