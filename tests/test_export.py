"""Mesh exports: mesh.glb read back with trimesh (an independent glTF reader) and checked."""

from __future__ import annotations

import io
import json
import struct

import numpy as np
import trimesh
from PIL import Image

from conftest import need

from facerefiner.export import glb_bytes, read_obj_vertices
from facerefiner.layout import default_layout


def _load(data: bytes) -> trimesh.Trimesh:
    scene = trimesh.load(io.BytesIO(data), file_type="glb", process=False)
    meshes = list(scene.geometry.values())
    assert len(meshes) == 1
    return meshes[0]


def _gltf_json(data: bytes) -> dict:
    magic, version, _ = struct.unpack_from("<4sII", data, 0)
    assert magic == b"glTF" and version == 2
    length, kind = struct.unpack_from("<I4s", data, 12)
    assert kind == b"JSON"
    return json.loads(data[20:20 + length])


def test_glb_round_trip_vertices_uvs_texture():
    layout = default_layout()
    rng = np.random.default_rng(0)
    verts = rng.normal(scale=8.0, size=(len(layout.uv), 3))  # cm
    tex = rng.integers(0, 256, size=(64, 64, 3), dtype=np.uint8)
    mesh = _load(glb_bytes(verts, layout, tex))
    np.testing.assert_allclose(mesh.vertices, verts * 0.01, atol=1e-6)  # metres
    np.testing.assert_array_equal(mesh.faces, layout.faces)
    np.testing.assert_allclose(mesh.visual.uv, layout.vt_obj(), atol=1e-6)
    img = mesh.visual.material.baseColorTexture
    assert img.size == (64, 64)
    np.testing.assert_array_equal(np.asarray(img.convert("RGB")), tex)  # embedded losslessly (PNG)


def test_glb_uvs_are_stored_with_gltf_top_left_origin():
    """Read the raw TEXCOORD_0 accessor (not through trimesh's own flip): glTF puts (0, 0) at the
    top-left of the image, which is our layout's image convention, so they must equal layout.uv."""
    layout = default_layout()
    data = glb_bytes(np.zeros((len(layout.uv), 3)), layout, np.zeros((8, 8, 3), np.uint8))
    doc = _gltf_json(data)
    acc = doc["accessors"][doc["meshes"][0]["primitives"][0]["attributes"]["TEXCOORD_0"]]
    view = doc["bufferViews"][acc["bufferView"]]
    jlen = struct.unpack_from("<I", data, 12)[0]
    bin_start = 20 + jlen + 8
    start = bin_start + view.get("byteOffset", 0) + acc.get("byteOffset", 0)
    uv = np.frombuffer(data, dtype="<f4", count=acc["count"] * 2, offset=start).reshape(-1, 2)
    np.testing.assert_allclose(uv, layout.uv, atol=1e-6)
    assert doc["materials"][0]["pbrMetallicRoughness"]["metallicFactor"] == 0.0


def test_unwrap_writes_an_upright_life_size_glb_facing_plus_z(tmp_path):
    from conftest import FACES
    from typer.testing import CliRunner

    from facerefiner.cli.main import app

    photo = need(FACES / "ffhq_00128.png")
    r = CliRunner().invoke(app, ["unwrap", str(photo), "-o", str(tmp_path), "--size", "128"])
    assert r.exit_code == 0, r.output
    folder = tmp_path / "ffhq_00128"
    mesh = _load((folder / "mesh.glb").read_bytes())
    np.testing.assert_allclose(mesh.vertices, read_obj_vertices(folder / "mesh.obj") * 0.01, atol=1e-6)
    ext = mesh.vertices.max(0) - mesh.vertices.min(0)
    assert 0.12 < ext[1] < 0.30 and 0.10 < ext[0] < 0.25  # a face: about 20 cm tall, 15 cm wide
    nose = mesh.vertices[1]  # MediaPipe vertex 1: the nose tip
    assert nose[2] > np.percentile(mesh.vertices[:, 2], 95)  # the face looks along +z (glTF front)
    forehead, chin = mesh.vertices[10], mesh.vertices[152]
    assert forehead[1] > chin[1]  # upright: y up
    assert mesh.visual.material.baseColorTexture.size == Image.open(folder / "texture.png").size
