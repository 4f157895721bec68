"""Image datasets, files output: parquet input, decoded-image checks, filters, opt-outs, resizing.

Real JPEG, PNG and WebP images, made with Pillow and served by the loopback
server (route /img/), fetched by the CLI; what is stored is opened again with Pillow.
"""

from __future__ import annotations

import hashlib
import io
import json
import os

import pytest
from conftest import write_list
from server import real_image
from test_cli import manifest

from fetcher.cli import main

Image = pytest.importorskip("PIL.Image")
pq = pytest.importorskip("pyarrow.parquet")
pa = pytest.importorskip("pyarrow")


def write_parquet(tmp_path, rows: list[dict], name: str = "in.parquet", row_group_size: int = 4) -> str:
    path = str(tmp_path / name)
    pq.write_table(pa.Table.from_pylist(rows), path, row_group_size=row_group_size)
    return path


def stored(out: str, record: dict) -> Image.Image:
    with open(os.path.join(out, record["path"]), "rb") as handle:
        data = handle.read()
    assert hashlib.sha256(data).hexdigest() == record["sha256"] and len(data) == record["bytes"]
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def test_parquet_input_by_row_group_with_a_url_column_and_carried_columns(server, out, tmp_path):
    rows = [{"image_url": server.url(f"/img/p{i}.png?format=png"), "caption": f"a picture {i}", "score": i / 4,
             "nan": float("nan"), "blob": b"\x00\x01"} for i in range(10)]
    rows.append({"image_url": None, "caption": "no url", "score": 0.0, "nan": 1.0, "blob": b""})
    path = write_parquet(tmp_path, rows)
    assert pq.ParquetFile(path).num_row_groups == 3  # read one group at a time
    assert main([path, "-o", out, "-q", "--url-column", "image_url"]) == 1  # the row without url failed
    records = manifest(out)
    for i in range(10):
        record = records[server.url(f"/img/p{i}.png?format=png")]
        assert record["status"] == "ok"
        assert record["input"] == {"caption": f"a picture {i}", "score": i / 4, "nan": None, "blob": "AAE="}
        assert stored(out, record).size == (64, 48)
    [bad] = [r for r in records.values() if r["status"] == "failed"]
    assert bad["error"]["kind"] == "invalid-input" and "line 11" in bad["error"]["message"]


def test_url_column_for_csv_and_a_missing_column_is_a_usage_error(server, out, tmp_path, capsys):
    path = tmp_path / "in.csv"
    path.write_text(f"id,link\n7,{server.url('/img/c.jpg')}\n")
    assert main([str(path), "-o", out, "-q", "--url-column", "LINK"]) == 0
    [record] = manifest(out).values()
    assert record["input"] == {"id": "7"}
    assert main([str(path), "-o", out, "-q", "--url-column", "image"]) == 2
    assert "no 'image' column" in capsys.readouterr().err
    parquet = write_parquet(tmp_path, [{"link": "x"}])
    assert main([parquet, "-o", out, "-q"]) == 2
    assert "no 'url' column" in capsys.readouterr().err


@pytest.mark.parametrize("fmt", ["jpg", "png", "webp"])
def test_verify_image_records_size_and_format_and_refuses_damaged_images(server, out, tmp_path, fmt, setup):
    good = server.url(f"/img/good.{fmt}?format={fmt}&w=80&h=60")
    truncated = server.url(f"/img/half.{fmt}?format={fmt}&w=80&h=60&fault=truncate")
    corrupt = server.url(f"/img/junk.{fmt}?format={fmt}&w=80&h=60&fault=corrupt")
    args = [write_list(tmp_path, [good, truncated, corrupt]), "-o", out, "-q", "--verify-image", *setup]
    assert main(args) == 1
    records = manifest(out)
    assert records[good]["status"] == "ok"
    assert (records[good]["width"], records[good]["height"]) == (80, 60)
    assert records[good]["image_format"] == {"jpg": "JPEG", "png": "PNG", "webp": "WEBP"}[fmt]
    for url in (truncated, corrupt):
        assert records[url]["status"] == "failed"
        assert records[url]["error"]["kind"] == "bad-image", records[url]
        assert records[url]["attempts"] == 1  # not retried: the same bytes would come back
        assert records[url]["path"] is None
    assert sorted(os.listdir(os.path.join(out, "127.0.0.1_" + good.split(":")[2].split("/")[0]))) == \
        [os.path.basename(records[good]["path"])]  # no file and no .part of the refused ones


def test_without_verify_image_a_truncated_image_is_saved(server, out, tmp_path):
    """The check is what refuses it: the HTTP response itself was whole."""
    url = server.url("/img/half.png?format=png&fault=truncate")
    assert main([write_list(tmp_path, [url]), "-o", out, "-q"]) == 0


def test_size_area_and_aspect_filters(server, out, tmp_path):
    small = server.url("/img/small.jpg?w=30&h=200")
    wide = server.url("/img/wide.png?format=png&w=400&h=100")
    huge = server.url("/img/huge.webp?format=webp&w=300&h=300")
    fine = server.url("/img/fine.jpg?w=120&h=100")
    args = [write_list(tmp_path, [small, wide, huge, fine]), "-o", out, "-q", "--min-image-size", "50",
            "--max-aspect-ratio", "3", "--max-image-area", "80000"]
    assert main(args) == 1
    records = manifest(out)
    assert {url: (r["error"] or {}).get("kind") for url, r in records.items()} == {
        small: "image-too-small", wide: "bad-aspect-ratio", huge: "image-too-large", fine: None}
    assert records[fine]["width"] == 120 and records[small]["attempts"] == 1


def test_opted_out_images_are_refused_unless_told_otherwise(server, out, tmp_path):
    urls = [server.url("/img/a.jpg?robots=noai"), server.url("/img/b.jpg?robots=noindex,%20noimageai"),
            server.url("/img/c.jpg?robots=otherbot:%20noai"), server.url("/img/d.jpg?robots=noindex")]
    path = write_list(tmp_path, urls)
    assert main([path, "-o", out, "-q"]) == 1
    records = manifest(out)
    assert [(records[u]["error"] or {}).get("kind") for u in urls] == ["opted-out", "opted-out", None, None]
    assert records[urls[0]]["attempts"] == 1 and records[urls[0]]["path"] is None
    assert "noai" in records[urls[0]]["error"]["message"]
    assert main([path, "-o", out, "-q", "--ignore-opt-out"]) == 0
    assert all(r["status"] in ("ok", "skipped") for r in manifest(out).values())


@pytest.mark.parametrize(("mode", "expected"), [("keep_ratio", (128, 64)), ("center_crop", (64, 64)),
                                                ("border", (64, 64))])
@pytest.mark.parametrize("encode", ["jpg", "png", "webp"])
def test_resize_modes_on_the_stored_pixels(server, out, tmp_path, mode, expected, encode):
    url = server.url("/img/wide.png?format=png&w=200&h=100")
    args = [write_list(tmp_path, [url]), "-o", out, "-q", "--resize", "64", "--resize-mode", mode,
            "--encode-format", encode, "--encode-quality", "90"]
    assert main(args) == 0
    [record] = manifest(out).values()
    image = stored(out, record)
    assert image.size == expected
    assert image.format == {"jpg": "JPEG", "png": "PNG", "webp": "WEBP"}[encode]
    assert record["path"].endswith("." + encode)
    original = real_image("wide.png", "png", 200, 100)
    assert record["original_bytes"] == len(original)
    assert record["original_sha256"] == hashlib.sha256(original).hexdigest()
    assert (record["width"], record["height"]) == (200, 100)  # the original's
    if mode == "border":  # padded: the top rows are black
        assert image.convert("RGB").getpixel((32, 2)) == (0, 0, 0)


def test_resize_enlarges_and_defaults_to_jpg(server, out, tmp_path):
    url = server.url("/img/tiny.webp?format=webp&w=20&h=10")
    assert main([write_list(tmp_path, [url]), "-o", out, "-q", "--resize", "40"]) == 0
    [record] = manifest(out).values()
    image = stored(out, record)
    assert image.size == (80, 40) and image.format == "JPEG"


def test_image_options_are_checked_at_start(tmp_path, out, capsys):
    path = write_list(tmp_path, ["http://127.0.0.1:9/x.jpg"])
    for flags, message in ((["--resize-mode", "stretch"], "resize-mode"), (["--encode-format", "gif"], "encode"),
                           (["--max-aspect-ratio", "0.5"], "aspect"), (["--encode-quality", "101"], "quality")):
        assert main([path, "-o", out, "-q", *flags]) == 2
        assert message in capsys.readouterr().err


def test_manifest_records_are_json(server, out, tmp_path):
    url = server.url("/img/j.jpg")
    assert main([write_list(tmp_path, [url]), "-o", out, "-q", "--verify-image"]) == 0
    with open(os.path.join(out, "manifest.jsonl"), encoding="utf-8") as handle:
        record = json.loads(handle.readline())
    assert set(record) >= {"width", "height", "image_format", "sha256", "bytes"}


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares ``width`` x ``height`` and holds no pixels: a decompression bomb's header."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IEND", b""))


def test_a_decompression_bomb_is_refused_on_its_header():
    from fetcher.errors import FetchFailure
    from fetcher.download.images import finish_image
    from fetcher.options import Options

    options = Options.create(verify_image=True)
    with pytest.raises(FetchFailure) as caught:
        finish_image(png_header_only(12_000, 12_000), options)  # 144 megapixels: over Pillow's limit
    assert caught.value.kind.value == "image-too-large" and not caught.value.retryable
    with pytest.raises(FetchFailure) as caught:
        finish_image(png_header_only(100, 100), options)  # small, but no pixel data
    assert caught.value.kind.value == "bad-image"


def test_the_python_api_resizes_in_memory(server):
    from fetcher import fetch

    [result] = list(fetch([server.url("/img/api.png?format=png&w=90&h=30")], memory=True, resize=15,
                          resize_mode="border", encode_format="png"))
    assert result.ok and Image.open(io.BytesIO(result.content)).size == (15, 15)
    assert result.bytes == len(result.content) and result.extra["original_bytes"] > 0


def test_every_backend_checks_and_resizes(server, out, tmp_path):
    """gevent and process too (in a fresh process: gevent patches the one it runs in)."""
    from proc_helpers import Variant, run_cli

    good, bad = server.url("/img/g.webp?format=webp&w=60&h=40"), server.url("/img/b.jpg?fault=truncate")
    path = write_list(tmp_path, [good, bad])
    for variant in (Variant("gevent"), Variant("process", flags=("--processes", "2"))):
        target = os.path.join(out, variant.backend)
        done = run_cli(variant, [path, "-o", target, "-q", "--verify-image", "--resize", "20"])
        assert done.returncode == 1, done.stderr
        records = manifest(target)
        assert records[bad]["error"]["kind"] == "bad-image"
        assert stored(target, records[good]).size == (30, 20)


@pytest.mark.parametrize(("value", "expected"), [
    ("noai", "noai"), ("NoImageAI", "noimageai"), ("noindex, nofollow", None), ("otherbot: noai", None),
    ("fetcher: noimageai", "noimageai"), ("otherbot: noindex, noai", None), ("otherbot: noindex, fetcher: noai", "noai"),
    ("unavailable_after: 25 Jun 2010 15:00:00 PST", None), ("", None),
])
def test_which_x_robots_tag_values_opt_out(value, expected):
    from fetcher.download.optout import opted_out

    assert opted_out({"X-Robots-Tag": value} if value else {}, "fetcher/1.0 (+https://pypi.org/)") == expected


def jpeg_of(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (200, 100, 50)).save(buffer, "JPEG", quality=80)
    return buffer.getvalue()


# Sizes where the JPEG draft decode applies (a side at least twice --resize) and rounds its own scale;
# 139x226 and 666x191 were stored as 64x103 and 222x64 on 28b5069.
DRAFT_SIZES = [(139, 226), (666, 191), (131, 257), (301, 129), (513, 1027), (1000, 999), (257, 129), (130, 1999)]


@pytest.mark.parametrize("mode", ["keep_ratio", "center_crop", "border"])
def test_resize_targets_come_from_the_original_size_even_after_a_draft_decode(mode):
    from fetcher.download.images import finish_image, target_size
    from fetcher.options import Options

    options = Options.create(resize=64, resize_mode=mode, encode_format="png")
    for width, height in DRAFT_SIZES:
        outcome = finish_image(jpeg_of(width, height), options)
        assert outcome.data is not None
        stored_size = Image.open(io.BytesIO(outcome.data)).size
        expected = target_size(width, height, 64, "keep_ratio") if mode == "keep_ratio" else (64, 64)
        assert stored_size == expected, (width, height)
        if mode == "keep_ratio":  # the ratio kept to within a pixel's rounding
            assert min(stored_size) == 64
            assert abs(stored_size[0] / stored_size[1] - width / height) <= 1 / 64 * max(width / height, 1)
