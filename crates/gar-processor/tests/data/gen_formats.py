"""Small images in many formats/modes and what Pillow 11.3 (the reference) makes of them.

Run with the reference venv:  tools/reference/.venv/bin/python crates/gar-processor/tests/data/gen_formats.py
For every input file X it writes X.rgb.png = Image.open(X).convert("RGB") and X.l.png = ...convert("L").
"""
import io, os, struct, zlib
import numpy as np
from PIL import Image

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "formats")
os.makedirs(OUT, exist_ok=True)
rng = np.random.default_rng(7)
H, W = 23, 37


def smooth(ch):
    y, x = np.mgrid[0:H, 0:W]
    base = [(x * 7 + y * 3) % 256, (x * 2 + y * 11) % 256, (255 - x * 5) % 256, (y * 9) % 256][:ch]
    a = np.stack(base, -1).astype(np.int32) + rng.integers(-20, 20, (H, W, ch))
    return np.clip(a, 0, 255).astype(np.uint8)


def png16(path, arr, color_type):
    """Minimal 16-bit PNG writer (PIL cannot write 16-bit RGB)."""
    h, w = arr.shape[:2]
    raw = b"".join(b"\x00" + arr[y].astype(">u2").tobytes() for y in range(h))
    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xFFFFFFFF)
    ihdr = struct.pack(">IIBBBBB", w, h, 16, color_type, 0, 0, 0)
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


rgb = Image.fromarray(smooth(3))
rgba = Image.fromarray(smooth(4), "RGBA")
gray = Image.fromarray(smooth(1)[:, :, 0], "L")
files = {}
files["rgb.png"] = lambda p: rgb.save(p)
files["rgba.png"] = lambda p: rgba.save(p)
files["la.png"] = lambda p: Image.merge("LA", (gray, gray.point(lambda v: 255 - v))).save(p)
files["l.png"] = lambda p: gray.save(p)
files["p.png"] = lambda p: rgb.quantize(50).save(p)
files["p_trns.png"] = lambda p: rgb.quantize(20).save(p, transparency=3)
files["bilevel.png"] = lambda p: gray.convert("1").save(p)
files["l4.png"] = lambda p: gray.save(p, bits=4)
files["gray16.png"] = lambda p: Image.fromarray((smooth(1)[:, :, 0].astype(np.uint16) * 3), "I;16").save(p)
files["rgb16.png"] = lambda p: png16(p, smooth(3).astype(np.uint16) * 257 + rng.integers(0, 256, (H, W, 3)), 2)
files["rgba16.png"] = lambda p: png16(p, smooth(4).astype(np.uint16) * 257, 6)
files["la16.png"] = lambda p: png16(p, smooth(2).astype(np.uint16) * 251, 4)
files["q90.jpg"] = lambda p: rgb.save(p, quality=90)
files["q75_444.jpg"] = lambda p: rgb.save(p, quality=75, subsampling=0)
files["q75_422.jpg"] = lambda p: rgb.save(p, quality=75, subsampling=1)
files["progressive.jpg"] = lambda p: rgb.save(p, quality=80, progressive=True)
files["gray.jpg"] = lambda p: gray.save(p, quality=85)
files["cmyk.jpg"] = lambda p: rgb.convert("CMYK").save(p, quality=90)
files["lossy.webp"] = lambda p: rgb.save(p, quality=80)
files["lossless.webp"] = lambda p: rgb.save(p, lossless=True)
files["alpha.webp"] = lambda p: rgba.save(p, lossless=True)
files["rgb.bmp"] = lambda p: rgb.save(p)
files["p.bmp"] = lambda p: rgb.quantize(16).save(p)
files["l.bmp"] = lambda p: gray.save(p)
files["p.gif"] = lambda p: rgb.quantize(64).save(p)
files["trns.gif"] = lambda p: rgb.quantize(32).save(p, transparency=5)
files["anim.gif"] = lambda p: rgb.quantize(32).save(p, save_all=True, append_images=[gray.convert("P")], duration=50)
files["l.gif"] = lambda p: gray.save(p)
files["rgb.tif"] = lambda p: rgb.save(p)
files["lzw.tif"] = lambda p: rgb.save(p, compression="tiff_lzw")
files["gray16.tif"] = lambda p: Image.fromarray((smooth(1)[:, :, 0].astype(np.uint16) * 2), "I;16").save(p)
files["rgba.tif"] = lambda p: rgba.save(p)



def exif_jpeg(p, orientation):
    ex = Image.Exif()
    ex[0x0112] = orientation
    rgb.save(p, quality=90, exif=ex.tobytes())


files["exif6.jpg"] = lambda p: exif_jpeg(p, 6)
files["exif3.jpg"] = lambda p: exif_jpeg(p, 3)

for name, make in files.items():
    path = os.path.join(OUT, name)
    make(path)
    im = Image.open(path)
    im.convert("RGB").save(path + ".rgb.png")
    Image.open(path).convert("L").save(path + ".l.png")
    if name.startswith("exif"):
        from PIL import ImageOps
        ImageOps.exif_transpose(Image.open(path)).convert("RGB").save(path + ".oriented.png")
    print(f"{name:16s} {im.format:5s} {im.mode}")
