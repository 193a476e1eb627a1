import math

import numpy as np
import pytest
import torch

from rawdiff import metrics


def test_psnr_closed_form():
    x = torch.zeros(1, 3, 8, 8)
    y = torch.full_like(x, 0.1)
    assert metrics.psnr(x, y) == pytest.approx(20.0)
    assert math.isinf(metrics.psnr(x, x))


def test_ms_ssim_identity_and_degradation():
    torch.manual_seed(0)
    x = torch.rand(2, 3, 96, 96)
    assert torch.allclose(metrics.ms_ssim(x, x), torch.ones(2), atol=1e-5)
    noisy = (x + 0.2 * torch.randn_like(x)).clamp(0, 1)
    assert (metrics.ms_ssim(x, noisy) < 0.95).all()


def test_ms_ssim_agrees_with_torchmetrics():
    tm = pytest.importorskip("torchmetrics.functional.image")
    torch.manual_seed(1)
    base = torch.nn.functional.avg_pool2d(torch.rand(1, 3, 264, 264), 9, stride=1)  # smooth, 256 px
    other = (base + 0.05 * torch.randn_like(base)).clamp(0, 1)
    ours = metrics.ms_ssim(base, other).item()
    ref = tm.multiscale_structural_similarity_index_measure(other, base, data_range=1.0).item()
    assert ours == pytest.approx(ref, abs=0.01)


def test_spectral_distance_sees_blur():
    torch.manual_seed(0)
    x = torch.rand(1, 3, 64, 64)
    blurred = torch.nn.functional.avg_pool2d(x, 5, stride=1, padding=2)
    assert metrics.spectral_distance(x, x) == 0.0
    assert metrics.spectral_distance(blurred, x) > 0.3


def test_to_tensor_layout():
    rgb = np.zeros((4, 5, 3), np.uint8)
    rgb[..., 0] = 255
    t = metrics.to_tensor(rgb)
    assert t.shape == (1, 3, 4, 5) and t[0, 0].min() == 1.0 and t[0, 1].max() == 0.0


def test_sliced_wasserstein_is_zero_for_the_reference_and_grows_with_blur_and_noise():
    import cv2

    from rawdiff.metrics import laplacian_pyramid, sliced_wasserstein, to_tensor

    rng = np.random.default_rng(0)
    base = cv2.resize(rng.integers(0, 256, (24, 32, 3)).astype(np.uint8), (256, 192), interpolation=cv2.INTER_CUBIC)
    img = np.clip(base.astype(np.float32) + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)  # texture
    ref = to_tensor(img)
    assert sliced_wasserstein(ref, ref) == 0.0
    blurred = to_tensor(cv2.GaussianBlur(img, (0, 0), 2.0))
    slight = to_tensor(cv2.GaussianBlur(img, (0, 0), 0.6))
    assert sliced_wasserstein(blurred, ref) > sliced_wasserstein(slight, ref) > 0.0  # more blur, farther
    noisy = to_tensor(np.clip(img + rng.normal(0, 20, img.shape), 0, 255).astype(np.uint8))
    assert sliced_wasserstein(noisy, ref) > 0.0  # invented texture counts too
    assert sliced_wasserstein(blurred, ref) == sliced_wasserstein(blurred, ref)  # seeded
    levels = laplacian_pyramid(ref, 4)
    assert len(levels) == 4 and levels[1].shape[-2:] == (96, 128)
    assert torch.allclose(levels[0] + torch.nn.functional.interpolate(
        levels[1] + torch.nn.functional.interpolate(levels[2] + torch.nn.functional.interpolate(
            levels[3], size=(48, 64), mode="bilinear", align_corners=False), size=(96, 128), mode="bilinear",
            align_corners=False), size=(192, 256), mode="bilinear", align_corners=False), ref, atol=1e-5)
    with pytest.raises(ValueError, match="too small"):
        sliced_wasserstein(ref[..., :5, :5], ref[..., :5, :5])
    # the reference's side computed once measures the same
    from rawdiff.metrics import SlicedWassersteinReference

    once = SlicedWassersteinReference(ref)
    assert once.distance(blurred) == sliced_wasserstein(blurred, ref) and once.distance(ref) == 0.0
    with pytest.raises(ValueError, match="shape"):
        once.distance(ref[..., :64, :64])


def test_task_fidelity_people_and_orb_on_a_street_frame():
    import cv2

    from rawdiff.task_fidelity import TaskReference, box_iou

    cap = cv2.VideoCapture("/usr/share/doc/opencv-doc/examples/data/vtest.avi")  # pedestrians (opencv-doc)
    ok, bgr = cap.read()
    cap.release()
    assert ok, "opencv-doc's vtest.avi is missing (make setup installs opencv-doc)"
    rgb = np.ascontiguousarray(bgr[:, :, ::-1])
    task = TaskReference(rgb)
    assert task.people and len(task.keypoints) > 100
    assert task.people_agreement(rgb) == 1.0 and task.orb_share(rgb) == 1.0
    blurred = cv2.GaussianBlur(rgb, (0, 0), 3.0)
    assert task.orb_share(blurred) < 0.5  # blur erases corners
    erased = rgb.copy()
    for x, y, w, h in task.people:  # a decoder that erases the people
        erased[max(0, y):y + h, max(0, x):x + w] = erased[max(0, y):y + h, max(0, x):x + w].mean(axis=(0, 1))
    assert task.people_agreement(erased) < 1.0
    tiny = TaskReference(rgb[:40, :40])  # smaller than the detector's window: no person, no crash
    assert tiny.people == [] and tiny.people_agreement(rgb[:40, :40]) == 1.0
    assert box_iou((0, 0, 10, 10), (5, 0, 10, 10)) == pytest.approx(50 / 150)
    assert box_iou((0, 0, 10, 10), (20, 20, 5, 5)) == 0.0
