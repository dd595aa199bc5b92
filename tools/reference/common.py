"""Shared helpers for the parity-fixture generators: paths, determinism, stable writers."""

import hashlib
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("OMP_NUM_THREADS", "2")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
FIXTURES = REPO / "fixtures"
CKPT_DIR = FIXTURES / "checkpoints"


def shared_data() -> Path:
    """Location of the read-only benchmark data (`shared/data`)."""
    env = os.environ.get("GAR_SHARED_DATA")
    if env:
        return Path(env)
    for cand in (REPO / "shared" / "data", REPO.parent / "shared" / "data"):
        if cand.is_dir():
            return cand
    sys.exit("shared/data not found: set GAR_SHARED_DATA")


def setup_torch(threads: int = 2) -> None:
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    np.random.seed(0)
    torch.use_deterministic_algorithms(True)


def name_seed(name: str, base: int = 0) -> int:
    """A stable 63-bit seed derived from a string (independent of PYTHONHASHSEED)."""
    h = hashlib.sha256(f"{base}:{name}".encode()).digest()
    return int.from_bytes(h[:8], "little") & ((1 << 63) - 1)


def write_json(path: Path, obj, indent=1) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(obj, indent=indent, sort_keys=True, ensure_ascii=False, allow_nan=False)
    path.write_text(text + "\n", encoding="utf-8")


def write_png(path: Path, arr: np.ndarray) -> None:
    """Deterministic PNG (no metadata, fixed zlib level). arr: HxW (L) or HxWx3 (RGB) uint8."""
    assert arr.dtype == np.uint8, arr.dtype
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = "L" if arr.ndim == 2 else "RGB"
    Image.fromarray(np.ascontiguousarray(arr), mode=mode).save(path, format="PNG", optimize=False, compress_level=9)


def save_tensors(path: Path, tensors: dict) -> None:
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    clean = {k: v.detach().contiguous().cpu() for k, v in sorted(tensors.items())}
    save_file(clean, str(path), metadata={"format": "pt"})


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def versions() -> dict:
    import PIL
    import safetensors
    import timm
    import tokenizers
    import torchvision
    import transformers

    return {
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "transformers": transformers.__version__,
        "timm": timm.__version__,
        "numpy": np.__version__,
        "pillow": PIL.__version__,
        "safetensors": safetensors.__version__,
        "tokenizers": tokenizers.__version__,
    }


def write_generated_by(folder: Path, command: str, what: str, extra: str = "") -> None:
    v = versions()
    lines = [
        "# Generated file set — do not edit by hand",
        "",
        what.strip(),
        "",
        f"Command: `{command}` (regenerates everything: `tools/reference/regenerate.sh`).",
        "",
        "Pinned versions (from `tools/reference/requirements.txt`):",
        "",
    ]
    lines += [f"* {k} {v[k]}" for k in sorted(v)]
    if extra:
        lines += ["", extra.strip()]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "GENERATED_BY.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
