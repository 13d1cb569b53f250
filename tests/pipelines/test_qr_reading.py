"""QR codes on bad scans: rotation and heavy speckle that defeat a single plain zxing pass."""

from __future__ import annotations

from scans import page, rotated_noisy

from pipelines import codes

CASE = "000.00.31.H56-241015-0027"


def test_heavily_speckled_sideways_receipt_qr_is_read_via_the_binarised_variant():
    scan = rotated_noisy(page(["Giấy tiếp nhận hồ sơ"], qr=CASE, qr_module_px=4), 97, noise=0.12)
    assert codes._decode(scan) == []  # a single plain pass finds nothing...
    assert codes.read_codes(scan) == [CASE]  # ...the variants do


def test_quick_look_finds_no_code_on_a_plain_page():
    assert codes.read_codes(page(["Đơn đề nghị"]), quick=True) == []


def test_speckle_does_not_produce_phantom_barcodes():
    assert codes.read_codes(rotated_noisy(page(["Bản sao"]), 0, noise=0.2)) == []
