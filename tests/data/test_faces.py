"""Faces, all offline: the ArcFace metric (metrics.arcface), insightface model files (weights.insightface), FFHQ
alignment (data.faces) and `grain prepare` (data.prepare).

No real insightface model exists here, so the tests export small torch networks to ONNX with the input/output
layout of insightface's files (ArcFace: (B, 3, 112, 112) 'input.1' -> 512-d; SCRFD: 9 outputs for 3 strides) and
load them through insightface's own model zoo, the path a user's w600k_r50.onnx / det_10g.onnx takes.
"""

from __future__ import annotations

import argparse
import errno
import importlib.util
import json
import os
import shutil
import stat
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from grain_pl.commands.prepare import add_prepare_command
from grain_pl.data.faces import (
    NoFaceFoundError,
    detect_landmarks,
    ffhq_align,
    ffhq_alignment_matrix,
    load_detector,
    load_landmarks_file,
)
from grain_pl.data.prepare import prepare_folder
from grain_pl.losses.identity import crop_faces
from grain_pl.metrics.arcface import ARCFACE_TEMPLATE_112, ArcFaceIdentity, load_arcface
from grain_pl.weights.insightface import FaceModelMissingError

# Alignment from given landmarks needs only numpy and Pillow; the model tests need the `faces` extra.
needs_insightface = pytest.mark.skipif(importlib.util.find_spec("insightface") is None,
                                       reason="insightface is not installed (pip install -e '.[faces]')")


def _export_onnx(network: nn.Module, example: torch.Tensor, path: Path, output_names: list[str],
                 dynamic_batch: bool) -> Path:
    """torch -> ONNX with the legacy TorchScript exporter (the dynamo one needs onnxscript, absent here)."""
    dynamic_axes = {name: {0: "None"} for name in ["input.1", *output_names]} if dynamic_batch else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the legacy exporter announces its deprecation
        torch.onnx.export(network.eval(), (example,), str(path), dynamo=False, input_names=["input.1"],
                          output_names=output_names, dynamic_axes=dynamic_axes, opset_version=17)
    return path


class TinyRecognitionNet(nn.Module):
    """A stand-in for ArcFace: (B, 3, 112, 112) in [-1, 1] -> (B, 512), like insightface's w600k_r50.onnx."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, stride=4, padding=1), nn.PReLU(8),
                                      nn.Conv2d(8, 16, 3, stride=4, padding=1), nn.Flatten())
        self.embedding = nn.Linear(16 * 7 * 7, 512)

    def forward(self, faces: torch.Tensor) -> torch.Tensor:
        return self.embedding(self.features(faces))


@pytest.fixture(scope="module")
def recognition_model(tmp_path_factory) -> tuple[Path, nn.Module]:
    torch.manual_seed(1)
    network = TinyRecognitionNet().eval()
    path = tmp_path_factory.mktemp("arcface") / "w600k_r50.onnx"
    _export_onnx(network, torch.zeros(1, 3, 112, 112), path, ["embedding"], dynamic_batch=True)
    return path, network


# --------------------------------------------------------------------------------------------------------------
# ArcFace identity
# --------------------------------------------------------------------------------------------------------------


@needs_insightface
def test_arcface_model_loads_through_insightface_and_embeds(recognition_model) -> None:
    from insightface.model_zoo.arcface_onnx import ArcFaceONNX

    path, network = recognition_model
    identity = ArcFaceIdentity.from_path(path, providers=["CPUExecutionProvider"])
    assert isinstance(identity.model, ArcFaceONNX)  # insightface's router took it for a recognition model

    images = torch.rand(3, 3, 256, 256) * 2 - 1
    embeddings = identity.embed(images)
    assert embeddings.shape == (3, 512)
    torch.testing.assert_close(embeddings.norm(dim=1), torch.ones(3), atol=1e-5, rtol=0)
    # The ONNX path sees exactly the IR-SE50 loss's face crops, normalised back to [-1, 1] by insightface.
    with torch.no_grad():
        expected = F.normalize(network(crop_faces(images)), dim=1)
    torch.testing.assert_close(embeddings, expected, atol=1e-4, rtol=1e-4)

    similarity = identity.similarity(images, images)
    assert similarity.shape == (3,)
    torch.testing.assert_close(similarity, torch.ones(3), atol=1e-5, rtol=0)
    assert (identity.similarity(images, images.flip(0))[[0, 2]] < 0.999).all()
    with pytest.raises(ValueError, match="shapes differ"):
        identity.similarity(images, images[:2])


@needs_insightface
def test_arcface_crop_none_and_fixed_batch_model(tmp_path) -> None:
    network = TinyRecognitionNet().eval()
    path = _export_onnx(network, torch.zeros(1, 3, 112, 112), tmp_path / "fixed.onnx", ["embedding"],
                        dynamic_batch=False)  # batch fixed at 1: embedded image by image
    identity = ArcFaceIdentity.from_path(path, crop="none", providers=["CPUExecutionProvider"])
    faces = torch.rand(2, 3, 112, 112) * 2 - 1
    with torch.no_grad():
        expected = F.normalize(network(faces), dim=1)
    torch.testing.assert_close(identity.embed(faces), expected, atol=1e-4, rtol=1e-4)


@needs_insightface
def test_arcface_default_location_and_missing_message(recognition_model, tmp_path) -> None:
    path, _ = recognition_model
    with pytest.raises(FaceModelMissingError) as error:
        ArcFaceIdentity.from_path(None, root=tmp_path)
    message = str(error.value)
    assert str(tmp_path / "models" / "buffalo_l" / "w600k_r50.onnx") in message
    assert "glintr100.onnx" in message and "buffalo_l.zip" in message and "--arcface" in message

    pack = tmp_path / "models" / "buffalo_l"
    pack.mkdir(parents=True)
    shutil.copy(path, pack / "w600k_r50.onnx")
    assert ArcFaceIdentity.from_path(None, root=tmp_path).model_path == pack / "w600k_r50.onnx"
    assert ArcFaceIdentity.from_path(pack).model_path == pack / "w600k_r50.onnx"  # a model-pack folder
    assert load_arcface(str(pack)).model_path == pack / "w600k_r50.onnx"  # `grain evaluate --arcface PATH`
    with pytest.raises(FaceModelMissingError, match="does not exist"):
        ArcFaceIdentity.from_path(tmp_path / "nope.onnx")


# --------------------------------------------------------------------------------------------------------------
# Alignment
# --------------------------------------------------------------------------------------------------------------


def _draw_blobs(size: tuple[int, int], points: np.ndarray, sigma: float, background: np.ndarray | None = None):
    """White Gaussian blobs centred on pixel-index `points` over a black (or given) background."""
    width, height = size
    rows, cols = np.mgrid[:height, :width].astype(np.float64)
    canvas = np.zeros((height, width)) if background is None else background.astype(np.float64)
    for x, y in points:
        canvas = np.maximum(canvas, 255.0 * np.exp(-((cols - x) ** 2 + (rows - y) ** 2) / (2 * sigma**2)))
    return Image.fromarray(np.uint8(np.clip(np.rint(canvas), 0, 255))).convert("RGB")


def _blob_centre(image: Image.Image, near: np.ndarray, radius: int = 6) -> np.ndarray:
    """Intensity centroid (x, y) of the blob in a window around `near`."""
    grey = np.asarray(image.convert("L"), dtype=np.float64)
    x0, y0 = np.rint(near).astype(int)
    window = grey[y0 - radius:y0 + radius + 1, x0 - radius:x0 + radius + 1]
    window = np.clip(window - 0.2 * window.max(), 0, None)
    assert window.sum() > 0, f"no blob near {near}"
    rows, cols = np.mgrid[-radius:radius + 1, -radius:radius + 1]
    return np.array([x0 + (cols * window).sum() / window.sum(), y0 + (rows * window).sum() / window.sum()])


# An upright face: eyes 60 px apart, mouth centre 70 px below the eye midpoint (1.8 * 70 > 2 * 60, so the
# mouth distance sets the crop, as on most faces), mouth 50 px wide.
FACE = np.array([[170.0, 180.0], [230.0, 180.0], [200.0, 215.0], [175.0, 250.0], [225.0, 250.0]])


@pytest.mark.parametrize(("size", "sigma", "supersample"), [
    (128, 4.0, 4),   # FFHQ's supersampling
    (128, 4.0, 1),   # direct rendering
    (40, 10.0, 4),   # the face is 6x the output: shrunk by box-averaging first
])
def test_landmarks_land_where_ffhq_puts_them(size: int, sigma: float, supersample: int) -> None:
    image = _draw_blobs((400, 420), FACE[[0, 1, 3, 4]], sigma=sigma)
    aligned = ffhq_align(image, FACE, size, padding="black", supersample=supersample)
    assert aligned.size == (size, size) and aligned.mode == "RGB"

    # FFHQ's construction: the square's half side is 1.8 * 70, its centre 0.1 * 70 below the eye midpoint.
    scale = size / (2 * 1.8 * 70)
    eye_y = size / 2 - 0.1 * 70 * scale            # 0.4722 * size
    mouth_y = size / 2 + 0.9 * 70 * scale          # 0.75 * size
    expected_continuous = np.array([[size / 2 - 30 * scale, eye_y], [size / 2 + 30 * scale, eye_y],
                                    [size / 2 - 25 * scale, mouth_y], [size / 2 + 25 * scale, mouth_y]])
    expected = expected_continuous - 0.5           # pixel-index coordinates
    matrix = ffhq_alignment_matrix(FACE, size)
    np.testing.assert_allclose(FACE[[0, 1, 3, 4]] @ matrix[:, :2].T + matrix[:, 2], expected, atol=1e-9)
    for point in expected:  # measured: within 0.01 px
        np.testing.assert_allclose(_blob_centre(aligned, point, radius=max(3, size // 20)), point, atol=0.1)


def _rotate_scale(image: Image.Image, landmarks: np.ndarray, angle_deg: float, scale: float,
                  shift: tuple[float, float], out_size: tuple[int, int]) -> tuple[Image.Image, np.ndarray]:
    """A rotated, scaled, shifted copy of the image and its landmarks (continuous coordinates throughout)."""
    angle = np.deg2rad(angle_deg)
    forward = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    shift = np.asarray(shift)
    inverse = np.linalg.inv(forward)
    offset = -inverse @ shift  # output point q -> source point inverse @ (q - shift)
    coefficients = (inverse[0, 0], inverse[0, 1], offset[0], inverse[1, 0], inverse[1, 1], offset[1])
    moved = image.transform(out_size, Image.Transform.AFFINE, coefficients, resample=Image.Resampling.BICUBIC)
    moved_landmarks = (landmarks + 0.5) @ forward.T + shift - 0.5
    return moved, moved_landmarks


def test_alignment_is_invariant_to_rotation_and_scale() -> None:
    rng = np.random.default_rng(0)
    texture = rng.random((42, 40)) * 200  # smooth texture: a 10x upsampled random field
    background = np.asarray(Image.fromarray(np.uint8(texture)).resize((400, 420), Image.Resampling.BICUBIC))
    image = _draw_blobs((400, 420), FACE[[0, 1, 3, 4]], sigma=4.0, background=background)
    moved, moved_landmarks = _rotate_scale(image, FACE, angle_deg=25.0, scale=1.6, shift=(250.0, -60.0),
                                           out_size=(720, 640))
    reference = np.asarray(ffhq_align(image, FACE, 96, padding="black"), dtype=np.float64)
    rotated = np.asarray(ffhq_align(moved, moved_landmarks, 96, padding="black"), dtype=np.float64)
    # Measured 0.4 levels of 255 (resampling only); a landmark 1.5 px off already gives about 6.
    assert np.abs(reference - rotated).mean() < 1.5


def test_padding_fills_the_outside_of_the_photo() -> None:
    # A face near the top-left corner of a bright photo: its crop square leaves the photo.
    photo = Image.new("RGB", (300, 300), (200, 180, 160))
    near_corner = FACE - np.array([150.0, 160.0])
    black = np.asarray(ffhq_align(photo, near_corner, 64, padding="black"))
    assert (black.sum(axis=2) == 0).any()
    for padding in ("ffhq", "reflect"):
        filled = np.asarray(ffhq_align(photo, near_corner, 64, padding=padding)).astype(int)
        assert np.abs(filled - np.array([200, 180, 160])).max() <= 2, padding


def test_psp_face_box_is_the_arcface_alignment_of_an_ffhq_face() -> None:
    """Why ArcFaceIdentity uses crop_faces: an FFHQ-aligned ArcFace template lands on the template, to 2 px."""
    matrix = ffhq_alignment_matrix(ARCFACE_TEMPLATE_112, 256)
    in_256 = ARCFACE_TEMPLATE_112 @ matrix[:, :2].T + matrix[:, 2]
    # crop_faces: rows 35:223 and cols 32:220 of 256 px, pooled from 188 to 112 px.
    in_crop = (in_256 + 0.5 - np.array([32.0, 35.0])) * 112 / 188 - 0.5
    assert np.abs(in_crop - ARCFACE_TEMPLATE_112).max() < 2.0


def test_alignment_rejects_bad_landmarks() -> None:
    image = Image.new("RGB", (64, 64))
    with pytest.raises(ValueError, match="5 finite"):
        ffhq_align(image, np.zeros((4, 2)), 32)
    with pytest.raises(ValueError, match="degenerate"):
        ffhq_align(image, np.zeros((5, 2)), 32)
    with pytest.raises(ValueError, match="outside"):
        ffhq_align(image, FACE + 5000, 32, padding="black")


# --------------------------------------------------------------------------------------------------------------
# prepare_folder
# --------------------------------------------------------------------------------------------------------------


def _face_photo(offset: tuple[float, float] = (0.0, 0.0)) -> tuple[Image.Image, np.ndarray]:
    landmarks = FACE + np.asarray(offset)
    return _draw_blobs((400, 420), landmarks[[0, 1, 3, 4]], sigma=4.0), landmarks


def test_prepare_folder_with_a_landmarks_file(tmp_path) -> None:
    source, destination = tmp_path / "photos", tmp_path / "aligned"
    (source / "alice").mkdir(parents=True)
    photo, landmarks = _face_photo()
    photo.save(source / "alice" / "one.jpg", quality=95)
    shifted, shifted_landmarks = _face_photo((20.0, -10.0))
    shifted.save(source / "two.png")
    photo.save(source / "unlisted.png")
    (source / "broken.jpg").write_bytes(b"not an image")
    entries = {str(source / "alice" / "one.jpg"): landmarks.tolist(),  # absolute keys work too
               "./two.png": shifted_landmarks.ravel().tolist(),
               "broken.jpg": landmarks.tolist(), "ghost.png": landmarks.tolist()}
    landmarks_file = tmp_path / "landmarks.json"
    landmarks_file.write_text(json.dumps(entries))

    report = prepare_folder(source, destination, output_size=64, landmarks_file=landmarks_file)
    assert report.written == ["alice/one.jpg", "two.png"]
    assert set(report.failed) == {"broken.jpg", "unlisted.png"}
    assert "no landmarks" in report.failed["unlisted.png"]
    assert report.unused_landmarks == ["ghost.png"]
    assert "unlisted.png" in report.summary() and "broken.jpg" in report.summary()
    first = Image.open(destination / "alice" / "one.png")
    assert first.size == (64, 64)
    # Both photos show the same face at different places: aligned, they agree.
    second = np.asarray(Image.open(destination / "two.png"), dtype=np.float64)
    assert np.abs(np.asarray(first, dtype=np.float64) - second).mean() < 2.0

    before = (destination / "two.png").stat().st_mtime_ns
    with pytest.raises(FileExistsError, match="already exist"):
        prepare_folder(source, destination, output_size=64, landmarks_file=landmarks_file)
    assert (destination / "two.png").stat().st_mtime_ns == before
    skipped = prepare_folder(source, destination, output_size=64, landmarks_file=landmarks_file,
                             skip_existing=True)
    assert skipped.skipped == ["alice/one.jpg", "two.png"] and skipped.written == []
    again = prepare_folder(source, destination, output_size=32, landmarks_file=landmarks_file, overwrite=True)
    assert again.written == ["alice/one.jpg", "two.png"]
    assert Image.open(destination / "two.png").size == (32, 32)


def _two_photos_with_landmarks(tmp_path: Path) -> tuple[Path, Path]:
    source = tmp_path / "photos"
    source.mkdir()
    photo, landmarks = _face_photo()
    photo.save(source / "one.png")
    photo.save(source / "two.png")
    landmarks_file = tmp_path / "landmarks.json"
    landmarks_file.write_text(json.dumps({"one.png": landmarks.tolist(), "two.png": landmarks.tolist()}))
    return source, landmarks_file


def test_prepare_on_a_full_disk_is_one_line_and_keeps_what_was_written(tmp_path, monkeypatch, capsys) -> None:
    from grain_pl.commands import main

    source, landmarks_file = _two_photos_with_landmarks(tmp_path)
    destination = tmp_path / "aligned"
    real_fsync, written = os.fsync, []

    def fsync(descriptor: int) -> None:  # the second output's write finds the disk full
        if stat.S_ISREG(os.fstat(descriptor).st_mode):
            if written:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            written.append(descriptor)
        real_fsync(descriptor)

    monkeypatch.setattr("grain_pl.io.files.os.fsync", fsync)
    arguments = ["prepare", str(source), "-o", str(destination), "--landmarks", str(landmarks_file), "--size", "32"]
    assert main(arguments) == 2
    error = capsys.readouterr().err.splitlines()[-1]  # after the progress line
    assert error == (f"grain prepare: error: {destination / 'two.png'}: cannot write it: No space left on device; "
                     "1 aligned face(s) written before it are complete (rerun with --skip-existing to do the rest)")
    assert sorted(path.name for path in destination.iterdir()) == ["one.png"]  # no partial file, no temporary
    Image.open(destination / "one.png").load()

    monkeypatch.setattr("grain_pl.io.files.os.fsync", real_fsync)  # space again: the rerun does the rest
    assert main([*arguments, "--skip-existing"]) == 0
    assert sorted(path.name for path in destination.iterdir()) == ["one.png", "two.png"]


def test_prepare_into_a_read_only_folder_is_one_line_before_any_work(tmp_path, monkeypatch, capsys) -> None:
    from grain_pl.commands import main

    source, landmarks_file = _two_photos_with_landmarks(tmp_path)
    destination = tmp_path / "aligned"

    def refused(*args, **kwargs):  # the tests run as root, where a chmod-ed folder stays writable
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    monkeypatch.setattr("grain_pl.io.files.tempfile.TemporaryFile", refused)
    monkeypatch.setattr("grain_pl.data.prepare.load_rgb_image", lambda path: pytest.fail("read before the check"))
    assert main(["prepare", str(source), "-o", str(destination), "--landmarks", str(landmarks_file)]) == 2
    assert capsys.readouterr().err == f"grain prepare: error: {destination}: cannot write there: Read-only file " \
                                      "system\n"
    assert list(destination.iterdir()) == []


def test_landmarks_csv_with_header(tmp_path) -> None:
    csv_file = tmp_path / "points.csv"
    values = ",".join(str(value) for value in FACE.ravel())
    csv_file.write_text(f"path,lx,ly,rx,ry,nx,ny,mlx,mly,mrx,mry\nsub\\a.jpg,{values}\n")
    entries = load_landmarks_file(csv_file)
    np.testing.assert_array_equal(entries["sub/a.jpg"], FACE)
    csv_file.write_text("a.jpg,1,2,3\n")
    with pytest.raises(ValueError, match="a.jpg"):
        load_landmarks_file(csv_file)


class FakeDetector:
    """Plumbing only: an object with SCRFD's `detect` interface returning fixed faces (no real detection)."""

    def __init__(self, faces: dict[int, list[np.ndarray]]) -> None:
        self.faces = faces  # image width -> list of 5x2 landmarks

    def detect(self, img: np.ndarray, input_size=None):
        found = self.faces.get(img.shape[1], [])
        boxes = [[*points.min(axis=0), *points.max(axis=0), 0.9] for points in found]
        return np.array(boxes, dtype=np.float32).reshape(-1, 5), np.array(found, dtype=np.float32).reshape(-1, 5, 2)


def test_prepare_folder_with_a_detector_object(tmp_path) -> None:
    source = tmp_path / "photos"
    source.mkdir()
    photo, landmarks = _face_photo()
    photo.save(source / "face.png")
    Image.new("RGB", (50, 50)).save(source / "empty.png")
    small_face = landmarks * 0.2
    detector = FakeDetector({400: [small_face, landmarks]})  # the largest face must win
    np.testing.assert_allclose(detect_landmarks(photo, detector), landmarks, atol=1e-4)
    with pytest.raises(NoFaceFoundError, match="empty.png"):
        detect_landmarks(Image.new("RGB", (50, 50)), detector, name="empty.png")

    report = prepare_folder(source, tmp_path / "out", output_size=48, detector=detector)
    assert report.written == ["face.png"]
    assert report.failed == {"empty.png": "no face found"}


class TinySCRFD(nn.Module):
    """An SCRFD-shaped ONNX model (9 outputs: scores, boxes, 5 keypoints for strides 8/16/32, 2 anchors each,
    fixed 128x128 input) that reports fixed faces when the picture is bright and none when it is dark."""

    def __init__(self, faces: list[tuple[int, int, int, int, np.ndarray, tuple[float, ...]]]) -> None:
        super().__init__()
        for stride in (8, 16, 32):
            count = (128 // stride) ** 2 * 2
            scores, boxes, keypoints = torch.zeros(count, 1), torch.zeros(count, 4), torch.zeros(count, 10)
            for face_stride, row, col, anchor, points, box in faces:
                if face_stride != stride:
                    continue
                index = (row * (128 // stride) + col) * 2 + anchor
                centre = np.array([col * stride, row * stride], dtype=np.float64)
                scores[index] = 0.9
                boxes[index] = torch.tensor(box) / stride  # distances left, top, right, bottom
                keypoints[index] = torch.from_numpy(((points - centre) / stride).ravel()).float()
            self.register_buffer(f"scores{stride}", scores)
            self.register_buffer(f"boxes{stride}", boxes)
            self.register_buffer(f"kps{stride}", keypoints)

    def forward(self, blob: torch.Tensor):
        bright = torch.sigmoid((blob.mean() - 0.2) * 50.0)  # insightface feeds (pixel - 127.5) / 128
        zero = blob.mean() * 0.0
        strides = (8, 16, 32)
        return (*[getattr(self, f"scores{s}") * bright for s in strides],
                *[getattr(self, f"boxes{s}") + zero for s in strides],
                *[getattr(self, f"kps{s}") + zero for s in strides])


@needs_insightface
def test_detector_through_insightface_scrfd(tmp_path) -> None:
    """The SCRFD path end to end on a synthetic model: insightface's router, its decoding, our largest-face pick."""
    big = np.array([[50.0, 56.0], [78.0, 56.0], [64.0, 70.0], [52.0, 86.0], [76.0, 86.0]])  # in the 128 input
    small = np.array([[28.0, 29.0], [36.0, 29.0], [32.0, 33.0], [29.0, 37.0], [35.0, 37.0]])
    network = TinySCRFD([(8, 8, 8, 0, big, (30.0, 34.0, 30.0, 46.0)), (16, 2, 2, 1, small, (10.0, 10.0, 10.0, 10.0))])
    names = [f"{kind}_{stride}" for kind in ("score", "bbox", "kps") for stride in (8, 16, 32)]
    model_path = _export_onnx(network, torch.zeros(1, 3, 128, 128), tmp_path / "det_10g.onnx", names,
                              dynamic_batch=False)
    detector = load_detector(model_path, providers=["CPUExecutionProvider"])
    assert type(detector).__name__ == "SCRFD"

    bright = Image.new("RGB", (256, 256), (230, 230, 230))  # the detector sees it at half size
    np.testing.assert_allclose(detect_landmarks(bright, detector), big * 2, atol=1e-3)
    with pytest.raises(NoFaceFoundError, match="dark.png"):
        detect_landmarks(Image.new("RGB", (256, 256)), detector, name="dark.png")
    with pytest.raises(ValueError, match="not a face recognition model"):
        ArcFaceIdentity.from_path(model_path)
    with pytest.raises(FaceModelMissingError, match="det_10g.onnx"):
        load_detector(None, root=tmp_path / "empty")


def test_prepare_command(tmp_path, capsys) -> None:
    parser = argparse.ArgumentParser(prog="grain")
    add_prepare_command(parser.add_subparsers(dest="command", required=True))
    source = tmp_path / "photos"
    source.mkdir()
    photo, landmarks = _face_photo()
    photo.save(source / "a.png")
    landmarks_file = tmp_path / "points.json"
    landmarks_file.write_text(json.dumps({"a.png": landmarks.tolist()}))
    argv = ["prepare", str(source), "-o", str(tmp_path / "out"), "--size", "40", "--landmarks", str(landmarks_file)]
    args = parser.parse_args(argv)
    assert "aligned 1 image(s)" in args.run(args)
    assert Image.open(tmp_path / "out" / "a.png").size == (40, 40)
    with pytest.raises(FileExistsError):
        args.run(parser.parse_args(argv))
    args = parser.parse_args([*argv, "--overwrite"])
    assert "aligned 1 image(s)" in args.run(args)
    with pytest.raises(SystemExit):  # a landmarks file and a detector exclude each other
        parser.parse_args([*argv, "--detector", "det.onnx"])
    capsys.readouterr()


def test_prepare_reports_what_its_listing_skipped(tmp_path) -> None:
    source, destination = tmp_path / "photos", tmp_path / "photos" / "aligned"
    (source / "people").mkdir(parents=True)
    photo, landmarks = _face_photo()
    photo.save(source / "people" / "one.png")
    photo.save(source / ".hidden.png")
    (source / "linked").symlink_to(source / "people")  # the same folder twice: listed once
    (source / "dangling.png").symlink_to(tmp_path / "gone.png")
    landmarks_file = tmp_path / "landmarks.json"
    landmarks_file.write_text(json.dumps({"people/one.png": landmarks.tolist()}))
    report = prepare_folder(source, destination, output_size=32, landmarks_file=landmarks_file)
    assert report.written == ["people/one.png"]
    again = prepare_folder(source, destination, output_size=32, landmarks_file=landmarks_file, skip_existing=True)
    lines = again.summary().splitlines()
    assert lines[0] == "aligned 0 image(s), skipped 1 existing"
    assert lines[1].startswith("  skipped 4: 1 hidden, name starting with '.'")
    for reason in ("1 broken symbolic link", "1 folder already searched", "1 output folder, inside the source"):
        assert reason in lines[1]


@pytest.mark.parametrize(("option", "expected"), [(["--size", "0"], "output_size (--size) must be at least 1, got 0"),
                                                  (["--det-size", "-1"], "(--det-size) must be positive")])
def test_prepare_refuses_impossible_sizes_up_front(option, expected, tmp_path, capsys) -> None:
    from grain_pl.commands import main

    source, landmarks_file = _two_photos_with_landmarks(tmp_path)
    landmarks = ["--landmarks", str(landmarks_file)] if option[0] == "--size" else []
    assert main(["prepare", str(source), "-o", str(tmp_path / "aligned"), *landmarks, *option]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and expected in error  # not "aligned 0 image(s), 2 failed", file by file
