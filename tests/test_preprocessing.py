"""Image loading and sizing for dots.ocr: real Pillow decoding, the real Qwen2-VL image processor."""

from __future__ import annotations

import io
import random
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from dotocr.engine.images import MAX_INPUT_PIXELS, load_image
from dotocr.engine.preprocessing import MAX_ASPECT_RATIO, ImagePreparer, PreparedImage
from dotocr.errors import ImageError, ModelUnavailableError

pytestmark = pytest.mark.timeout(120)

MEAN = np.array([0.48145466, 0.4578275, 0.40821073])
STD = np.array([0.26862954, 0.26130258, 0.27577711])


@pytest.fixture(scope="module")
def preparer(dots_tiny: Path) -> ImagePreparer:
    return ImagePreparer.from_pretrained(dots_tiny)


def png_bytes(image: Image.Image, **params) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG", **params)
    return buffer.getvalue()


def crafted_png(width: int, height: int) -> bytes:
    """A PNG whose header claims any size (valid CRCs), with a token IDAT: no real pixels behind it."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
            + chunk(b"IEND", b""))


def noise(width: int, height: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8), "RGB")


def pixels(image: Image.Image) -> list[tuple[int, ...]]:
    return [tuple(int(v) for v in p) for p in np.asarray(image).reshape(-1, len(image.getbands()))]


def assert_one_sentence(error: ImageError, *fragments: str) -> None:
    message = str(error)
    assert "\n" not in message and message.endswith("."), message
    assert "Traceback" not in message
    for fragment in fragments:
        assert fragment in message, message


def check_prepared(prepared: PreparedImage, max_image_size: int, preparer: ImagePreparer) -> None:
    width, height = prepared.image.size
    assert width % 28 == 0 and height % 28 == 0
    assert max(width, height) <= max_image_size
    assert max(width, height) <= MAX_ASPECT_RATIO * min(width, height)
    if max_image_size >= 56:
        assert width * height >= preparer.min_pixels
    t, grid_h, grid_w = prepared.grid_thw[0].tolist()
    assert prepared.grid_thw.shape == (1, 3) and t == 1
    assert (grid_w * 14, grid_h * 14) == (width, height)
    assert prepared.pixel_values.shape == (t * grid_h * grid_w, 3 * 14 * 14)
    assert prepared.pixel_values.dtype.is_floating_point and prepared.pixel_values.element_size() == 4
    assert prepared.image_tokens == t * grid_h * grid_w // 4 == prepared.pixel_values.shape[0] // 4
    content_w, content_h = prepared.content_size
    assert 1 <= content_w <= width and 1 <= content_h <= height
    assert 0 <= prepared.pad[0] < width and 0 <= prepared.pad[1] < height


# -- sizing ----------------------------------------------------------------------------------------


SIZES = [(1, 1), (7, 3), (27, 29), (180, 14), (3000, 14), (14, 3000), (1920, 1080), (1080, 1920),
         (999, 777), (28, 28), (56, 56), (1025, 1024), (2, 600), (333, 3333), (4000, 3000)]


@pytest.mark.parametrize("size", SIZES, ids=[f"{w}x{h}" for w, h in SIZES])
@pytest.mark.parametrize("max_image_size", [1024, 500])
def test_prepare_gives_a_valid_grid_for_every_size(preparer, size, max_image_size):
    prepared = preparer.prepare(noise(*size), max_image_size)
    check_prepared(prepared, max_image_size, preparer)
    assert prepared.original_size == size


def test_plan_rules_hold_for_thousands_of_random_sizes(preparer):
    rng = random.Random(7)
    for _ in range(3000):
        width, height = rng.randint(1, 12000), rng.randint(1, 12000)
        if rng.random() < 0.3:
            height = rng.randint(1, 40)
        limit = rng.choice([28, 56, 100, 512, 1024, 1280, 2048, 5000])
        plan = preparer.plan(width, height, limit)
        canvas_w, canvas_h = plan.canvas
        assert canvas_w % 28 == 0 and canvas_h % 28 == 0, (width, height, limit, plan)
        assert max(plan.canvas) <= max(28, limit), (width, height, limit, plan)
        assert canvas_w * canvas_h <= preparer.max_pixels
        assert max(plan.canvas) <= MAX_ASPECT_RATIO * min(plan.canvas)
        assert plan.content[0] <= canvas_w and plan.content[1] <= canvas_h
        # one scale for both axes, so boxes map back without distortion
        assert abs(plan.content[0] - width * plan.scale) <= 1
        assert abs(plan.content[1] - height * plan.scale) <= 1
        assert min(plan.pad) < 28  # padding beyond rounding only ever widens one side (min area, ratio)


def test_large_screenshot_is_brought_under_the_limit_keeping_its_aspect(preparer):
    prepared = preparer.prepare(noise(2560, 1440), 1024)
    assert prepared.image.size == (1008, 588)
    assert prepared.content_size == (1008, 567)  # 2560 x 1440 at 1008 / 2560
    assert prepared.scale == pytest.approx(1008 / 2560)
    assert prepared.pad == (0, 21)


def test_tiny_text_line_is_upscaled_four_times(preparer):
    prepared = preparer.prepare(noise(180, 14), 1024)
    assert prepared.scale == 4.0
    assert prepared.content_size == (720, 56)
    assert prepared.image.size == (728, 56)
    assert prepared.image_tokens == 26 * 2


def test_medium_crop_is_not_resized_only_padded(preparer):
    prepared = preparer.prepare(noise(333, 777), 1024)
    assert prepared.scale == 1.0
    assert prepared.image.size == (336, 784)
    assert np.array_equal(np.asarray(prepared.image)[:777, :333], np.asarray(noise(333, 777)))


def test_extreme_strip_is_padded_not_rejected(preparer):
    prepared = preparer.prepare(noise(3000, 14), 1024)
    assert prepared.image.size == (1008, 28)
    # a ratio past 200 is padded so smart_resize would accept it
    plan = preparer.plan(9000, 14, 10000)
    assert max(plan.canvas) / min(plan.canvas) <= MAX_ASPECT_RATIO
    assert plan.content[1] < plan.canvas[1]


def test_padding_is_white_and_content_is_the_resized_input(preparer):
    black = Image.new("RGB", (500, 203), (0, 0, 0))
    prepared = preparer.prepare(black, 1024)
    array = np.asarray(prepared.image)
    content_w, content_h = prepared.content_size
    assert prepared.pad == (4, 21)
    assert (array[:content_h, :content_w] == 0).all()
    assert (array[content_h:, :] == 255).all() and (array[:, content_w:] == 255).all()


def test_pixel_values_are_the_processors_own_in_merge_window_order(preparer):
    prepared = preparer.prepare(noise(300, 170, seed=3), 1024)
    # the processor left to its own resizing must agree: our canvas is already a size it accepts
    own = preparer.processor(images=prepared.image, return_tensors="pt")
    assert own["image_grid_thw"].tolist() == prepared.grid_thw.tolist()
    assert np.array_equal(own["pixel_values"].numpy(), prepared.pixel_values.numpy())
    # and independently: normalised 14 x 14 patches, ordered by 2 x 2 merge windows, row by row
    normalised = (np.asarray(prepared.image, dtype=np.float64) / 255.0 - MEAN) / STD
    grid_w = prepared.image.width // 14
    for row, col in [(0, 0), (0, 1), (1, 0), (1, 1), (0, 2), (2, 0), (3, 5), (11, 21)]:
        window = (row // 2) * (grid_w // 2) + col // 2
        index = window * 4 + (row % 2) * 2 + col % 2
        patch = normalised[row * 14:(row + 1) * 14, col * 14:(col + 1) * 14].transpose(2, 0, 1).reshape(-1)
        np.testing.assert_allclose(prepared.pixel_values[index].numpy(), patch, atol=1e-5)


def test_bbox_round_trip_and_a_drawn_box_maps_back(preparer):
    image = Image.new("RGB", (2000, 1000), "white")
    ImageDraw.Draw(image).rectangle((500, 300, 899, 599), fill="black")
    prepared = preparer.prepare(image, 1024)
    dark = np.argwhere(np.asarray(prepared.image.convert("L")) < 128)
    (y1, x1), (y2, x2) = dark.min(axis=0), dark.max(axis=0) + 1
    ox1, oy1 = prepared.to_original(x1, y1)
    ox2, oy2 = prepared.to_original(x2, y2)
    tolerance = 2 / prepared.scale
    assert abs(ox1 - 500) <= tolerance and abs(oy1 - 300) <= tolerance
    assert abs(ox2 - 900) <= tolerance and abs(oy2 - 600) <= tolerance

    rng = random.Random(1)
    for _ in range(200):
        x, y = rng.uniform(0, 2000), rng.uniform(0, 1000)
        back = prepared.to_original(*prepared.to_model(x, y))
        assert back == pytest.approx((x, y), abs=1e-6)
    assert prepared.to_original(-50, -3) == (0.0, 0.0)
    assert prepared.to_original(5000, 5000) == (2000.0, 1000.0)
    assert prepared.to_model(-1, 10_000) == (0.0, prepared.content_size[1])


def test_preparer_defaults_are_the_official_config(preparer):
    default = ImagePreparer()
    assert (default.min_pixels, default.max_pixels, default.patch_size, default.merge_size) == (
        preparer.min_pixels, preparer.max_pixels, 14, 2)
    assert default.plan(1234, 567, 1024) == preparer.plan(1234, 567, 1024)


def test_missing_preprocessor_config_is_one_clear_sentence(tmp_path):
    with pytest.raises(ModelUnavailableError) as caught:
        ImagePreparer.from_pretrained(tmp_path)
    assert "preprocessor_config.json" in str(caught.value) and "\n" not in str(caught.value)
    (tmp_path / "preprocessor_config.json").write_text("{not json")
    with pytest.raises(ModelUnavailableError):
        ImagePreparer.from_pretrained(tmp_path)


# -- loading: colour modes -------------------------------------------------------------------------


def test_rgba_transparency_becomes_white():
    image = Image.new("RGBA", (4, 1))
    image.putdata([(255, 0, 0, 0), (0, 0, 255, 255), (0, 0, 0, 128), (10, 20, 30, 255)])
    loaded = load_image(png_bytes(image))
    assert loaded.mode == "RGB"
    values = pixels(loaded)
    assert values[0] == (255, 255, 255)
    assert values[1] == (0, 0, 255)
    assert all(125 <= channel <= 129 for channel in values[2])
    assert values[3] == (10, 20, 30)


def test_la_and_palette_transparency_become_white():
    la = Image.new("LA", (2, 1))
    la.putdata([(0, 0), (0, 255)])
    assert pixels(load_image(png_bytes(la))) == [(255, 255, 255), (0, 0, 0)]

    palette = Image.new("P", (3, 1))
    palette.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0] + [0] * (256 * 3 - 9))
    palette.putdata([0, 1, 2])
    loaded = load_image(png_bytes(palette, transparency=0))
    assert pixels(loaded) == [(255, 255, 255), (255, 0, 0), (0, 255, 0)]


def test_cmyk_converts_to_rgb():
    cmyk = Image.new("CMYK", (8, 8), (0, 255, 255, 0))  # no cyan, full magenta and yellow: red
    buffer = io.BytesIO()
    cmyk.save(buffer, "TIFF")
    red, green, blue = load_image(buffer.getvalue()).getpixel((3, 3))
    assert red > 200 and green < 60 and blue < 60


def test_sixteen_bit_grey_is_scaled_not_clipped():
    deep = Image.fromarray(np.array([[0, 32896, 65535]], dtype=np.uint16))
    loaded = load_image(png_bytes(deep))
    assert [pixel[0] for pixel in pixels(loaded)] == [0, 128, 255]


def test_thirty_two_bit_and_float_images_are_scaled():
    wide = Image.fromarray(np.array([[0, 32896, 65535]], dtype=np.int32))
    assert [pixel[0] for pixel in pixels(load_image(wide))] == [0, 128, 255]
    unit = Image.fromarray(np.array([[0.0, 0.5, 1.0]], dtype=np.float32))
    assert [pixel[0] for pixel in pixels(load_image(unit))] == [0, 128, 255]


def test_exif_orientation_is_applied():
    image = Image.new("RGB", (40, 20), "white")
    ImageDraw.Draw(image).rectangle((0, 0, 19, 19), fill="black")  # left half black
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: display rotated 90 degrees clockwise
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", exif=exif.tobytes(), quality=95)
    loaded = load_image(buffer.getvalue())
    assert loaded.size == (20, 40)
    grey = np.asarray(loaded.convert("L"), dtype=float)
    assert grey[:18].mean() < 40 and grey[22:].mean() > 215  # the black half is now on top


def test_paths_bytes_and_images_load_the_same(tmp_path):
    image = noise(31, 17, seed=5)
    path = tmp_path / "shot.png"
    image.save(path)
    expected = np.asarray(image)
    for source in (path, str(path), path.read_bytes(), image, Image.open(path)):
        assert np.array_equal(np.asarray(load_image(source)), expected)
    loaded = load_image(path)
    path.unlink()  # the pixels are ours, not a view of the file
    assert np.array_equal(np.asarray(loaded), expected)


def test_one_bit_and_grey_load_as_rgb():
    assert load_image(Image.new("1", (3, 3), 1)).getpixel((1, 1)) == (255, 255, 255)
    assert load_image(png_bytes(Image.new("L", (3, 3), 77))).getpixel((0, 0)) == (77, 77, 77)


# -- loading: bad input --------------------------------------------------------------------------


def test_not_an_image(tmp_path):
    text_file = tmp_path / "notes.txt"
    text_file.write_text("just words")
    with pytest.raises(ImageError) as caught:
        load_image(text_file)
    assert_one_sentence(caught.value, "notes.txt", "PNG")
    with pytest.raises(ImageError) as caught:
        load_image(b"hello, not pixels")
    assert_one_sentence(caught.value, "The image data")


def test_truncated_png(tmp_path):
    data = png_bytes(noise(200, 100))
    path = tmp_path / "cut.png"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageError) as caught:
        load_image(path)
    assert_one_sentence(caught.value, "cut.png", "truncated or corrupt")
    with pytest.raises(ImageError):
        load_image(data[: len(data) - 30])


def test_zero_by_zero(tmp_path):
    path = tmp_path / "empty.png"
    path.write_bytes(crafted_png(0, 0))
    with pytest.raises(ImageError) as caught:
        load_image(path)
    assert_one_sentence(caught.value, "empty.png", "0 x 0")
    with pytest.raises(ImageError) as caught:
        load_image(Image.new("RGB", (0, 0)))
    assert_one_sentence(caught.value, "0 x 0")


@pytest.mark.parametrize("side", [60000, 9500, 9000])
def test_decompression_bomb_headers_are_refused(side):
    """60000: Pillow's error; 9500: between Pillow's limits (only a warning); 9000: our own lower limit."""
    before = (Image.MAX_IMAGE_PIXELS, list(warnings.filters))
    with pytest.raises(ImageError) as caught:
        load_image(crafted_png(side, side))
    assert_one_sentence(caught.value, "megapixel", "crop or scale it down")
    assert (Image.MAX_IMAGE_PIXELS, list(warnings.filters)) == before


def test_own_pixel_limit_holds_even_when_pillows_is_disabled(monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)
    with pytest.raises(ImageError) as caught:
        load_image(crafted_png(60000, 60000))
    assert_one_sentence(caught.value, "60000 x 60000")
    side = int(MAX_INPUT_PIXELS**0.5) + 1
    with pytest.raises(ImageError):
        load_image(crafted_png(side, side))


def test_missing_empty_folder_and_wrong_type(tmp_path):
    with pytest.raises(ImageError) as caught:
        load_image(tmp_path / "nope.png")
    assert_one_sentence(caught.value, "nope.png", "does not exist")
    with pytest.raises(ImageError) as caught:
        load_image(tmp_path)
    assert_one_sentence(caught.value, "folder")
    (tmp_path / "zero.png").write_bytes(b"")
    with pytest.raises(ImageError) as caught:
        load_image(tmp_path / "zero.png")
    assert_one_sentence(caught.value, "zero.png", "empty")
    with pytest.raises(ImageError) as caught:
        load_image(b"")
    assert_one_sentence(caught.value, "empty")
    with pytest.raises(ImageError) as caught:
        load_image(42)  # type: ignore[arg-type]
    assert_one_sentence(caught.value, "int")
