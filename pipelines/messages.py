"""Plain-words explanations, in Vietnamese and English, for the ``NAME.error.txt`` beside a quarantined scan.

The reader is the scanning clerk, not a developer: say what is wrong with the paper or the file and
what to do, then give the technical one-liner for whoever is called in.
"""

from __future__ import annotations

from dataclasses import dataclass

# Keys are the names of digitize.errors classes (most specific first) or pipeline reasons.
_TEXTS: dict[str, tuple[str, str, str, str]] = {
    "incomplete": (
        "Tệp chưa được ghi xong hoặc bị cắt cụt (máy quét dừng giữa chừng).",
        "Quét lại hồ sơ và đặt tệp mới vào thư mục nhận.",
        "The file was never completely written or is truncated (the scanner stopped part way).",
        "Scan the dossier again and drop the new file into the inbox.",
    ),
    "SidecarError": (
        "Tệp mô tả kèm theo (cùng tên, đuôi .json) bị lỗi nên chưa biết hồ sơ thuộc về đâu.",
        "Sửa hoặc xoá tệp .json (xem chi tiết bên dưới), rồi đặt lại cả hai tệp vào thư mục nhận.",
        "The description file beside the scan (same name, .json) is invalid, so its dossier is unknown.",
        "Fix or delete the .json file (see the detail below), then drop both files into the inbox again.",
    ),
    "EncryptedPdfError": (
        "Tệp PDF được đặt mật khẩu nên không đọc được.",
        "Lưu lại tệp không có mật khẩu (hoặc quét lại bản giấy) rồi đặt vào thư mục nhận.",
        "The PDF is password-protected and cannot be read.",
        "Save it without a password (or scan the paper again) and drop it into the inbox.",
    ),
    "UnsupportedInputError": (
        "Định dạng tệp không được hỗ trợ. Chỉ nhận PDF, TIFF, JPEG, PNG.",
        "Cài đặt máy quét xuất ra PDF hoặc TIFF rồi quét lại.",
        "This file type is not supported. Only PDF, TIFF, JPEG and PNG are accepted.",
        "Set the scanner to produce PDF or TIFF and scan again.",
    ),
    "TooManyPagesError": (
        "Tệp có quá nhiều trang (vượt giới hạn số trang của một tệp).",
        "Tách hồ sơ thành nhiều tệp nhỏ hơn rồi đặt vào thư mục nhận; nếu đúng là một hồ sơ rất dày, báo quản trị.",
        "The file has too many pages (over the limit of pages per file).",
        "Split the dossier into smaller files and drop them into the inbox; if it really is one very thick "
        "dossier, call the administrator.",
    ),
    "FileTooLargeError": (
        "Tệp quá lớn (vượt giới hạn dung lượng của một tệp) hoặc phần lớn là dữ liệu rỗng.",
        "Quét lại ở 200-300 dpi hoặc tách thành nhiều tệp nhỏ hơn; nếu vẫn lỗi, báo quản trị.",
        "The file is too large (over the size limit per file) or mostly empty space.",
        "Scan again at 200-300 dpi or split it into smaller files; if it persists, call the administrator.",
    ),
    "ResourceError": (
        "Đĩa máy chủ bị đầy nhiều lần liền khi xử lý tệp này, trong khi việc khác vẫn còn chỗ: tệp cần nhiều "
        "dung lượng trống hơn máy chủ đang có (tệp không hỏng).",
        "Báo quản trị hệ thống giải phóng thêm dung lượng đĩa, rồi đặt lại tệp vào thư mục nhận; không cần quét lại.",
        "The server's disk filled up several times in a row while processing this file, while other work had "
        "room: the file needs more free space than the server has (the file is not damaged).",
        "Ask the administrator to free more disk space, then drop the file into the inbox again; no need to rescan.",
    ),
    "InputTooLargeError": (
        "Ảnh quét quá lớn (độ phân giải hoặc kích thước trang bất thường).",
        "Quét lại ở 200-300 dpi, khổ giấy thật của văn bản.",
        "The scanned image is too large (abnormal resolution or page size).",
        "Scan again at 200-300 dpi at the document's real paper size.",
    ),
    "InputError": (
        "Tệp bị hỏng hoặc không đọc được (không có trang nào, dữ liệu sai).",
        "Quét lại hồ sơ và đặt tệp mới vào thư mục nhận.",
        "The file is damaged or unreadable (no pages, or corrupt data).",
        "Scan the dossier again and drop the new file into the inbox.",
    ),
    "OcrError": (
        "Không nhận dạng được chữ trên một trang (quá thời gian hoặc lỗi phần mềm nhận dạng).",
        "Kiểm tra chất lượng bản quét (trang trắng, quá tối, quá mờ) rồi quét lại; nếu vẫn lỗi, báo quản trị.",
        "Text recognition failed on a page (timed out or the OCR engine failed).",
        "Check the scan quality (blank, too dark, too blurred) and scan again; if it persists, call the administrator.",
    ),
    "OutputValidationError": (
        "Bản PDF/A tạo ra không đạt chuẩn lưu trữ.",
        "Báo quản trị hệ thống; giữ nguyên tệp này.",
        "The PDF/A produced did not pass the archival-format check.",
        "Tell the system administrator; keep this file as it is.",
    ),
    "NotRegularFileError": (
        "Đây là lối tắt (liên kết) hoặc tệp đặc biệt, không phải tệp quét; vì an toàn, hệ thống không đi theo lối tắt.",
        "Sao chép chính tệp quét (không phải lối tắt) vào thư mục nhận.",
        "This is a shortcut (symbolic link) or special file, not a scan; for safety links are never followed.",
        "Copy the scan itself (not a link to it) into the inbox.",
    ),
    "PermissionError": (
        "Tài khoản của dịch vụ số hoá không có quyền đọc tệp này (tệp không hỏng).",
        "Báo quản trị hệ thống cấp quyền đọc cho dịch vụ, rồi đặt lại tệp vào thư mục nhận; không cần quét lại.",
        "The digitizing service's account is not allowed to read this file (the file is not damaged).",
        "Ask the administrator to let the service read it, then drop it into the inbox again; no need to rescan.",
    ),
    "internal": (
        "Chương trình gặp lỗi nội bộ nhiều lần khi xử lý tệp này (không phải lỗi của bản quét).",
        "Báo quản trị hệ thống; giữ nguyên tệp này.",
        "The program hit an internal error on this file several times (not a fault of the scan).",
        "Tell the system administrator; keep this file as it is.",
    ),
    "crashed": (
        "Việc xử lý tệp này bị gián đoạn nhiều lần (chương trình dừng đột ngột khi đang xử lý).",
        "Báo quản trị hệ thống; giữ nguyên tệp này.",
        "Processing this file was interrupted repeatedly (the program stopped while working on it).",
        "Tell the system administrator; keep this file as it is.",
    ),
}
_FALLBACK = (
    "Không xử lý được tệp do lỗi hệ thống.",
    "Báo quản trị hệ thống; giữ nguyên tệp này.",
    "The file could not be processed because of a system error.",
    "Tell the system administrator; keep this file as it is.",
)


@dataclass(frozen=True)
class Explanation:
    reason_vi: str
    action_vi: str
    reason_en: str
    action_en: str


def explain(kinds: tuple[str, ...]) -> Explanation:
    """The text for the first kind known, e.g. an exception's class names from its MRO."""
    for kind in kinds:
        if kind in _TEXTS:
            return Explanation(*_TEXTS[kind])
    return Explanation(*_FALLBACK)


def error_kinds(error: BaseException) -> tuple[str, ...]:
    return tuple(cls.__name__ for cls in type(error).__mro__)


def error_report(file_name: str, explanation: Explanation, detail: str, when: str) -> str:
    """The whole ``NAME.error.txt``: Vietnamese first, then English, then the technical detail."""
    return (
        f"KHÔNG XỬ LÝ ĐƯỢC TỆP: {file_name}\n"
        f"Lý do: {explanation.reason_vi}\n"
        f"Cần làm: {explanation.action_vi}\n"
        "\n"
        f"FILE NOT PROCESSED: {file_name}\n"
        f"Reason: {explanation.reason_en}\n"
        f"What to do: {explanation.action_en}\n"
        "\n"
        f"Chi tiết kỹ thuật / Technical detail: {detail}\n"
        f"Thời điểm / Time: {when}\n"
    )
