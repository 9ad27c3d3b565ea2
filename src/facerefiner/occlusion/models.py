"""MediaPipe's graphs behind the ``hands`` and ``background`` sources (both bundled in the pinned
wheel), loaded once per process, and the hand's drawing.
"""

from __future__ import annotations

import threading
from typing import Sequence

import numpy as np

from ..reconstruct import native_logs_quiet

#: A finger's stroke is this many knuckle distances wide (fingers are about as wide as their
#: knuckles are apart; the rest covers the landmarks' error at the finger's edge).
HAND_WIDTH = 1.3
#: Grey border added around the crop before the hand search, as a fraction of its long side.
HAND_PAD = 0.5
#: MediaPipe's palm detection confidence threshold.
HAND_CONFIDENCE = 0.3
#: Selfie segmentation's person probability below which a pixel is background.
BACKGROUND_PROB = 0.5


class OcclusionModels:
    """MediaPipe's hand landmarker and selfie segmentation, loaded on first use and reused (calls
    are serialised: the graphs are not thread-safe)."""

    def __init__(self) -> None:
        self._hands = None
        self._selfie = None
        self._lock = threading.Lock()

    def hands(self, rgb: np.ndarray) -> list[np.ndarray]:
        """(21, 2) landmark arrays in pixels of ``rgb`` ((h, w, 3) uint8), one per hand found.

        The image is padded with grey by :data:`HAND_PAD` of its long side first: MediaPipe's palm
        detector misses a hand cut by the image's edge (a hand at the chin of a tight face crop)
        and finds it once the hand's missing part could lie in the picture."""
        import cv2

        p = int(round(HAND_PAD * max(rgb.shape[:2])))
        rgb = cv2.copyMakeBorder(np.ascontiguousarray(rgb), p, p, p, p, cv2.BORDER_CONSTANT, value=(128, 128, 128))
        with self._lock:
            if self._hands is None:
                with native_logs_quiet():
                    import mediapipe as mp

                    self._hands = mp.solutions.hands.Hands(static_image_mode=True, max_num_hands=4,
                                                           min_detection_confidence=HAND_CONFIDENCE)
            with native_logs_quiet():
                res = self._hands.process(np.ascontiguousarray(rgb))
        h, w = rgb.shape[:2]
        return [np.array([(q.x * w - p, q.y * h - p) for q in hand.landmark]) for hand in res.multi_hand_landmarks or []]

    def person(self, rgb: np.ndarray) -> np.ndarray:
        """(h, w) float32 probability that a pixel of ``rgb`` is the person (not the background)."""
        with self._lock:
            if self._selfie is None:
                with native_logs_quiet():
                    import mediapipe as mp

                    self._selfie = mp.solutions.selfie_segmentation.SelfieSegmentation(model_selection=0)
            with native_logs_quiet():
                res = self._selfie.process(np.ascontiguousarray(rgb))
        return np.asarray(res.segmentation_mask, dtype=np.float32)

    def close(self) -> None:
        for g in (self._hands, self._selfie):
            if g is not None:
                g.close()
        self._hands = self._selfie = None


_DEFAULT: OcclusionModels | None = None


def default_models() -> OcclusionModels:
    """The process-wide :class:`OcclusionModels` (created on first use)."""
    global _DEFAULT
    if _DEFAULT is None:
        _DEFAULT = OcclusionModels()
    return _DEFAULT


def hand_mask(hands: Sequence[np.ndarray], shape: tuple[int, int]) -> np.ndarray:
    """(h, w) bool: each hand ((21, 2) MediaPipe hand landmarks in pixels) drawn as its palm polygon
    and its finger bones as strokes :data:`HAND_WIDTH` fingers wide (a finger: the mean distance
    between neighbouring knuckles), with round joints, each fingertip reaching half a finger past
    its landmark."""
    import cv2
    import mediapipe as mp

    out = np.zeros(shape, np.uint8)
    bones = sorted(mp.solutions.hands_connections.HAND_CONNECTIONS)
    for p in hands:
        p = np.asarray(p, np.float64)
        knuckles = p[[5, 9, 13, 17]]
        width = float(np.mean(np.linalg.norm(np.diff(knuckles, axis=0), axis=1)))
        t = max(2, int(round(HAND_WIDTH * width)))
        q = np.round(p * 4).astype(np.int32)
        cv2.fillPoly(out, [q[[0, 1, 5, 9, 13, 17]]], 1, lineType=cv2.LINE_8, shift=2)
        for a, b in bones:
            cv2.line(out, tuple(q[a]), tuple(q[b]), 1, thickness=t, lineType=cv2.LINE_8, shift=2)
        # the fingertips reach past their landmark (the nail's end): half a finger width further
        for dip, tip in ((3, 4), (7, 8), (11, 12), (15, 16), (19, 20)):
            v = p[tip] - p[dip]
            end = p[tip] + v / max(float(np.linalg.norm(v)), 1e-6) * 0.5 * width
            cv2.line(out, tuple(q[tip]), tuple(np.round(end * 4).astype(np.int32)), 1, thickness=t,
                     lineType=cv2.LINE_8, shift=2)
        for c in q:  # round joints (with shift=2 the radius is in quarter pixels too)
            cv2.circle(out, tuple(c), 4 * (t // 2), 1, thickness=-1, lineType=cv2.LINE_8, shift=2)
    return out.astype(bool)
