"""Task fidelity: what a fleet's detectors and SLAM find in a decoded image against its
reference (OpenCV's HOG people detector and ORB keypoints), and the Dice share that pools
people boxes over frames. Needs OpenCV, not torch: ``rawdiff eval``'s report and curves use
:func:`dice_share` where torch is not installed."""

from __future__ import annotations

import math
from typing import List, Sequence, Tuple

import numpy as np


class TaskReference:
    """What a fleet's detectors and SLAM see in a reference image, to compare decoded images
    with: OpenCV's HOG people detector (its built-in SVM) and ORB keypoints. Computed once
    per reference; :meth:`people_agreement` and :meth:`orb_share` take a decoded image of
    the same size (H x W x 3 uint8 RGB)."""

    def __init__(self, reference: np.ndarray, orb_features: int = 2000):
        import cv2

        self._cv2 = cv2
        self.hog = cv2.HOGDescriptor()
        self.hog.setSVMDetector(cv2.HOGDescriptor_getDefaultPeopleDetector())
        self.orb = cv2.ORB_create(nfeatures=int(orb_features))
        self.matcher = cv2.BFMatcher(cv2.NORM_HAMMING, crossCheck=True)
        self.people = self.detect_people(reference)
        self.keypoints, self.descriptors = self.orb.detectAndCompute(self._gray(reference), None)

    def _gray(self, rgb: np.ndarray) -> np.ndarray:
        return self._cv2.cvtColor(np.ascontiguousarray(rgb), self._cv2.COLOR_RGB2GRAY)

    def detect_people(self, rgb: np.ndarray) -> List[Tuple[int, int, int, int]]:
        """HOG people boxes (x, y, w, h) after non-maximum suppression (IoU 0.5)."""
        win_w, win_h = self.hog.winSize
        if rgb.shape[0] < win_h or rgb.shape[1] < win_w:  # no window fits (and OpenCV would crash)
            return []
        boxes, weights = self.hog.detectMultiScale(self._gray(rgb), winStride=(8, 8), padding=(8, 8), scale=1.05)
        if len(boxes) == 0:
            return []
        keep = self._cv2.dnn.NMSBoxes([list(map(int, b)) for b in boxes], [float(w) for w in np.ravel(weights)],
                                      0.0, 0.5)
        return [tuple(int(v) for v in boxes[i]) for i in np.ravel(keep)]

    def people_match(self, decoded: np.ndarray) -> Tuple[int, int, int]:
        """``(matched, reference boxes, decoded boxes)``: the decoded image's people boxes
        matched one to one to the reference's at IoU >= 0.5 (greedy, best first)."""
        found = self.detect_people(decoded)
        pairs = sorted(((box_iou(a, b), i, j) for i, a in enumerate(self.people) for j, b in enumerate(found)),
                       reverse=True)
        used_a, used_b, matched = set(), set(), 0
        for iou, i, j in pairs:
            if iou < 0.5:
                break
            if i not in used_a and j not in used_b:
                used_a.add(i)
                used_b.add(j)
                matched += 1
        return matched, len(self.people), len(found)

    def people_agreement(self, decoded: np.ndarray) -> float:
        """:meth:`people_match` as the Dice share 2 matched / (reference boxes + decoded
        boxes); 1.0 where neither has a person."""
        return dice_share(*self.people_match(decoded))

    def orb_share(self, decoded: np.ndarray, max_shift: float = 3.0, max_hamming: int = 64) -> float:
        """The share of the reference's ORB keypoints found again in ``decoded``: a mutual
        best match (Hamming distance at most ``max_hamming``) within ``max_shift`` pixels
        of the same place. 1.0 where the reference has no keypoint."""
        if self.descriptors is None or not len(self.keypoints):
            return 1.0
        kps, desc = self.orb.detectAndCompute(self._gray(decoded), None)
        if desc is None or not len(kps):
            return 0.0
        good = 0
        for m in self.matcher.match(self.descriptors, desc):
            a, b = self.keypoints[m.queryIdx].pt, kps[m.trainIdx].pt
            if m.distance <= max_hamming and math.hypot(a[0] - b[0], a[1] - b[1]) <= max_shift:
                good += 1
        return good / len(self.keypoints)


def dice_share(matched: float, reference: float, decoded: float) -> float:
    """2 matched / (reference + decoded) boxes, 1.0 where there are none: per frame, or
    pooled over frames from their sums (what ``rawdiff eval`` reports, so that a frame without
    people weighs by its boxes, not as a whole frame)."""
    total = reference + decoded
    return 1.0 if total == 0 else 2.0 * matched / total


def box_iou(a: Sequence[int], b: Sequence[int]) -> float:
    """Intersection over union of two (x, y, w, h) boxes."""
    ix = max(0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union if union > 0 else 0.0
