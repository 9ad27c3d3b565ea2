"""Mesh files for 3D tools: Wavefront OBJ + MTL, and glTF binary (GLB) through trimesh."""

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
             f"mtllib {mtl.name}", "o face"]
    lines += [f"v {x:.6f} {y:.6f} {z:.6f}" for x, y, z in v]
    lines += [f"vt {a:.7f} {b:.7f}" for a, b in vt]
    lines += [f"usemtl {material}", "s 1"]
    lines += [f"f {a + 1}/{a + 1} {b + 1}/{b + 1} {c + 1}/{c + 1}" for a, b, c in layout.faces]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    mtl.write_text(f"newmtl {material}\nKa 1.000 1.000 1.000\nKd 1.000 1.000 1.000\nKs 0.000 0.000 0.000\n"
                   f"d 1.0\nillum 1\nmap_Kd {texture_name}\n", encoding="utf-8")


def glb_bytes(vertices: np.ndarray, layout: UVLayout, texture: np.ndarray, name: str = "face") -> bytes:
    """The textured face mesh as a glTF binary (GLB), texture embedded, written by trimesh.

    Args:
        vertices: (V, 3) model-frame positions (y up, right-handed, the face looking along +z, cm);
            stored in metres (glTF's unit), so the face drops into Blender or an engine at life
            size, upright and facing the viewer (glTF: y up, front +z).
        layout: faces and per-vertex UVs (trimesh flips them to glTF's top-left origin).
        texture: (S, S, 3) or (S, S, 4) uint8 RGB(A) image, embedded as PNG as the base colour
            (metallic 0, roughness 1: skin is not a mirror).
    """
    import trimesh
    from PIL import Image

    mesh = trimesh.Trimesh(vertices=np.asarray(vertices, dtype=np.float64) * 0.01,
                           faces=np.asarray(layout.faces, dtype=np.int64), process=False)
    material = trimesh.visual.material.PBRMaterial(
        name=name, baseColorTexture=Image.fromarray(np.ascontiguousarray(texture)), metallicFactor=0.0,
        roughnessFactor=1.0)
    mesh.visual = trimesh.visual.TextureVisuals(uv=layout.vt_obj(), material=material)
    scene = trimesh.Scene()
    scene.add_geometry(mesh, node_name=name, geom_name=name)
    return scene.export(file_type="glb")


def read_obj_vertices(path: str | Path) -> np.ndarray:
    """The (V, 3) ``v`` positions of an OBJ file (for tests and round trips)."""
    pts = [list(map(float, ln.split()[1:4])) for ln in Path(path).read_text().splitlines() if ln.startswith("v ")]
    return np.asarray(pts, dtype=np.float64)
