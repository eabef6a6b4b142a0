"""Checks that a PNG is a real picture: decodable, of a sensible size, and not one flat colour."""

from __future__ import annotations

import io

from PIL import Image, ImageStat


def assert_picture(png: bytes, min_size: tuple[int, int] = (200, 150), min_colours: int = 20) -> Image.Image:
    assert png[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    image = Image.open(io.BytesIO(png)).convert("RGB")
    assert image.width >= min_size[0] and image.height >= min_size[1], f"image too small: {image.size}"
    colours = image.getcolors(maxcolors=1 << 20)
    n_colours = len(colours) if colours is not None else 1 << 20
    assert n_colours >= min_colours, f"only {n_colours} colours: the picture is (nearly) blank"
    spread = max(ImageStat.Stat(image.convert("L")).stddev)
    assert spread > 5, f"grey-level spread {spread:.1f}: the picture is (nearly) blank"
    return image
