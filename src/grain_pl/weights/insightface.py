"""insightface model-zoo files (.onnx): where they are found and how they are opened, all offline.

insightface keeps its model packs under `~/.insightface/models/<pack>/` (FaceAnalysis(name="buffalo_l") unpacks
buffalo_l.zip there). `find_insightface_model` looks there for the known file names; `load_zoo_model` opens a given
file, a model-pack folder or the default location through insightface's own model zoo and checks that the file is
the kind of model asked for. Nothing is downloaded: a missing file raises `FaceModelMissingError`, whose message
lists the expected files and how to get them.

Users: the ArcFace identity metric (`grain_pl.metrics.arcface`, recognition files) and face detection for
alignment (`grain_pl.data.faces`, SCRFD detector files). insightface and onnxruntime (the `faces` extra) are
imported only when a model is opened.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = [
    "DEFAULT_INSIGHTFACE_ROOT",
    "DETECTOR_FILES",
    "MODEL_ZOO_URL",
    "RECOGNITION_FILES",
    "FaceModelMissingError",
    "find_insightface_model",
    "load_zoo_model",
]

# Where insightface keeps its model packs: FaceAnalysis(name="buffalo_l") unpacks buffalo_l.zip into
# <root>/models/buffalo_l/ (insightface.utils.storage; the root is a parameter there, "~/.insightface" by default).
DEFAULT_INSIGHTFACE_ROOT = "~/.insightface"
MODEL_ZOO_URL = "https://github.com/deepinsight/insightface/releases/download/model-zoo/"

# (pack, file) pairs, in the order they are tried. buffalo_l is insightface's default pack.
RECOGNITION_FILES: tuple[tuple[str, str], ...] = (
    ("buffalo_l", "w600k_r50.onnx"),   # ArcFace ResNet-50, WebFace600K
    ("antelopev2", "glintr100.onnx"),  # ArcFace ResNet-100, Glint360K
    ("buffalo_m", "w600k_r50.onnx"),
    ("buffalo_s", "w600k_mbf.onnx"),   # MobileFaceNet, WebFace600K
    ("buffalo_sc", "w600k_mbf.onnx"),
)
DETECTOR_FILES: tuple[tuple[str, str], ...] = (
    ("buffalo_l", "det_10g.onnx"),     # SCRFD-10GF with 5 keypoints
    ("antelopev2", "scrfd_10g_bnkps.onnx"),
    ("buffalo_m", "det_2.5g.onnx"),
    ("buffalo_s", "det_500m.onnx"),
    ("buffalo_sc", "det_500m.onnx"),
)


class FaceModelMissingError(FileNotFoundError):
    """An insightface model file that is not on this machine; the message says which files and how to get them."""


def _require_insightface(purpose: str) -> Any:
    try:
        import insightface.model_zoo as model_zoo
    except ImportError as error:
        raise ImportError(
            f"{purpose} needs insightface (and onnxruntime): pip install --constraint constraints.txt "
            f"-e '.[faces]' (or pip install insightface==2.1); import failed with: {error}"
        ) from error
    return model_zoo


def _missing_model_message(kind: str, candidates: tuple[tuple[str, str], ...], root: Path, flag: str) -> str:
    expected = "\n".join(f"  {root / 'models' / pack / name}" for pack, name in candidates)
    return (
        f"no insightface {kind} model found; looked for:\n{expected}\n"
        f"Get one on a machine with internet access: `python -c \"from insightface.app import FaceAnalysis; "
        f"FaceAnalysis(name='buffalo_l')\"` downloads and unpacks buffalo_l into {root / 'models' / 'buffalo_l'} "
        f"(or download {MODEL_ZOO_URL}buffalo_l.zip and unzip it there), then copy that folder here, or give the "
        f".onnx file with {flag}. insightface's pretrained models are licensed for non-commercial research only."
    )


def find_insightface_model(
    candidates: tuple[tuple[str, str], ...], root: str | Path = DEFAULT_INSIGHTFACE_ROOT
) -> Path | None:
    """The first existing `<root>/models/<pack>/<file>` among `candidates`, or None."""
    models = Path(root).expanduser() / "models"
    for pack, name in candidates:
        path = models / pack / name
        if path.is_file():
            return path
    return None


def _resolve_model_path(
    path: str | Path | None, candidates: tuple[tuple[str, str], ...], root: str | Path, kind: str, flag: str
) -> Path:
    """An explicit file, a model-pack folder (searched for the known file names), or the default location."""
    if path is None:
        found = find_insightface_model(candidates, root)
        if found is None:
            raise FaceModelMissingError(_missing_model_message(kind, candidates, Path(root).expanduser(), flag))
        return found
    path = Path(path).expanduser()
    if path.is_dir():  # a model pack such as ~/.insightface/models/buffalo_l
        for _, name in candidates:
            if (path / name).is_file():
                return path / name
        names = ", ".join(sorted({name for _, name in candidates}))
        raise FaceModelMissingError(f"{path} holds no insightface {kind} model (looked for {names})")
    if not path.is_file():
        raise FaceModelMissingError(f"insightface {kind} model {path} does not exist")
    return path


def load_zoo_model(path: str | Path | None, candidates: tuple[tuple[str, str], ...], root: str | Path, *,
                   kind: str, flag: str, purpose: str, task: str, providers: list[str] | None) -> tuple[Any, Path]:
    """Find the .onnx file (`_resolve_model_path`) and open it with insightface's model zoo; the file must be
    routed as `task` ("recognition", "detection"). Returns the model and its path."""
    model_path = _resolve_model_path(path, candidates, root, kind, flag)
    model_zoo = _require_insightface(purpose)
    kwargs = {} if providers is None else {"providers": providers}
    model = model_zoo.get_model(str(model_path), **kwargs)
    # insightface routes an ONNX file by its inputs and outputs (a square input of 112 px or more is recognition).
    if model is None or getattr(model, "taskname", None) != task:
        routed = getattr(model, "taskname", "unrecognised")
        raise ValueError(f"{model_path} is not a face {task} model (insightface routes it as: {routed})")
    return model, model_path

