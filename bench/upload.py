"""A large upload through the API vs. a direct boto3 upload to the same S3 server, in one run.

Prints the API process's memory growth (RSS of the uvicorn process, sampled every 20 ms) and the
throughput of both paths. Targets: growth < 64 MiB, API throughput >= 0.7x the direct put.

    python -m bench.upload            # 1 GiB
    python -m bench.upload --mib 200
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import boto3
import numpy as np
from boto3.s3.transfer import TransferConfig

from bench.service_stack import RssSampler, private_stack
from core.settings import DEV_S3_ACCESS_KEY, DEV_S3_SECRET_KEY

CHUNK = 1024 * 1024
MiB = 1024 * 1024


def write_npz(path: Path, size: int) -> Path:
    """An uncompressed .npz holding one uint8 array of `size` random bytes (written in chunks)."""
    import zipfile

    rng = np.random.default_rng(0)
    header = np.lib.format.header_data_from_array_1_0(np.zeros(0, np.uint8))
    header["shape"] = (size,)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED, allowZip64=True) as z, \
            z.open("x.npy", "w", force_zip64=True) as f:
        np.lib.format.write_array_header_1_0(f, header)
        left = size
        while left:
            n = min(left, 16 * MiB)
            f.write(rng.integers(0, 256, n, dtype=np.uint8).tobytes())
            left -= n
    return path


def chunks(path: Path):
    with open(path, "rb") as f:
        while block := f.read(CHUNK):
            yield block


def sha256_of(chunks_iter) -> str:
    import hashlib

    h = hashlib.sha256()
    for block in chunks_iter:
        h.update(block)
    return h.hexdigest()


def measure(size_mib: int, log=print, verify: bool = False) -> dict:
    """`verify`: also check the stored object byte for byte (its sha256, read back from S3)."""
    limit = size_mib * MiB + 64 * MiB
    with tempfile.TemporaryDirectory() as tmp, private_stack(workers=0, PARETO_MAX_UPLOAD_BYTES=limit,
                                                     PARETO_RATE_LIMIT_PER_S=0) as s:
        path = write_npz(Path(tmp) / "big.npz", size_mib * MiB)
        size = path.stat().st_size
        s3 = boto3.client("s3", endpoint_url=s.env["S3_ENDPOINT_URL"], aws_access_key_id=DEV_S3_ACCESS_KEY,
                          aws_secret_access_key=DEV_S3_SECRET_KEY, region_name="us-east-1")
        results = {"size_bytes": size}
        warm = write_npz(Path(tmp) / "warm.npz", 32 * MiB)  # first uploads import and connect: not counted
        with s.client() as c:
            for _ in range(2):
                assert c.post("/v1/datasets", content=chunks(warm)).status_code == 201
        for round_ in range(2):  # alternate, so neither path gets a warmer disk cache
            t = time.perf_counter()
            s3.upload_file(str(path), "pareto", f"bench/direct-{round_}",
                           Config=TransferConfig(multipart_chunksize=8 * MiB))
            results.setdefault("direct_s", []).append(time.perf_counter() - t)
            with RssSampler(s.api.popen.pid) as rss, s.client() as c:
                t = time.perf_counter()
                r = c.post("/v1/datasets", params={"name": "big"}, content=chunks(path),
                           headers={"Content-Type": "application/octet-stream"}, timeout=600)
                results.setdefault("api_s", []).append(time.perf_counter() - t)
            assert r.status_code == 201, r.text
            results.setdefault("growth_bytes", []).append(rss.growth)
            if verify:
                expected = sha256_of(chunks(path))
                assert r.json()["sha256"] == expected and r.json()["size_bytes"] == size
                key = f"tenant-a/datasets/{r.json()['id']}/data.npz"
                stored = s3.get_object(Bucket="pareto", Key=key)["Body"]
                assert sha256_of(stored.iter_chunks(CHUNK)) == expected
            log(f"round {round_ + 1}: direct {results['direct_s'][-1]:.2f} s, API {results['api_s'][-1]:.2f} s, "
                f"API RSS growth {rss.growth / MiB:.1f} MiB")
        direct, api = min(results["direct_s"]), min(results["api_s"])
        results.update(direct_mib_s=size / MiB / direct, api_mib_s=size / MiB / api,
                       ratio=direct / api, max_growth_bytes=max(results["growth_bytes"]))
        return results


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--mib", type=int, default=1024, help="upload size in MiB (default 1024 = 1 GiB)")
    args = p.parse_args(argv)
    r = measure(args.mib)
    print(f"upload of {r['size_bytes'] / MiB:.0f} MiB: direct boto3 {r['direct_mib_s']:.0f} MiB/s, "
          f"API {r['api_mib_s']:.0f} MiB/s, ratio {r['ratio']:.2f} (target >= 0.7)")
    print(f"API RSS growth (max of rounds): {r['max_growth_bytes'] / MiB:.1f} MiB (target < 64)")
    ok = r["ratio"] >= 0.7 and r["max_growth_bytes"] < 64 * MiB
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
