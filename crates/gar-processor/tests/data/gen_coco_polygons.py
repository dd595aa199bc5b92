# Requires pycocotools 2.0.x (pip install pycocotools numpy); not part of the reference venv.
# Generates crates/gar-processor/tests/data/coco_polygons.json with pycocotools 2.x (frPyObjects + merge).
import json, numpy as np
import pycocotools.mask as mu
rng = np.random.default_rng(1)
cases = []
def add(h, w, polys, kind):
    rles = mu.frPyObjects(polys, h, w)
    rle = mu.merge(rles) if isinstance(rles, list) else rles
    cases.append(dict(kind=kind, h=h, w=w, polygons=polys, counts=rle['counts'].decode(), area=int(mu.area(rle))))
for i in range(60):
    h, w = int(rng.integers(5, 120)), int(rng.integers(5, 120))
    n = int(rng.integers(3, 9))
    pts = []
    for _ in range(n):
        pts += [round(float(rng.uniform(-5, w + 5)), 2), round(float(rng.uniform(-5, h + 5)), 2)]
    polys = [pts]
    if i % 5 == 0:  # repeated vertex (degenerate edge), closing point repeated
        polys = [pts + pts[:2]]
    if i % 7 == 0:  # several parts
        polys.append([float(v) for v in rng.integers(0, min(h, w), 8)])
    add(h, w, polys, 'polygon')
for i in range(30):
    h, w = int(rng.integers(5, 120)), int(rng.integers(5, 120))
    x, y = float(rng.uniform(0, w)), float(rng.uniform(0, h))
    bw, bh = float(rng.uniform(0.5, w - x + 3)), float(rng.uniform(0.5, h - y + 3))
    if i % 3 == 0:
        x, y, bw, bh = [float(int(v)) for v in (x, y, bw + 1, bh + 1)]
    # Ferret-Bench stores boxes as 4-corner polygons: x,y, x+w,y, x+w,y+h, x,y+h
    add(h, w, [[x, y, x + bw, y, x + bw, y + bh, x, y + bh]], 'box')
json.dump(dict(generator='pycocotools frPyObjects+merge, tools in /tmp/coco_gen.py (see tests/data/README.md)', cases=cases), open(__import__('os').path.join(__import__('os').path.dirname(__import__('os').path.abspath(__file__)), 'coco_polygons.json'), 'w'))
print(len(cases))
