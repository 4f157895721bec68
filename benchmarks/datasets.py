"""fetcher against img2dataset on one parquet of images served by nginx on 127.0.0.1, in one run.

    python benchmarks/datasets.py [--quick] [--img2dataset PATH] [--images 10000] [--resize 256]
        [--resize-mode border] [--variants default,cluster,process+curl] [--repeat N]

``--quick``: 3,000 images, one round (about 2 minutes on 2 CPUs); the default, 10,000.
The table it ends with has both tools side by side, each fetcher row with its ratio to
the img2dataset row of the same round: images/s (× img2dataset) and CPU per image.

Makes ``--images`` JPEGs with Pillow (512x384 to 800x600, a gradient with shapes:
cheap to make, real to decode), serves them with nginx (benchmarks/bench_nginx.py),
writes one parquet of ``url, caption``, then runs each tool on it with the same
work: webdataset shards of 1,000, every image decoded and resized to ``--resize``
as ``--resize-mode`` says (both tools' meaning), re-encoded as JPEG quality 95, with
the caption; the same concurrency (img2dataset: 2 processes x 16 threads; fetcher:
--pool 32), no per-host cap, no retries. fetcher's ``default`` run gives no
--backend or --client: what ``auto`` picks for a dataset build (fetcher/auto.py).
``cluster`` is ``fetcher serve`` + two ``fetcher work`` (--pool 16 each, their default
backend) on this host, ``--output-format files`` (benchmarks/datasets_cluster.py);
``cluster-webdataset`` the same building shards, where this fetcher can.
img2dataset runs with ``--extract_exif False`` (fetcher reads no EXIF). Each
tool's output is read back: the samples in its shards and the size of a few.
CPU is the whole process tree's user+sys (benchmarks/bench_measure.py).

img2dataset goes in a venv of its own: ``python3 -m venv /work/img2ds && /work/img2ds/bin/pip install
img2dataset``; ``--img2dataset`` (default: ``$IMG2DATASET``, else ``/work/img2ds/bin/img2dataset``) names it.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import sys
import tarfile
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_measure import become_subreaper, run_measured  # noqa: E402
from bench_nginx import Nginx  # noqa: E402

TIMEOUT_S = 1800
PROCESSES, THREADS = 2, 16
IMG2DATASET = os.environ.get("IMG2DATASET", "/work/img2ds/bin/img2dataset")
HERE = os.path.dirname(os.path.abspath(__file__))


def make_images(root: str, count: int) -> None:
    """``count`` JPEGs under ``root``/img/, deterministic."""
    from PIL import Image, ImageDraw

    os.makedirs(os.path.join(root, "img"), exist_ok=True)
    for i in range(count):
        width, height = 512 + (i * 37) % 289, 384 + (i * 53) % 217
        image = Image.linear_gradient("L").resize((width, height)).convert("RGB")
        draw = ImageDraw.Draw(image)
        for j in range(6):
            x, y = (i * 97 + j * 131) % width, (i * 61 + j * 89) % height
            draw.ellipse((x, y, x + width // 4, y + height // 4), fill=((i * 7) % 256, (j * 40) % 256, 128))
        image.save(os.path.join(root, "img", f"{i:06d}.jpg"), "JPEG", quality=90)


def write_parquet(path: str, base_url: str, count: int) -> None:
    import pyarrow
    import pyarrow.parquet

    rows = {"url": [f"{base_url}/img/{i:06d}.jpg" for i in range(count)],
            "caption": [f"picture number {i}" for i in range(count)]}
    pyarrow.parquet.write_table(pyarrow.table(rows), path, row_group_size=2000)


def fetcher_argv(parquet: str, out: str, resize: int, mode: str, variant: str) -> list[str]:
    """fetcher's command; ``variant`` is ``default`` (no --backend, --client: what ``auto`` picks) or
    ``BACKEND+CLIENT``, e.g. ``process+curl`` (with --processes PROCESSES)."""
    if variant.startswith("cluster"):
        output_format = "webdataset" if variant == "cluster-webdataset" else "files"
        return [sys.executable, os.path.join(HERE, "datasets_cluster.py"), parquet, out, str(resize), mode,
                str(THREADS), output_format]
    chosen: list[str] = []
    if variant != "default":
        backend, client = variant.split("+")
        chosen = ["--backend", backend, "--client", client]
        if backend == "process":
            chosen += ["--processes", str(PROCESSES)]
    return [sys.executable, "-m", "fetcher", parquet, "-o", out, "-q", *chosen, "--pool", str(PROCESSES * THREADS),
            "--per-host", "0", "--retries", "0", "--output-format", "webdataset", "--shard-size", "1000",
            "--caption-column", "caption", "--resize", str(resize), "--resize-mode", mode, "--encode-format", "jpg",
            "--encode-quality", "95"]


def img2dataset_argv(binary: str, parquet: str, out: str, resize: int, mode: str) -> list[str]:
    return [binary, "--url_list", parquet, "--input_format", "parquet", "--url_col", "url", "--caption_col",
            "caption", "--output_format", "webdataset", "--output_folder", out, "--processes_count",
            str(PROCESSES), "--thread_count", str(THREADS), "--image_size", str(resize), "--resize_mode",
            mode, "--encode_format", "jpg", "--encode_quality", "95", "--number_sample_per_shard", "1000",
            "--extract_exif", "False", "--retries", "0", "--enable_wandb", "False"]


def count_samples(out: str, resize: int) -> int:
    """Images in the tool's shards (in every folder under ``out``), or stored as files (``cluster``'s
    files output); the first few must have ``resize`` as their smaller side (as every mode makes it)."""
    from PIL import Image

    count = checked = 0
    tars = []
    for folder, _, names in os.walk(out):
        for name in sorted(names):
            path = os.path.join(folder, name)
            if name.endswith(".tar"):
                tars.append(path)
            elif name.endswith(".jpg") and "staging" not in folder.split(os.sep):
                count += 1
                if checked < 20:
                    assert min(Image.open(path).size) == resize, (path, Image.open(path).size)
                    checked += 1
    for path in sorted(tars):
        with tarfile.open(path) as tar:
            for member in tar:
                if not member.name.endswith(".jpg"):
                    continue
                count += 1
                if checked < 20:
                    with tar.extractfile(member) as handle:  # type: ignore[union-attr]
                        size = Image.open(io.BytesIO(handle.read())).size
                    assert min(size) == resize, (path, member.name, size)
                    checked += 1
    return count


def run_tool(label: str, argv: list[str], out: str, work: str, resize: int) -> dict[str, object]:
    env = dict(os.environ, NO_ALBUMENTATIONS_UPDATE="1")
    shutil.rmtree(out, ignore_errors=True)
    measured = run_measured(argv, cwd=work, env=env, timeout_s=TIMEOUT_S,
                            stdout_path=os.path.join(work, f"{label}.out"),
                            stderr_path=os.path.join(work, f"{label}.err"))
    images = count_samples(out, resize) if os.path.isdir(out) else 0
    row = {"tool": label, "exit": measured.exit_code, "images": images, "wall_s": round(measured.wall_s, 2),
           "images_per_s": round(images / measured.wall_s, 1), "cpu_s": round(measured.cpu_s, 2),
           "cpu_ms_per_image": round(1000 * measured.cpu_s / max(images, 1), 2),
           "peak_rss_mib": round(measured.peak_rss / 2**20, 1)}
    if measured.exit_code not in (0, 1):
        row["stderr"] = measured.stderr_tail
    print(json.dumps(row), flush=True)
    return row


def print_table(rows: list[dict[str, object]]) -> None:
    """Both tools side by side; each fetcher row's ratios are to the img2dataset row of its round."""
    print("| tool | images | images/s | × img2dataset | CPU ms / image | img2dataset's CPU ÷ this | wall s "
          "| peak RSS MiB |")
    print("|---|--:|--:|--:|--:|--:|--:|--:|")
    base: dict[str, object] = {}
    for row in rows:
        if row["tool"] == "img2dataset":
            base = row
        speed = float(row["images_per_s"]) / max(float(base.get("images_per_s", 0)), 1e-9)  # type: ignore[arg-type]
        cpu = float(base.get("cpu_ms_per_image", 0)) / max(float(row["cpu_ms_per_image"]), 1e-9)  # type: ignore[arg-type]
        print(f"| {row['tool']} | {row['images']:,} | {row['images_per_s']} | {speed:.2f} | {row['cpu_ms_per_image']} "
              f"| {cpu:.2f} | {row['wall_s']} | {row['peak_rss_mib']} |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--img2dataset", default=IMG2DATASET,
                        help="the img2dataset command, in its own venv (default: $IMG2DATASET, else %(default)s)")
    parser.add_argument("--quick", action="store_true", help="3,000 images (unless --images says otherwise)")
    parser.add_argument("--images", type=int, default=None, help="how many (default: 10,000; --quick: 3,000)")
    parser.add_argument("--resize", type=int, default=256)
    parser.add_argument("--nginx", default=shutil.which("nginx") or "/usr/sbin/nginx")
    parser.add_argument("--resize-mode", default="border", help="keep_ratio, center_crop or border (both tools)")
    parser.add_argument("--variants", default="default,cluster",
                        help="fetcher's runs, comma-separated: default (no --backend/--client), BACKEND+CLIENT, "
                             "cluster (serve + 2 work, files output) or cluster-webdataset")
    parser.add_argument("--repeat", type=int, default=1, help="runs of each tool, interleaved")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (images, outputs, logs)")
    args = parser.parse_args()
    if args.images is None:
        args.images = 3_000 if args.quick else 10_000
    if not os.access(args.img2dataset, os.X_OK):
        parser.error(f"no img2dataset at {args.img2dataset}: install it in a venv of its own (see --help), "
                     "then give --img2dataset PATH or set IMG2DATASET")
    become_subreaper()
    work = tempfile.mkdtemp(prefix="fetcher-datasets-bench-")
    os.chmod(work, 0o755)  # nginx's workers run as another user and must read the images
    nginx = Nginx(args.nginx, web_root=os.path.join(work, "www"), root=os.path.join(work, "nginx"))
    try:
        started = time.monotonic()
        make_images(os.path.join(work, "www"), args.images)
        print(f"made {args.images} images in {time.monotonic() - started:.0f} s", flush=True)
        nginx.start()
        parquet = os.path.join(work, "images.parquet")
        write_parquet(parquet, nginx.base_url, args.images)
        load = os.getloadavg()[0]
        rows = []
        for _ in range(args.repeat):  # interleaved, so that a change in the machine's load hits every tool
            rows.append(run_tool("img2dataset", img2dataset_argv(args.img2dataset, parquet, os.path.join(work, "i2d"),
                                                                 args.resize, args.resize_mode),
                                 os.path.join(work, "i2d"), work,
                                 args.resize))
            for variant in args.variants.split(","):
                label = f"fetcher {variant}"
                out = os.path.join(work, f"fetcher-{variant}")
                rows.append(run_tool(label, fetcher_argv(parquet, out, args.resize, args.resize_mode, variant), out,
                                     work, args.resize))
        print(f"load average {load:.1f} before, {os.getloadavg()[0]:.1f} after; {os.cpu_count()} CPUs; "
              f"nginx {nginx.version()}")
        print_table(rows)
    finally:
        nginx.stop()
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
