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

from dotocr.engine.inputs.images import MAX_INPUT_PIXELS, load_image
from dotocr.engine.inputs.preprocessing import MAX_ASPECT_RATIO, ImagePreparer, PreparedImage, smart_resize
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


def official_size(width: int, height: int) -> tuple[int, int]:
    """(width, height) by transformers' own Qwen2-VL smart_resize, the function vLLM's processor calls."""
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize

    h, w = smart_resize(height, width, factor=28, min_pixels=3136, max_pixels=11289600)
    return w, h


def check_prepared(prepared: PreparedImage, max_image_size: int | None, preparer: ImagePreparer) -> None:
    width, height = prepared.image.size
    assert width % 28 == 0 and height % 28 == 0
    if max_image_size:
        assert max(width, height) <= max(28, max_image_size // 28 * 28)
    assert width * height <= preparer.max_pixels
    t, grid_h, grid_w = prepared.grid_thw[0].tolist()
    assert prepared.grid_thw.shape == (1, 3) and t == 1
    assert (grid_w * 14, grid_h * 14) == (width, height)
    assert prepared.pixel_values.shape == (t * grid_h * grid_w, 3 * 14 * 14)
    assert prepared.pixel_values.dtype.is_floating_point and prepared.pixel_values.element_size() == 4
    assert prepared.image_tokens == t * grid_h * grid_w // 4 == prepared.pixel_values.shape[0] // 4
    content_w, content_h = prepared.content_size
    assert 1 <= content_w <= width and 1 <= content_h <= height


# -- sizing ----------------------------------------------------------------------------------------


SIZES = [(1, 1), (7, 3), (27, 29), (180, 14), (3000, 14), (14, 3000), (1920, 1080), (1080, 1920),
         (999, 777), (28, 28), (56, 56), (1025, 1024), (2, 600), (333, 3333), (4000, 3000)]


@pytest.mark.parametrize("size", SIZES, ids=[f"{w}x{h}" for w, h in SIZES])
@pytest.mark.parametrize("max_image_size", [None, 1024, 500])
def test_prepare_gives_a_valid_grid_for_every_size(preparer, size, max_image_size):
    prepared = preparer.prepare(noise(*size), max_image_size)
    check_prepared(prepared, max_image_size, preparer)
    assert prepared.original_size == size


def test_without_a_cap_every_size_is_the_official_processors_size(preparer):
    """The rule vLLM applies, for thousands of sizes smart_resize accepts: same sides, same tokens."""
    rng = random.Random(7)
    sizes = [(w, h) for w in (1, 13, 14, 15, 27, 28, 42, 55, 56, 57) for h in (14, 28, 41, 42, 43, 200, 2800)]
    sizes += [(rng.randint(1, 12000), rng.randint(1, 12000)) for _ in range(3000)]
    sizes += [(rng.randint(1, 60), rng.randint(1, 3000)) for _ in range(1000)]
    checked = 0
    for width, height in sizes:
        if max(width, height) / min(width, height) > MAX_ASPECT_RATIO:
            continue
        plan = preparer.plan(width, height)
        assert plan.size == official_size(width, height), (width, height)
        assert plan.pad == (0, 0)
        checked += 1
    assert checked > 3000


@pytest.mark.parametrize("size", [(1654, 2339), (2339, 1654), (180, 14), (1, 1), (300, 170), (5000, 4000),
                                  (640, 28)])
def test_token_count_equals_the_processor_left_to_resize_itself(preparer, size):
    """What vLLM does with the original image (the HF processor resizing by itself) gives our token count."""
    image = noise(*size, seed=size[0])
    own = preparer.processor(images=image, return_tensors="pt")
    prepared = preparer.prepare(image, None)
    assert own["image_grid_thw"].tolist() == prepared.grid_thw.tolist()
    t, h, w = own["image_grid_thw"][0].tolist()
    assert prepared.image_tokens == t * h * w // 4


def test_a4_page_at_200_dpi_gets_vllms_token_count(preparer):
    plan = preparer.plan(1654, 2339)  # A4 at 200 dpi, the official parser's rendering
    assert plan.size == (1652, 2352) == official_size(1654, 2339)
    assert preparer.prepare(noise(1654, 2339), None, patches=False).image_tokens == 59 * 84 == 4956
    capped = preparer.plan(1654, 2339, 1024)
    assert capped.size == (700, 1008)  # the tray's cap for a small GPU: 1654 * 1008 / 2339 = 713 -> 700


def test_cap_rules_hold_for_thousands_of_random_sizes(preparer):
    rng = random.Random(11)
    for _ in range(3000):
        width, height = rng.randint(1, 12000), rng.randint(1, 12000)
        if rng.random() < 0.3:
            height = rng.randint(1, 40)
        limit = rng.choice([28, 56, 100, 512, 1024, 1280, 2048, 5000])
        plan = preparer.plan(width, height, limit)
        size_w, size_h = plan.size
        assert size_w % 28 == 0 and size_h % 28 == 0, (width, height, limit, plan)
        assert max(plan.size) <= max(28, limit // 28 * 28), (width, height, limit, plan)
        assert size_w * size_h <= preparer.max_pixels
        uncapped = preparer.plan(width, height)
        if max(uncapped.size) <= limit // 28 * 28:
            assert plan == uncapped  # a cap the image is under changes nothing
        # each axis is scaled on its own, and no side is stretched beyond rounding to 28 (except min_pixels)
        padded_w, padded_h = width + plan.pad[0], height + plan.pad[1]
        assert max(padded_w, padded_h) <= MAX_ASPECT_RATIO * min(padded_w, padded_h)


def test_large_screenshot_is_brought_under_the_cap_per_axis(preparer):
    prepared = preparer.prepare(noise(2560, 1440), 1024)
    assert prepared.image.size == (1008, 560)  # 1440 * 1008 / 2560 = 567 -> the nearest multiple of 28
    assert prepared.scale == pytest.approx((1008 / 2560, 560 / 1440))
    assert prepared.pad == (0, 0) and prepared.content_size == (1008, 560)
    assert preparer.prepare(noise(2560, 1440), None).image.size == (2548, 1428) == official_size(2560, 1440)


def test_tiny_text_line_only_reaches_min_pixels(preparer):
    """dots.ocr's own rule: no 4x enlargement, only what min_pixels (3136) needs."""
    prepared = preparer.prepare(noise(180, 14), 1024)
    assert prepared.image.size == (224, 28) == official_size(180, 14)
    assert prepared.image_tokens == 8
    assert prepared.scale == pytest.approx((224 / 180, 2.0))


def test_medium_crop_is_rounded_per_side_without_padding(preparer):
    prepared = preparer.prepare(noise(333, 777), 1024)
    assert prepared.image.size == (336, 784)
    assert prepared.pad == (0, 0)
    assert prepared.scale == pytest.approx((336 / 333, 784 / 777))


def test_extreme_strip_is_padded_white_to_200_to_1_not_rejected(preparer):
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize

    with pytest.raises(ValueError):
        smart_resize(14, 3000)  # the official processor refuses it
    plan = preparer.plan(3000, 14)
    assert plan.pad == (0, 1)  # 3000 x 15 is 200:1
    assert plan.size == official_size(3000, 15)
    prepared = preparer.prepare(Image.new("RGB", (3000, 14), (0, 0, 0)), None)
    array = np.asarray(prepared.image)
    assert array[: prepared.content_size[1] - 1].max() < 40  # the strip itself stays dark
    assert array[-1].min() > 200  # the padding row (resized) is white
    assert prepared.to_original(*prepared.image.size) == (3000.0, 14.0)  # boxes clamp to the input


def test_pixel_values_are_the_processors_own_in_merge_window_order(preparer):
    prepared = preparer.prepare(noise(300, 170, seed=3), 1024)
    # the processor left to its own resizing must agree: our image is already a size it accepts
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


@pytest.mark.parametrize("max_image_size", [None, 1024, 300])
@pytest.mark.parametrize("size", [(2000, 1000), (1003, 1417), (611, 95)])
def test_a_drawn_box_maps_back_within_a_pixel_for_every_sizing(preparer, size, max_image_size):
    width, height = size
    box = (width * 0.25, height * 0.3, width * 0.45, height * 0.6)
    image = Image.new("RGB", size, "white")
    ImageDraw.Draw(image).rectangle(tuple(round(v) for v in box), fill="black")
    prepared = preparer.prepare(image, max_image_size)
    dark = np.argwhere(np.asarray(prepared.image.convert("L")) < 128)
    (y1, x1), (y2, x2) = dark.min(axis=0), dark.max(axis=0) + 1
    ox1, oy1 = prepared.to_original(x1, y1)
    ox2, oy2 = prepared.to_original(x2, y2)
    sx, sy = prepared.scale
    tol_x, tol_y = max(1.0, 1.5 / sx), max(1.0, 1.5 / sy)  # a model pixel is 1/scale input pixels
    assert abs(ox1 - round(box[0])) <= tol_x and abs(oy1 - round(box[1])) <= tol_y
    assert abs(ox2 - round(box[2]) - 1) <= tol_x and abs(oy2 - round(box[3]) - 1) <= tol_y
    # the model's own box for that rectangle, mapped back: exact to a pixel when no cap shrinks it
    mx1, my1, mx2, my2 = prepared.box_to_model(box)
    back = prepared.to_original(mx1, my1) + prepared.to_original(mx2, my2)
    for got, want, tol in zip(back, box, (0.5 / sx, 0.5 / sy) * 2, strict=True):
        assert abs(got - want) <= max(1.0, tol)

    rng = random.Random(1)
    for _ in range(200):
        x, y = rng.uniform(0, width), rng.uniform(0, height)
        assert prepared.to_original(*prepared.to_model(x, y)) == pytest.approx((x, y), abs=1e-6)
    assert prepared.to_original(-50, -3) == (0.0, 0.0)
    assert prepared.to_original(50000, 50000) == (float(width), float(height))


def test_preparer_defaults_are_the_official_config(preparer):
    default = ImagePreparer()
    assert (default.min_pixels, default.max_pixels, default.patch_size, default.merge_size) == (
        preparer.min_pixels, preparer.max_pixels, 14, 2)
    assert default.plan(1234, 567, 1024) == preparer.plan(1234, 567, 1024)


def test_our_smart_resize_is_the_official_one():
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize as official

    rng = random.Random(3)
    for _ in range(2000):
        h, w = rng.randint(1, 9000), rng.randint(1, 9000)
        if max(h, w) / min(h, w) <= 200:
            assert smart_resize(h, w) == official(h, w, min_pixels=3136, max_pixels=11289600)


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


def test_an_image_already_loaded_is_not_decoded_or_copied_again(tmp_path):
    """A front end checks a file with load_image and hands the engine the result: the engine's own load_image
    then takes it as it is, not a second copy; anything that needs a change still comes back new."""
    path = tmp_path / "shot.png"
    noise(31, 17, seed=5).save(path)
    checked = load_image(path)
    assert load_image(checked) is checked
    rgba = Image.new("RGBA", (8, 8), (0, 0, 0, 0))
    assert load_image(rgba) is not rgba and load_image(rgba).mode == "RGB"
    turned = Image.new("RGB", (8, 4))
    turned.getexif()[0x0112] = 6
    assert load_image(turned).size == (4, 8)


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
