"""Storage benchmark (on demand, never in CI): prints a markdown table.

    .venv/bin/python bench/storage_bench.py [--docs 100000] [--queries 300] [--skip-postgres] [--skip-minio]

Measures, on synthetic Vietnamese one-stop-shop documents:
* index rate (documents with OCR page text, committed 1 000 per transaction) and search p50/p95
  at ``--docs`` documents, on SQLite and on PostgreSQL (started from tests/servers.py);
* store + verify throughput to MinIO (original + PDF/A + sidecar, each read back) and ``verify --all``;
* retrieval (``get``) of a 30-document dossier, every SHA-256 checked.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from digitize.config import Settings  # noqa: E402
from digitize.fsutil import sha256_bytes, sha256_file  # noqa: E402
from digitize.records import DocumentReport, PageReport  # noqa: E402
from storage.archive import Archive, DocumentMeta  # noqa: E402
from storage.index import Index, open_index  # noqa: E402
from storage.models import DocumentRow, Event, PageText  # noqa: E402
from storage.objects import FolderStore  # noqa: E402
from tests.servers import MINIO_PASSWORD, MINIO_USER, start_minio, start_postgres  # noqa: E402

CASE_ROWS = 10_000
WORDS = """ủy ban nhân dân tỉnh huyện xã phường thị trấn cộng hòa xã hội chủ nghĩa việt nam độc lập tự do hạnh phúc
đơn đề nghị cấp giấy chứng nhận quyền sử dụng đất quyền sở hữu nhà ở và tài sản khác gắn liền với đất đăng ký biến
động chuyển nhượng tặng cho thừa kế thế chấp xóa đăng ký hộ khẩu thường trú tạm trú căn cước công dân chứng minh
nhân dân hộ chiếu giấy phép xây dựng kinh doanh hộ kinh doanh cá thể thành lập doanh nghiệp thay đổi nội dung
đăng ký thuế mã số thuế bản vẽ sơ đồ thửa đất tờ bản đồ số diện tích mét vuông mục đích sử dụng thời hạn nguồn gốc
đất ở tại nông thôn đô thị trồng lúa cây lâu năm rừng sản xuất người nộp hồ sơ ông bà địa chỉ thôn ấp khu phố
đường số điện thoại ngày tháng năm ký tên đóng dấu chủ tịch phó giám đốc văn phòng đăng ký đất đai chi nhánh sở
tài nguyên môi trường tư pháp hộ tịch khai sinh khai tử kết hôn xác nhận tình trạng hôn nhân trích lục bản sao
chứng thực chữ ký hợp đồng giao dịch biên nhận phiếu hẹn trả kết quả bộ phận một cửa tiếp nhận thẩm định phê
duyệt lệ phí phí nộp ngân sách nhà nước biên lai thu tiền đồng bằng chữ nguyễn trần lê phạm hoàng huỳnh phan vũ
võ đặng bùi đỗ hồ ngô dương lý văn thị hữu đức minh anh hùng dũng đào hoa lan mai cúc trúc khánh hòa nha trang
cam ranh ninh hòa vạn ninh diên khánh khánh vĩnh khánh sơn trường sa""".split()
QUERY_SEEDS = ["quyền sử dụng đất", "quyen su dung dat", "giấy chứng nhận", "giay chung nhan", "đăng ký biến động",
               "dang ky bien dong", "hộ kinh doanh", "nguyễn văn đức", "nguyen van duc", "khai sinh", "thế chấp",
               "the chap", "bản vẽ thửa đất", "ban ve thua dat", "lệ phí", "đất trồng lúa", "dat trong lua",
               "khánh hòa", "khanh hoa", "chứng thực chữ ký", "biên nhận", "hon nhan", "phiếu hẹn trả kết quả"]


def synthetic_pages(rng: random.Random) -> list[str]:
    return [" ".join(rng.choices(WORDS, k=rng.randint(60, 160))) for _ in range(rng.randint(1, 3))]


def case_id(i: int) -> str:
    return f"000.00.{31 + i % 9:02d}.H56-24{1 + (i // 9000) % 12:02d}{1 + (i // 300) % 28:02d}-{i % 10000:04d}"


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def fill_index(index: Index, docs: int, seed: int = 7, batch: int = 1000) -> float:
    """Index ``docs`` documents (one case each, 1 to 3 pages of text); returns documents per second."""
    rng = random.Random(seed)
    start = time.perf_counter()
    for first in range(0, docs, batch):
        with index.transaction():
            for i in range(first, min(first + batch, docs)):
                cid = case_id(i)
                sha = sha256_bytes(str(i).encode())
                row = DocumentRow(case_id=cid, sequence=1, original_sha256=sha, pdfa_sha256=sha, meta_sha256=sha,
                                  original_key=f"{cid}/0001/original", pdfa_key=f"{cid}/0001/pdfa",
                                  meta_key=f"{cid}/0001/meta", title=rng.choice(WORDS), created_at="2024-10-15")
                row.doc_id = index.insert_pending(row)
                pages = [PageText(n + 1, t) for n, t in enumerate(synthetic_pages(rng))]
                index.finalize(row, pages, [Event("stored", "success", "bench", "bench", doc_id=row.doc_id)])
    return docs / (time.perf_counter() - start)


def time_searches(index: Index, queries: int, seed: int = 11) -> tuple[float, float, float]:
    rng = random.Random(seed)
    pool = QUERY_SEEDS + [" ".join(rng.choices(WORDS, k=rng.randint(1, 3))) for _ in range(200)]
    index.search("đất")  # warm the cache
    timings = []
    for _ in range(queries):
        q = rng.choice(pool)
        t = time.perf_counter()
        index.search(q, limit=20)
        timings.append((time.perf_counter() - t) * 1000)
    return percentile(timings, 50), percentile(timings, 95), max(timings)


def index_rows(label: str, dsn: str, docs: int, queries: int, work: Path) -> list[tuple[str, str]]:
    index = open_index(dsn)
    try:
        rate = fill_index(index, docs)
        p50, p95, worst = time_searches(index, queries)
        export = work / f"cases-{label}.csv"
        export.write_text("Mã hồ sơ;Mã thủ tục;Tên thủ tục;Người nộp;Ngày tiếp nhận\n" + "".join(
            f"{case_id(i)};1.004616.000.00.00.H56;Cấp giấy chứng nhận;Nguyễn Văn Đức {i};15/10/2024\n"
            for i in range(CASE_ROWS)), encoding="utf-8")
        t = time.perf_counter()
        imported = Archive(FolderStore(work / f"objects-{label}"), index).import_cases(export)
        case_rate = CASE_ROWS / (time.perf_counter() - t)
        assert imported.ok
    finally:
        index.close()
    return [(f"{label}: index documents ({docs:,}, 1-3 OCR pages each)", f"{rate:,.0f} docs/s"),
            (f"{label}: `cases import` of a {CASE_ROWS:,}-row CSV export", f"{case_rate:,.0f} rows/s"),
            (f"{label}: search p50 / p95 / max at {docs:,} docs ({queries} queries)",
             f"{p50:.1f} / {p95:.1f} / {worst:.1f} ms")]


def fake_document(folder: Path, i: int, size: int, cid: str | None) -> tuple[Path, Path, DocumentReport, DocumentMeta]:
    original, pdfa = folder / f"scan-{i}.tif", folder / f"scan-{i}.pdf"
    original.write_bytes(os.urandom(size))
    pdfa.write_bytes(b"%PDF-1.7\n" + os.urandom(size))
    page = PageReport(1, 2480, 3508, 300, "file", "grey", 0, 0.0, "ocr", 90.0, 50, "jpeg", size,
                      text=" ".join(random.choices(WORDS, k=120)))
    report = DocumentReport(str(original), sha256_file(original), "tiff", str(pdfa), sha256_file(pdfa),
                            pdfa.stat().st_size, pages=[page], pdfa={"flavour": "2b"})
    return original, pdfa, report, DocumentMeta(case_id=cid, title=f"Tài liệu {i}", source_name=original.name)


def minio_rows(work: Path, dsn: str, count: int, size: int) -> list[tuple[str, str]]:
    server = start_minio(work / "minio")
    settings = Settings(data_dir=str(work / "data"))
    settings.store.url = server.url("bench")
    settings.store.access_key, settings.store.secret_key = MINIO_USER, MINIO_PASSWORD
    settings.index.dsn = dsn
    folder = work / "docs"
    folder.mkdir()
    try:
        with Archive.open(settings) as archive:
            docs = [fake_document(folder, i, size, case_id(i % 7)) for i in range(count)]
            t = time.perf_counter()
            for original, pdfa, report, meta in docs:
                archive.store(original, pdfa, report, meta)
            elapsed = time.perf_counter() - t
            megabytes = count * 2 * size / 1e6
            t = time.perf_counter()
            verified = archive.verify()
            verify_s = time.perf_counter() - t
            dossier = [fake_document(folder, 10_000 + i, size, "000.00.31.H56-241231-0030") for i in range(30)]
            for original, pdfa, report, meta in dossier:
                archive.store(original, pdfa, report, meta)
            t = time.perf_counter()
            got = archive.retrieve("000.00.31.H56-241231-0030", work / "out")
            get_s = time.perf_counter() - t
    finally:
        server.stop()
    assert verified.ok and len(got.files) == 30
    return [(f"MinIO+PostgreSQL: store + read-back verify ({count} docs, 2 x {size // 1000} kB each)",
             f"{count / elapsed:,.1f} docs/s, {megabytes / elapsed:,.1f} MB/s"),
            (f"MinIO: verify --all ({verified.objects} objects)", f"{verified.objects / verify_s:,.0f} objects/s"),
            (f"MinIO: get of a 30-document dossier ({30 * size // 1000} kB, SHA-256 checked)", f"{get_s * 1000:,.0f} ms")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--store-docs", type=int, default=200)
    parser.add_argument("--store-kb", type=int, default=500)
    parser.add_argument("--skip-postgres", action="store_true")
    parser.add_argument("--skip-minio", action="store_true")
    args = parser.parse_args()
    rows: list[tuple[str, str]] = []
    with tempfile.TemporaryDirectory(prefix="digitize-bench-") as tmp:
        work = Path(tmp)
        rows += index_rows("SQLite", "sqlite:///" + str(work / "bench.sqlite3"), args.docs, args.queries, work)
        rows.append(("SQLite: index file size", f"{(work / 'bench.sqlite3').stat().st_size / 1e6:,.0f} MB"))
        pg = None if args.skip_postgres and args.skip_minio else start_postgres()
        try:
            if not args.skip_postgres:
                rows += index_rows("PostgreSQL", pg.create_database("bench_index"), args.docs, args.queries, work)
            if not args.skip_minio:
                rows += minio_rows(work, pg.create_database("bench_store"), args.store_docs, args.store_kb * 1000)
        finally:
            if pg:
                pg.stop()
    print("\n| Measurement | Result |\n|---|---|")
    for name, value in rows:
        print(f"| {name} | {value} |")


if __name__ == "__main__":
    main()
