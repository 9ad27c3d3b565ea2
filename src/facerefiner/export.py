"""Mesh files for 3D tools: Wavefront OBJ + MTL, and glTF 2.0 binary (GLB) with optional morph targets."""

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
    lines = [f"# facerefiner mesh: {len(v)} vertices, {len(layout.faces)} triangles, y up, cm",
             f"mtllib {mtl.name}", "o face"]
    lines += [f"v {x:.6f} {y:.6f} {z:.6f}" for x, y, z in v]
    lines += [f"vt {a:.7f} {b:.7f}" for a, b in vt]
    lines += [f"usemtl {material}", "s 1"]
    lines += [f"f {a + 1}/{a + 1} {b + 1}/{b + 1} {c + 1}/{c + 1}" for a, b, c in layout.faces]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    mtl.write_text(f"newmtl {material}\nKa 1.000 1.000 1.000\nKd 1.000 1.000 1.000\nKs 0.000 0.000 0.000\n"
                   f"d 1.0\nillum 1\nmap_Kd {texture_name}\n", encoding="utf-8")


#: Morph-target offsets smaller than this (cm) are left out of the sparse accessors.
MORPH_EPS_CM = 1e-4

_FLOAT, _UINT = 5126, 5125


def glb_bytes(vertices: np.ndarray, layout: UVLayout, texture: np.ndarray, name: str = "face",
              morph: tuple[list[str], np.ndarray, np.ndarray] | None = None) -> bytes:
    """The textured mesh as a glTF 2.0 binary (GLB), texture embedded, optionally with blendshapes.

    Args:
        vertices: (V, 3) model-frame positions (y up, right-handed, the face looking along +z, cm);
            stored in metres (glTF's unit), so the head drops into Blender or an engine at life
            size, upright and facing the viewer (glTF: y up, front +z).
        layout: faces and per-vertex UVs (image convention, which is glTF's top-left origin);
            the normals are the layout's welded vertex normals (no shading seams at UV seams).
        texture: (S, S, 3) or (S, S, 4) uint8 RGB(A) image, embedded as PNG as the base colour
            (metallic 0, roughness 1: skin is not a mirror).
        morph: optional ``(names, deltas, weights)``: K morph targets with (K, V, 3) offsets in cm
            added to ``vertices`` at weight 1, and (K,) default weights. ``vertices`` is the shape
            as shown, so the stored base is ``vertices - sum_k weights_k deltas_k`` and the default
            weights bring it back. Targets are sparse accessors (offsets under
            :data:`MORPH_EPS_CM` dropped), their names in ``mesh.extras.targetNames`` (read by
            Blender's importer as shape-key names, and by three.js).
    """
    import io
    import json
    import struct

    from PIL import Image

    from .unwrap import vertex_normals

    v = np.asarray(vertices, dtype=np.float64)
    faces = np.asarray(layout.faces, dtype=np.int64)
    names, deltas, weights = (None, None, None) if morph is None else morph
    if morph is not None:
        deltas = np.asarray(deltas, dtype=np.float32)
        weights = np.asarray(weights, dtype=np.float32)
        if deltas.shape != (len(names), len(v), 3) or weights.shape != (len(names),):
            raise ValueError(f"morph: expected {len(names)} names, ({len(names)}, {len(v)}, 3) deltas and "
                             f"({len(names)},) weights, got {deltas.shape} and {weights.shape}")
        v = v - np.tensordot(weights.astype(np.float64), deltas.astype(np.float64), axes=1)
    pos = (v * 0.01).astype(np.float32)
    nrm = vertex_normals(v, faces, layout.weld).astype(np.float32)
    png = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(texture)).save(png, format="PNG")

    blob = bytearray()
    views: list[dict] = []
    accessors: list[dict] = []

    def view(data: bytes, target: int | None = None) -> int:
        while len(blob) % 4:
            blob.append(0)
        views.append({"buffer": 0, "byteOffset": len(blob), "byteLength": len(data), **({"target": target} if target else {})})
        blob.extend(data)
        return len(views) - 1

    def accessor(a: np.ndarray, kind: str, ctype: int, target: int | None = None, bounds: bool = False) -> int:
        acc = {"bufferView": view(a.tobytes(), target), "componentType": ctype, "count": int(len(a)), "type": kind}
        if bounds:
            acc["min"] = [float(x) for x in a.min(0)]
            acc["max"] = [float(x) for x in a.max(0)]
        accessors.append(acc)
        return len(accessors) - 1

    attrs = {"POSITION": accessor(pos, "VEC3", _FLOAT, 34962, bounds=True),
             "NORMAL": accessor(nrm, "VEC3", _FLOAT, 34962),
             "TEXCOORD_0": accessor(np.asarray(layout.uv, dtype=np.float32), "VEC2", _FLOAT, 34962)}
    prim: dict = {"attributes": attrs, "indices": accessor(faces.astype(np.uint32).reshape(-1), "SCALAR", _UINT, 34963),
                  "material": 0, "mode": 4}
    mesh: dict = {"name": name, "primitives": [prim]}
    if morph is not None:
        targets = []
        for d in deltas:
            idx = np.nonzero(np.abs(d).max(1) > MORPH_EPS_CM)[0].astype(np.uint32)
            if len(idx) == 0:
                idx = np.zeros(1, np.uint32)
            val = (d[idx] * 0.01).astype(np.float32)
            acc = {"componentType": _FLOAT, "count": int(len(v)), "type": "VEC3",
                   "min": [float(min(0.0, x)) for x in val.min(0)], "max": [float(max(0.0, x)) for x in val.max(0)],
                   "sparse": {"count": int(len(idx)),
                              "indices": {"bufferView": view(idx.tobytes()), "componentType": _UINT},
                              "values": {"bufferView": view(val.tobytes())}}}
            accessors.append(acc)
            targets.append({"POSITION": len(accessors) - 1})
        prim["targets"] = targets
        mesh["weights"] = [float(w) for w in weights]
        mesh["extras"] = {"targetNames": list(names)}
    image_view = view(png.getvalue())
    gltf = {
        "asset": {"version": "2.0", "generator": "facerefiner"},
        "scene": 0, "scenes": [{"nodes": [0]}], "nodes": [{"mesh": 0, "name": name}],
        "meshes": [mesh],
        "materials": [{"name": name, "pbrMetallicRoughness": {"baseColorTexture": {"index": 0}, "metallicFactor": 0.0,
                                                             "roughnessFactor": 1.0}}],
        "textures": [{"source": 0, "sampler": 0}],
        "samplers": [{"magFilter": 9729, "minFilter": 9987, "wrapS": 33071, "wrapT": 33071}],
        "images": [{"bufferView": image_view, "mimeType": "image/png"}],
        "accessors": accessors, "bufferViews": views,
        "buffers": [{"byteLength": len(blob)}],
    }
    while len(blob) % 4:
        blob.append(0)
    gltf["buffers"][0]["byteLength"] = len(blob)
    js = json.dumps(gltf, separators=(",", ":")).encode()
    js += b" " * (-len(js) % 4)
    total = 12 + 8 + len(js) + 8 + len(blob)
    return (struct.pack("<III", 0x46546C67, 2, total) + struct.pack("<II", len(js), 0x4E4F534A) + js
            + struct.pack("<II", len(blob), 0x004E4942) + bytes(blob))


def read_obj_vertices(path: str | Path) -> np.ndarray:
    """The (V, 3) ``v`` positions of an OBJ file (for tests and round trips)."""
    pts = [list(map(float, ln.split()[1:4])) for ln in Path(path).read_text().splitlines() if ln.startswith("v ")]
    return np.asarray(pts, dtype=np.float64)
