"""Text of the sample dossier pages: realistic Vietnamese one-stop-shop documents.

Pure data plus small builders. Every page is a list of blocks that ``generate.py`` lays out;
the ground truth is exactly the lines it prints. Names, addresses and numbers are invented.
Everything printed is a single column (left, centred or right aligned) so that the reading
order of the ground truth is unambiguous.
"""

from __future__ import annotations

from dataclasses import dataclass

MOTTO = ("CỘNG HÒA XÃ HỘI CHỦ NGHĨA VIỆT NAM", "Độc lập - Tự do - Hạnh phúc")
PROCEDURE_TRANSFER = "1.004616.000.00.00.H56"
PROCEDURE_BIRTH = "1.001193.000.00.00.H56"
PROCEDURE_BUILD = "1.009994.000.00.00.H56"


@dataclass(frozen=True)
class Line:
    """One printed line (wrapped only if wider than the page); ``style`` picks the font."""

    text: str
    style: str = "body"  # body, bold, italic, title, motto
    align: str = "left"  # left, centre, right, or "sign" = centred in the right half
    tag: str = ""  # "signer" marks where a signature/seal goes


@dataclass(frozen=True)
class Para:
    """A paragraph wrapped to the text width, first line indented."""

    text: str
    indent_mm: float = 10.0


@dataclass(frozen=True)
class Gap:
    """Vertical space in lines of body text."""

    lines: float = 1.0


Block = Line | Para | Gap


@dataclass(frozen=True)
class Case:
    """One dossier: who applied, for what; feeds the receipt, the QR code and the manifest."""

    case_id: str
    procedure_code: str
    procedure: str
    applicant: str
    address: str
    phone: str
    received: str  # "09 giờ 25 phút, ngày 15 tháng 10 năm 2024"
    due: str
    documents: tuple[str, ...]
    register_no: str


CASES = (
    Case(
        case_id="000.00.31.H56-241015-0027",
        procedure_code=PROCEDURE_TRANSFER,
        procedure="Đăng ký biến động quyền sử dụng đất do chuyển nhượng quyền sử dụng đất",
        applicant="Ông Trần Văn Hùng",
        address="Số 112, ấp Hòa Phuông, xã Hòa Tú 1, huyện Mỹ Xuyên",
        phone="0299 3851 247",
        received="09 giờ 25 phút, ngày 15 tháng 10 năm 2024",
        due="14 giờ 00 phút, ngày 29 tháng 10 năm 2024",
        documents=(
            "Đơn đăng ký biến động đất đai, tài sản gắn liền với đất (bản chính);",
            "Hợp đồng chuyển nhượng quyền sử dụng đất đã được công chứng (bản chính);",
            "Giấy chứng nhận quyền sử dụng đất số CS 04517 (bản gốc);",
            "Tờ khai lệ phí trước bạ nhà, đất và tờ khai thuế thu nhập cá nhân;",
            "Bản sao Căn cước công dân của bên chuyển nhượng và bên nhận chuyển nhượng.",
        ),
        register_no="Quyển số: 03, Số thứ tự: 0027",
    ),
    Case(
        case_id="000.00.31.H56-241016-0031",
        procedure_code=PROCEDURE_BIRTH,
        procedure="Đăng ký khai sinh kết hợp đăng ký thường trú và cấp thẻ bảo hiểm y tế",
        applicant="Bà Lâm Thị Ngọc Diễm",
        address="Số 45/7, đường Lê Hồng Phong, khóm 4, thị trấn Mỹ Xuyên",
        phone="0918 462 305",
        received="14 giờ 10 phút, ngày 16 tháng 10 năm 2024",
        due="16 giờ 30 phút, ngày 18 tháng 10 năm 2024",
        documents=(
            "Tờ khai đăng ký khai sinh theo mẫu quy định;",
            "Giấy chứng sinh do Trung tâm Y tế huyện Mỹ Xuyên cấp (bản chính);",
            "Tờ khai thay đổi thông tin cư trú của người yêu cầu đăng ký thường trú;",
            "Giấy chứng nhận kết hôn của cha, mẹ trẻ (bản sao có chứng thực).",
        ),
        register_no="Quyển số: 05, Số thứ tự: 0031",
    ),
    Case(
        case_id="000.00.31.H56-241021-0044",
        procedure_code=PROCEDURE_BUILD,
        procedure="Cấp giấy phép xây dựng đối với công trình nhà ở riêng lẻ",
        applicant="Ông Đặng Quốc Việt",
        address="Ấp Hòa Phú, xã Ngọc Tố, huyện Mỹ Xuyên",
        phone="0983 117 582",
        received="08 giờ 05 phút, ngày 21 tháng 10 năm 2024",
        due="17 giờ 00 phút, ngày 08 tháng 11 năm 2024",
        documents=(
            "Đơn đề nghị cấp giấy phép xây dựng (bản chính);",
            "Bản sao Giấy chứng nhận quyền sử dụng đất có chứng thực;",
            "Hai bộ bản vẽ thiết kế xây dựng kèm theo bản kê khai năng lực;",
            "Cam kết bảo đảm an toàn đối với công trình liền kề.",
        ),
        register_no="Quyển số: 02, Số thứ tự: 0044",
    ),
)


def header(agency: str, unit: str, place_date: str, number: str = "") -> list[Block]:
    """Agency, motto and place/date: stacked (not side by side) so the reading order is fixed."""
    blocks: list[Block] = [
        Line(agency, "bold", "centre"),
        Line(unit, "bold", "centre"),
        Gap(0.4),
        Line(MOTTO[0], "motto", "centre"),
        Line(MOTTO[1], "motto", "centre"),
        Gap(0.6),
    ]
    if number:
        blocks.append(Line(number))
    blocks += [Line(place_date, "italic", "right"), Gap(0.8)]
    return blocks


def motto_only(place_date: str) -> list[Block]:
    """Citizens' forms (đơn, tờ khai) carry the motto but no issuing agency."""
    return [Line(MOTTO[0], "motto", "centre"), Line(MOTTO[1], "motto", "centre"), Gap(0.6),
            Line(place_date, "italic", "right"), Gap(0.8)]


def signature(role: str, name: str, hint: str = "(Ký, ghi rõ họ tên)") -> list[Block]:
    """Signature block in the right half; the gap is where the handwriting (and seal) goes."""
    return [Gap(0.8), Line(role, "bold", "sign"), Line(hint, "italic", "sign"), Gap(3.0),
            Line(name, "bold", "sign", tag="signer")]


def receipt(case: Case) -> list[Block]:
    """GIẤY TIẾP NHẬN HỒ SƠ VÀ HẸN TRẢ KẾT QUẢ: the page that opens every dossier and carries its QR."""
    docs = [Line(f"- {d}") for d in case.documents]
    return [
        *header("ỦY BAN NHÂN DÂN HUYỆN MỸ XUYÊN", "BỘ PHẬN TIẾP NHẬN VÀ TRẢ KẾT QUẢ",
                "Mỹ Xuyên, " + case.received.split(", ", 1)[1], f"Số: {case.register_no[-4:]}/TNHS"),
        Line("GIẤY TIẾP NHẬN HỒ SƠ VÀ HẸN TRẢ KẾT QUẢ", "title", "centre"),
        Line(f"Mã hồ sơ: {case.case_id}", "bold", "centre"),
        Gap(0.6),
        Para("Bộ phận Tiếp nhận và Trả kết quả Ủy ban nhân dân huyện Mỹ Xuyên đã tiếp nhận hồ sơ của:"),
        Line(f"Người nộp: {case.applicant}"),
        Line(f"Địa chỉ: {case.address}"),
        Line(f"Số điện thoại: {case.phone}"),
        Para(f"Nội dung yêu cầu giải quyết: {case.procedure}.", 0),
        Line(f"Mã thủ tục: {case.procedure_code}"),
        Line("1. Thành phần hồ sơ nộp gồm:"),
        *docs,
        Line("2. Số lượng hồ sơ: 01 (bộ)."),
        Line(f"3. Thời gian nhận hồ sơ: {case.received}."),
        Line(f"4. Thời gian trả kết quả: {case.due}."),
        Para("5. Đăng ký nhận kết quả tại Bộ phận Tiếp nhận và Trả kết quả hoặc qua dịch vụ bưu chính công ích.", 0),
        Line(f"Vào Sổ theo dõi hồ sơ, {case.register_no}."),
        *signature("NGƯỜI TIẾP NHẬN HỒ SƠ", "Huỳnh Thị Mỹ Duyên"),
    ]


def land_change_application() -> list[Block]:
    """Mẫu số 09/ĐK: the land-change application that starts case 0027."""
    return [
        *motto_only("Mỹ Xuyên, ngày 15 tháng 10 năm 2024"),
        Line("ĐƠN ĐĂNG KÝ BIẾN ĐỘNG ĐẤT ĐAI,", "title", "centre"),
        Line("TÀI SẢN GẮN LIỀN VỚI ĐẤT", "title", "centre"),
        Gap(0.5),
        Line("Kính gửi: Văn phòng Đăng ký đất đai tỉnh Sóc Trăng, Chi nhánh Mỹ Xuyên", "italic", "centre"),
        Gap(0.5),
        Line("I. PHẦN KÊ KHAI CỦA NGƯỜI ĐĂNG KÝ", "bold"),
        Line("1. Người sử dụng đất: Trần Văn Hùng, sinh năm 1978"),
        Line("Căn cước công dân số 094078003615, cấp ngày 12 tháng 8 năm 2021"),
        Line("Địa chỉ thường trú: Số 112, ấp Hòa Phuông, xã Hòa Tú 1, huyện Mỹ Xuyên"),
        Line("2. Giấy chứng nhận đã cấp: số phát hành CS 04517, số vào sổ CH 01288"),
        Line("3. Thửa đất số 215, tờ bản đồ số 18, diện tích 1.245,6 m²"),
        Line("Mục đích sử dụng: đất trồng cây lâu năm 945,6 m²; đất ở tại nông thôn 300 m²"),
        Line("4. Nội dung biến động về: chuyển nhượng toàn bộ thửa đất"),
        Para("Nội dung trên Giấy chứng nhận trước khi biến động: người sử dụng đất là ông Trần Văn Hùng "
             "và vợ là bà Nguyễn Thị Thắm. Nội dung sau khi biến động: người sử dụng đất là ông Lê Minh Đức, "
             "sinh năm 1985, căn cước công dân số 094085001927."),
        Line("5. Lý do biến động: nhận chuyển nhượng theo hợp đồng công chứng số 2417, quyển số 05/2024"),
        Line("6. Tình hình thực hiện nghĩa vụ tài chính: chưa thực hiện, đề nghị được xác định"),
        Line("7. Giấy tờ liên quan nộp kèm theo đơn này gồm có:"),
        Line("- Giấy chứng nhận quyền sử dụng đất đã cấp;"),
        Line("- Hợp đồng chuyển nhượng quyền sử dụng đất số 2417 ngày 09 tháng 10 năm 2024;"),
        Line("- Tờ khai lệ phí trước bạ và tờ khai thuế thu nhập cá nhân."),
        Para("Tôi xin cam đoan nội dung kê khai trên đơn là đúng sự thật, nếu sai tôi hoàn toàn chịu "
             "trách nhiệm trước pháp luật."),
        *signature("NGƯỜI VIẾT ĐƠN", "Trần Văn Hùng"),
    ]


def birth_declaration() -> list[Block]:
    """Tờ khai đăng ký khai sinh (case 0031)."""
    return [
        *motto_only("Mỹ Xuyên, ngày 16 tháng 10 năm 2024"),
        Line("TỜ KHAI ĐĂNG KÝ KHAI SINH", "title", "centre"),
        Gap(0.4),
        Line("Kính gửi: Ủy ban nhân dân thị trấn Mỹ Xuyên", "italic", "centre"),
        Gap(0.5),
        Line("Họ, chữ đệm, tên người yêu cầu: Lâm Thị Ngọc Diễm"),
        Line("Nơi cư trú: Số 45/7, đường Lê Hồng Phong, khóm 4, thị trấn Mỹ Xuyên"),
        Line("Giấy tờ tùy thân: Căn cước công dân số 094192006248"),
        Line("Quan hệ với người được khai sinh: mẹ đẻ"),
        Line("Đề nghị cơ quan đăng ký khai sinh cho người dưới đây:", "bold"),
        Line("Họ, chữ đệm, tên: Thạch Gia Bảo"),
        Line("Ngày, tháng, năm sinh: 02/10/2024, ghi bằng chữ: ngày hai tháng mười năm hai nghìn"),
        Line("không trăm hai mươi bốn"),
        Line("Giới tính: Nam        Dân tộc: Khmer        Quốc tịch: Việt Nam"),
        Line("Nơi sinh: Trung tâm Y tế huyện Mỹ Xuyên, tỉnh Sóc Trăng"),
        Line("Quê quán: xã Đại Tâm, huyện Mỹ Xuyên, tỉnh Sóc Trăng"),
        Line("Họ, chữ đệm, tên người mẹ: Lâm Thị Ngọc Diễm, năm sinh 1992"),
        Line("Họ, chữ đệm, tên người cha: Thạch Sô Phết, năm sinh 1989"),
        Para("Tôi cam đoan nội dung đề nghị đăng ký khai sinh trên đây là đúng sự thật, được sự thỏa "
             "thuận nhất trí của các bên liên quan theo quy định pháp luật. Tôi chịu hoàn toàn trách nhiệm "
             "trước pháp luật về nội dung cam đoan của mình."),
        Line("Đề nghị cấp bản sao trích lục khai sinh: có, số lượng 02 bản."),
        *signature("NGƯỜI YÊU CẦU", "Lâm Thị Ngọc Diễm"),
    ]


def building_permit_application() -> list[Block]:
    """Đơn đề nghị cấp giấy phép xây dựng (case 0044)."""
    return [
        *motto_only("Mỹ Xuyên, ngày 21 tháng 10 năm 2024"),
        Line("ĐƠN ĐỀ NGHỊ CẤP GIẤY PHÉP XÂY DỰNG", "title", "centre"),
        Line("(Sử dụng cho công trình nhà ở riêng lẻ)", "italic", "centre"),
        Gap(0.4),
        Line("Kính gửi: Ủy ban nhân dân huyện Mỹ Xuyên", "italic", "centre"),
        Gap(0.5),
        Line("1. Thông tin về chủ đầu tư:", "bold"),
        Line("Tên chủ đầu tư: Đặng Quốc Việt"),
        Line("Địa chỉ liên hệ: ấp Hòa Phú, xã Ngọc Tố, huyện Mỹ Xuyên"),
        Line("Số điện thoại: 0983 117 582"),
        Line("2. Thông tin công trình:", "bold"),
        Line("Địa điểm xây dựng: thửa đất số 87, tờ bản đồ số 6, ấp Hòa Phú"),
        Line("Diện tích khu đất: 412,5 m²; diện tích xây dựng tầng một: 126,0 m²"),
        Line("Tổng diện tích sàn: 252,0 m²; chiều cao công trình: 9,8 m; số tầng: 02"),
        Line("Cốt xây dựng: +0,45 m so với mặt đường hiện trạng"),
        Line("3. Đơn vị hoặc người chủ nhiệm thiết kế:", "bold"),
        Line("Công ty TNHH Tư vấn Xây dựng Phước Thịnh, chứng chỉ năng lực số SOT-00219"),
        Line("4. Dự kiến thời gian hoàn thành công trình: 08 tháng kể từ ngày khởi công."),
        Para("5. Cam kết: tôi xin cam đoan làm theo đúng giấy phép được cấp, nếu sai tôi xin hoàn toàn "
             "chịu trách nhiệm và bị xử lý theo quy định của pháp luật; bảo đảm vệ sinh môi trường, "
             "không lấn chiếm vỉa hè, lòng đường trong suốt quá trình thi công."),
        *signature("NGƯỜI LÀM ĐƠN", "Đặng Quốc Việt"),
    ]


def registration_fee_declaration() -> list[Block]:
    """Tờ khai lệ phí trước bạ nhà, đất (case 0027)."""
    return [
        *motto_only("Mỹ Xuyên, ngày 15 tháng 10 năm 2024"),
        Line("TỜ KHAI LỆ PHÍ TRƯỚC BẠ NHÀ, ĐẤT", "title", "centre"),
        Line("[01] Kỳ tính thuế: theo từng lần phát sinh", "italic", "centre"),
        Gap(0.5),
        Line("[04] Tên người nộp thuế: Lê Minh Đức"),
        Line("[05] Mã số thuế: 8471902635"),
        Line("[06] Địa chỉ: ấp Hòa Phuông, xã Hòa Tú 1, huyện Mỹ Xuyên, tỉnh Sóc Trăng"),
        Line("[07] Điện thoại: 0939 284 116"),
        Line("ĐẶC ĐIỂM NHÀ, ĐẤT:", "bold"),
        Line("1. Đất: thửa số 215, tờ bản đồ số 18, diện tích 1.245,6 m²"),
        Line("Nguồn gốc nhà, đất: nhận chuyển nhượng của ông Trần Văn Hùng"),
        Line("Giá trị nhà, đất thực tế nhận chuyển nhượng: 1.850.000.000 đồng"),
        Line("(Một tỷ tám trăm năm mươi triệu đồng chẵn)", "italic"),
        Line("2. Nhà: không có tài sản gắn liền với đất."),
        Line("3. Giấy tờ có liên quan, gồm:"),
        Line("- Hợp đồng chuyển nhượng số 2417, công chứng ngày 09/10/2024;"),
        Line("- Giấy chứng nhận quyền sử dụng đất số CS 04517."),
        Para("Tôi cam đoan số liệu khai trên là đúng và chịu trách nhiệm trước pháp luật về những số liệu "
             "đã khai; nếu khai sai sẽ bị xử phạt theo Luật Quản lý thuế."),
        *signature("NGƯỜI NỘP THUẾ", "Lê Minh Đức"),
    ]


def power_of_attorney() -> list[Block]:
    """Giấy ủy quyền: the buyer lets a relative file the dossier."""
    return [
        *motto_only("Mỹ Xuyên, ngày 14 tháng 10 năm 2024"),
        Line("GIẤY ỦY QUYỀN", "title", "centre"),
        Line("(Về việc nộp hồ sơ và nhận kết quả thủ tục hành chính)", "italic", "centre"),
        Gap(0.5),
        Para("Căn cứ Bộ luật Dân sự năm 2015 và các văn bản hướng dẫn thi hành; căn cứ nhu cầu của các "
             "bên, hôm nay, ngày 14 tháng 10 năm 2024, chúng tôi gồm có:"),
        Line("Bên ủy quyền: ông Lê Minh Đức, sinh ngày 27/03/1985", "bold"),
        Line("Căn cước công dân số 094085001927, cấp ngày 05/5/2021"),
        Line("Nơi cư trú: ấp Hòa Phuông, xã Hòa Tú 1, huyện Mỹ Xuyên"),
        Line("Bên được ủy quyền: bà Lê Thị Kiều Oanh, sinh ngày 11/9/1990", "bold"),
        Line("Căn cước công dân số 094190004472, cấp ngày 18/6/2022"),
        Line("Nơi cư trú: khóm 2, phường 5, thành phố Sóc Trăng"),
        Line("Nội dung ủy quyền:", "bold"),
        Para("Bên được ủy quyền thay mặt bên ủy quyền nộp hồ sơ đăng ký biến động đất đai, nhận thông báo "
             "nộp thuế, nộp lệ phí trước bạ và nhận Giấy chứng nhận quyền sử dụng đất tại Bộ phận Tiếp "
             "nhận và Trả kết quả huyện Mỹ Xuyên."),
        Line("Thời hạn ủy quyền: từ ngày ký đến ngày 31 tháng 12 năm 2024."),
        Para("Hai bên cam kết chịu trách nhiệm trước pháp luật về nội dung ủy quyền; giấy này được lập "
             "thành 03 bản có giá trị pháp lý như nhau, mỗi bên giữ 01 bản."),
        *signature("BÊN ỦY QUYỀN", "Lê Minh Đức"),
    ]


def transfer_contract() -> list[Block]:
    """Hợp đồng chuyển nhượng (first page excerpt) behind case 0027."""
    return [
        *motto_only("Sóc Trăng, ngày 09 tháng 10 năm 2024"),
        Line("HỢP ĐỒNG CHUYỂN NHƯỢNG QUYỀN SỬ DỤNG ĐẤT", "title", "centre"),
        Line("Số công chứng: 2417, quyển số 05/2024 TP/CC-SCC/HĐGD", "italic", "centre"),
        Gap(0.5),
        Para("Hôm nay, ngày 09 tháng 10 năm 2024, tại Văn phòng Công chứng Trần Quang, số 38 đường "
             "Hùng Vương, phường 6, thành phố Sóc Trăng, chúng tôi gồm có:"),
        Line("BÊN CHUYỂN NHƯỢNG (Bên A):", "bold"),
        Line("Ông Trần Văn Hùng, sinh năm 1978, căn cước công dân số 094078003615"),
        Line("Bà Nguyễn Thị Thắm, sinh năm 1981, căn cước công dân số 094181002274"),
        Line("BÊN NHẬN CHUYỂN NHƯỢNG (Bên B):", "bold"),
        Line("Ông Lê Minh Đức, sinh năm 1985, căn cước công dân số 094085001927"),
        Para("Hai bên đồng ý thực hiện việc chuyển nhượng quyền sử dụng đất với các thỏa thuận sau đây:"),
        Line("Điều 1. Quyền sử dụng đất chuyển nhượng", "bold"),
        Para("Thửa đất số 215, tờ bản đồ số 18, địa chỉ ấp Hòa Phuông, xã Hòa Tú 1, huyện Mỹ Xuyên; "
             "diện tích 1.245,6 m² (bằng chữ: một nghìn hai trăm bốn mươi lăm phẩy sáu mét vuông); "
             "hình thức sử dụng: riêng; thời hạn sử dụng đất ở: lâu dài."),
        Line("Điều 2. Giá chuyển nhượng và phương thức thanh toán", "bold"),
        Para("Giá chuyển nhượng là 1.850.000.000 đồng. Bên B thanh toán cho Bên A bằng chuyển khoản "
             "trong vòng 05 ngày kể từ ngày hợp đồng được công chứng. Việc thanh toán do hai bên tự "
             "thực hiện và chịu trách nhiệm trước pháp luật."),
        Line("Điều 3. Việc giao và đăng ký quyền sử dụng đất", "bold"),
        Para("Bên A có nghĩa vụ giao thửa đất nêu tại Điều 1 cùng các giấy tờ về quyền sử dụng đất cho "
             "Bên B ngay sau khi nhận đủ tiền. Bên B có nghĩa vụ đăng ký biến động tại cơ quan có thẩm quyền."),
    ]


def site_inspection_record() -> list[Block]:
    """Biên bản kiểm tra hiện trạng: a typical internal page of a land dossier."""
    return [
        *header("VĂN PHÒNG ĐĂNG KÝ ĐẤT ĐAI TỈNH SÓC TRĂNG", "CHI NHÁNH HUYỆN MỸ XUYÊN",
                "Mỹ Xuyên, ngày 22 tháng 10 năm 2024"),
        Line("BIÊN BẢN KIỂM TRA HIỆN TRẠNG SỬ DỤNG ĐẤT", "title", "centre"),
        Gap(0.5),
        Para("Vào lúc 08 giờ 30 phút ngày 22 tháng 10 năm 2024, tại thửa đất số 215, tờ bản đồ số 18, "
             "ấp Hòa Phuông, xã Hòa Tú 1, chúng tôi gồm:"),
        Line("1. Ông Phạm Hữu Lộc, viên chức Chi nhánh Văn phòng Đăng ký đất đai;"),
        Line("2. Ông Kiều Văn Tỏ, công chức địa chính - xây dựng xã Hòa Tú 1;"),
        Line("3. Ông Trần Văn Hùng, người sử dụng đất;"),
        Line("4. Ông Lê Minh Đức, người nhận chuyển nhượng."),
        Line("Đã tiến hành kiểm tra hiện trạng thửa đất, kết quả như sau:", "bold"),
        Para("Ranh giới thửa đất ổn định, không có tranh chấp; phía Đông giáp kênh thủy lợi Hòa Tú, phía "
             "Tây giáp đường đal rộng 3,5 m, phía Nam giáp thửa số 216 của hộ ông Sơn Thạch Sươl, phía Bắc "
             "giáp thửa số 198. Trên đất có một căn nhà cấp bốn diện tích 72 m² và vườn dừa, xoài."),
        Para("Diện tích đo đạc thực tế là 1.243,9 m², chênh lệch giảm 1,7 m² so với Giấy chứng nhận do sai "
             "số đo đạc; các bên thống nhất giữ nguyên diện tích đã cấp."),
        Para("Biên bản kết thúc vào lúc 09 giờ 45 phút cùng ngày, đã đọc lại cho mọi người cùng nghe, "
             "thống nhất ký tên và được lập thành 02 bản."),
        *signature("NGƯỜI LẬP BIÊN BẢN", "Phạm Hữu Lộc"),
    ]


def land_use_decision() -> list[Block]:
    """Quyết định with red seal: the result document the office returns."""
    return [
        *header("ỦY BAN NHÂN DÂN", "HUYỆN MỸ XUYÊN", "Mỹ Xuyên, ngày 28 tháng 10 năm 2024",
                "Số: 1482/QĐ-UBND"),
        Line("QUYẾT ĐỊNH", "title", "centre"),
        Line("Về việc cho phép chuyển mục đích sử dụng đất", "bold", "centre"),
        Gap(0.4),
        Line("ỦY BAN NHÂN DÂN HUYỆN MỸ XUYÊN", "bold", "centre"),
        Gap(0.3),
        Para("Căn cứ Luật Tổ chức chính quyền địa phương ngày 19 tháng 6 năm 2015; căn cứ Luật Đất đai "
             "ngày 18 tháng 01 năm 2024 và các nghị định hướng dẫn thi hành;"),
        Para("Xét đơn đề nghị của ông Lê Minh Đức và đề nghị của Trưởng phòng Tài nguyên và Môi trường "
             "tại Tờ trình số 357/TTr-TNMT ngày 25 tháng 10 năm 2024."),
        Line("QUYẾT ĐỊNH:", "bold", "centre"),
        Para("Điều 1. Cho phép ông Lê Minh Đức được chuyển mục đích sử dụng 200,0 m² đất trồng cây lâu "
             "năm sang đất ở tại nông thôn thuộc thửa đất số 215, tờ bản đồ số 18, xã Hòa Tú 1."),
        Para("Điều 2. Người sử dụng đất có trách nhiệm nộp tiền sử dụng đất theo thông báo của cơ quan "
             "thuế và sử dụng đất đúng mục đích đã được chuyển."),
        Para("Điều 3. Chánh Văn phòng Hội đồng nhân dân và Ủy ban nhân dân huyện, Trưởng phòng Tài nguyên "
             "và Môi trường, Chủ tịch Ủy ban nhân dân xã Hòa Tú 1 và ông Lê Minh Đức chịu trách nhiệm thi "
             "hành Quyết định này kể từ ngày ký."),
        *signature("KT. CHỦ TỊCH", "Nguyễn Thành Trọng", "PHÓ CHỦ TỊCH"),
    ]


def residence_change_declaration() -> list[Block]:
    """Tờ khai thay đổi thông tin cư trú (case 0031)."""
    return [
        *motto_only("Mỹ Xuyên, ngày 16 tháng 10 năm 2024"),
        Line("TỜ KHAI THAY ĐỔI THÔNG TIN CƯ TRÚ", "title", "centre"),
        Gap(0.4),
        Line("Kính gửi: Công an thị trấn Mỹ Xuyên", "italic", "centre"),
        Gap(0.5),
        Line("1. Họ, chữ đệm và tên: Lâm Thị Ngọc Diễm"),
        Line("2. Ngày, tháng, năm sinh: 08/01/1992        3. Giới tính: Nữ"),
        Line("4. Số định danh cá nhân: 094192006248"),
        Line("5. Số điện thoại liên hệ: 0918 462 305"),
        Line("6. Nơi thường trú: Số 45/7, đường Lê Hồng Phong, khóm 4, thị trấn Mỹ Xuyên"),
        Line("7. Nghề nghiệp, nơi làm việc: giáo viên, Trường Tiểu học Mỹ Xuyên A"),
        Line("8. Nội dung đề nghị: đăng ký thường trú cho con mới sinh"),
        Line("9. Những thành viên trong hộ gia đình cùng thay đổi:"),
        Line("- Thạch Gia Bảo, sinh ngày 02/10/2024, quan hệ với chủ hộ: con"),
        Para("Tôi xin cam đoan những thông tin kê khai trên là đúng sự thật và chịu trách nhiệm trước "
             "pháp luật về lời khai của mình; đề nghị cơ quan đăng ký cư trú xem xét, giải quyết."),
        Line("Ý kiến của chủ hộ: đồng ý cho đăng ký thường trú.", "italic"),
        *signature("NGƯỜI KÊ KHAI", "Lâm Thị Ngọc Diễm"),
    ]


def data_request_form() -> list[Block]:
    """Phiếu yêu cầu cung cấp thông tin, dữ liệu đất đai."""
    return [
        *motto_only("Sóc Trăng, ngày 07 tháng 11 năm 2024"),
        Line("PHIẾU YÊU CẦU CUNG CẤP THÔNG TIN,", "title", "centre"),
        Line("DỮ LIỆU ĐẤT ĐAI", "title", "centre"),
        Gap(0.4),
        Line("Kính gửi: Văn phòng Đăng ký đất đai tỉnh Sóc Trăng", "italic", "centre"),
        Gap(0.5),
        Line("1. Tên tổ chức, cá nhân yêu cầu: Ngân hàng Thương mại Cổ phần Phương Đông"),
        Line("Chi nhánh Sóc Trăng, người đại diện: bà Võ Thị Hải Yến"),
        Line("2. Địa chỉ: số 9 đường Trần Hưng Đạo, phường 3, thành phố Sóc Trăng"),
        Line("3. Số điện thoại: 0299 3628 451; thư điện tử: soctrang@example.vn"),
        Line("4. Danh mục và nội dung thông tin cần cung cấp:"),
        Line("- Thông tin thửa đất số 215, tờ bản đồ số 18, xã Hòa Tú 1;"),
        Line("- Tình trạng pháp lý, thế chấp và biến động từ năm 2015 đến nay."),
        Line("5. Mục đích sử dụng dữ liệu: thẩm định tài sản bảo đảm khoản vay."),
        Line("6. Hình thức nhận kết quả: bản giấy, nhận trực tiếp tại trụ sở."),
        Para("Chúng tôi cam kết sử dụng dữ liệu đúng mục đích, không cung cấp cho bên thứ ba và thanh toán "
             "đầy đủ chi phí theo quy định của Bộ Tài chính."),
        *signature("NGƯỜI YÊU CẦU", "Võ Thị Hải Yến"),
    ]


def citizen_feedback_letter() -> list[Block]:
    """Đơn kiến nghị: a free-form letter, mostly running text."""
    return [
        *motto_only("Mỹ Xuyên, ngày 04 tháng 11 năm 2024"),
        Line("ĐƠN KIẾN NGHỊ", "title", "centre"),
        Line("(V/v điều chỉnh thông tin trên Giấy chứng nhận quyền sử dụng đất)", "italic", "centre"),
        Gap(0.4),
        Line("Kính gửi: Chi nhánh Văn phòng Đăng ký đất đai huyện Mỹ Xuyên", "italic", "centre"),
        Gap(0.5),
        Para("Tôi tên là Sơn Thị Sà Rưng, sinh năm 1969, hiện ngụ tại ấp Hòa Phuông, xã Hòa Tú 1, huyện "
             "Mỹ Xuyên, tỉnh Sóc Trăng. Tôi là người sử dụng thửa đất số 216, tờ bản đồ số 18, liền kề "
             "với thửa đất của hộ ông Trần Văn Hùng."),
        Para("Ngày 22 tháng 10 năm 2024, khi cán bộ đo đạc kiểm tra hiện trạng thửa đất số 215, tôi nhận "
             "thấy tên của tôi trên Giấy chứng nhận số CS 03986 bị ghi sai thành Sơn Thị Sà Rương, năm sinh "
             "ghi là 1966 thay vì 1969 như trong căn cước công dân."),
        Para("Nay tôi làm đơn này kính đề nghị quý cơ quan xem xét, đính chính thông tin trên Giấy chứng "
             "nhận cho đúng với giấy tờ tùy thân, để tôi thuận tiện trong việc thực hiện các giao dịch về "
             "quyền sử dụng đất sau này."),
        Para("Kèm theo đơn gồm: bản sao căn cước công dân, bản gốc Giấy chứng nhận số CS 03986 và bản sao "
             "sổ hộ khẩu trước đây. Tôi xin chân thành cảm ơn!"),
        *signature("NGƯỜI LÀM ĐƠN", "Sơn Thị Sà Rưng"),
    ]
