"""torchvision's uint8 bicubic antialiased resize on synthetic images, recorded as sha256 of the output.

Run with the reference venv:  tools/reference/.venv/bin/python crates/gar-processor/tests/data/gen_resize_cases.py
Input plane bytes (C=3, CHW): v[i] = ((i * 6364136223846793005 + seed * 1442695040888963407) mod 2^64) >> 56,
blended with a smooth ramp so both noise and gradients are covered (see `pixels`).
Kernel facts this pins down: see crates/gar-processor/src/resize.rs (`Arith::TorchCpu`).
"""
import hashlib, json, os
import numpy as np, torch
from torchvision.transforms import functional as F

M = (1 << 64) - 1


def pixels(h, w, seed):
    i = np.arange(3 * h * w, dtype=np.uint64)
    noise = ((i * np.uint64(6364136223846793005) + np.uint64(seed * 1442695040888963407 & M)) >> np.uint64(56)).astype(np.int64)
    ramp = (np.arange(3 * h * w) % w) * 255 // max(w - 1, 1)
    return ((noise + ramp) // 2).astype(np.uint8).reshape(3, h, w)


cases = []
sizes = [
    ((37, 53), (448, 448)), ((37, 53), (1344, 2240)), ((480, 640), (448, 448)), ((480, 640), (1344, 1792)),
    ((1000, 300), (3136, 896)), ((1365, 2048), (896, 1344)), ((448, 449), (448, 448)), ((449, 448), (1792, 1792)),
    ((223, 1800), (448, 4032)), ((3000, 200), (448, 448)), ((3000, 20), (448, 448)), ((1, 700), (448, 448)),
    ((700, 1), (896, 448)), ((5, 5), (448, 448)), ((448, 448), (896, 896)), ((1024, 770), (448, 448)),
    ((2000, 4000), (448, 448)), ((4000, 2000), (1792, 896)), ((448, 1000), (448, 448)), ((896, 448), (896, 1344)),
]
for n, ((h, w), (oh, ow)) in enumerate(sizes):
    x = torch.from_numpy(pixels(h, w, n))
    y = F.resize(x, [oh, ow], interpolation=F.InterpolationMode.BICUBIC)
    cases.append(dict(seed=n, h=h, w=w, oh=oh, ow=ow, sha256=hashlib.sha256(y.numpy().tobytes()).hexdigest(),
                      mean=float(y.float().mean())))
out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "resize_cases.json")
json.dump(dict(torch=torch.__version__, cpu_capability=torch.backends.cpu.get_cpu_capability(), cases=cases),
          open(out, "w"), indent=1)
print(len(cases), torch.__version__, torch.backends.cpu.get_cpu_capability())
