"""facerefiner: one photo of a face in, a complete UV texture for a 3D face mesh out."""

__version__ = "0.1.0"
