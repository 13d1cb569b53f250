"""Texts of the held-out hard pages (issue 13): invented Vietnamese administrative documents,
written for this set only (not the texts of samples/content.py or of the tests' generators).

A document is a list of (style, text) blocks: "title" and "centre" are centred, "right" is right
aligned, "body" is wrapped to the column, "row" is a table row (cells separated by " | ").
Names, addresses, numbers and dates are invented.
"""

from __future__ import annotations

Doc = list[tuple[str, str]]

HEADER = [
    ("centre", "CỘNG HÒA XÃ HỘI CHỦ NGHĨA VIỆT NAM"),
    ("centre", "Độc lập - Tự do - Hạnh phúc"),
]

RESIDENCE_CONFIRMATION: Doc = HEADER + [
    ("right", "Thới Bình, ngày 14 tháng 3 năm 2019"),
    ("title", "GIẤY XÁC NHẬN THÔNG TIN CƯ TRÚ"),
    ("body", "Công an xã Biển Bạch Đông, huyện Thới Bình, tỉnh Cà Mau xác nhận ông Lâm Quốc Thạnh, "
             "sinh ngày 02 tháng 9 năm 1981, số định danh cá nhân 096081004417, hiện thường trú tại ấp "
             "Nhà Máy B, xã Biển Bạch Đông."),
    ("body", "Ông Thạnh đã đăng ký thường trú tại địa chỉ trên từ ngày 21 tháng 6 năm 2008 đến nay, "
             "cùng hộ với vợ là bà Đặng Thị Huyền Trâm và hai con chưa thành niên."),
    ("body", "Giấy này cấp theo đề nghị của công dân để bổ sung hồ sơ xin chuyển mục đích sử dụng "
             "đất nông nghiệp sang đất ở, có giá trị trong thời hạn ba mươi ngày kể từ ngày ký."),
    ("right", "TRƯỞNG CÔNG AN XÃ"),
    ("right", "Thiếu tá Dương Văn Khởi"),
]

LAND_HANDOVER: Doc = HEADER + [
    ("title", "BIÊN BẢN BÀN GIAO ĐẤT TRÊN THỰC ĐỊA"),
    ("body", "Hôm nay, hồi 8 giờ 30 phút ngày 09 tháng 11 năm 2021, tại thửa đất số 157, tờ bản đồ "
             "số 22, xã Quỳnh Hậu, huyện Quỳnh Lưu, tỉnh Nghệ An, chúng tôi gồm có:"),
    ("body", "Bên giao: Ủy ban nhân dân xã Quỳnh Hậu, đại diện là ông Hồ Sỹ Nguyên, Phó Chủ tịch."),
    ("body", "Bên nhận: hộ bà Trương Thị Lựu, ở xóm 6, xã Quỳnh Hậu."),
    ("body", "Hai bên đã cùng kiểm tra mốc giới, đo lại cạnh phía bắc dài 18,40 mét và cạnh phía "
             "đông dài 24,15 mét, diện tích bàn giao là 444,4 mét vuông, đúng với quyết định giao đất."),
    ("body", "Biên bản lập xong lúc 10 giờ cùng ngày, đã đọc lại cho các bên cùng nghe và thống "
             "nhất ký tên dưới đây."),
    ("centre", "ĐẠI DIỆN BÊN GIAO            ĐẠI DIỆN BÊN NHẬN"),
]

MARRIAGE_STATUS: Doc = HEADER + [
    ("right", "Yên Thế, ngày 27 tháng 5 năm 2020"),
    ("title", "GIẤY XÁC NHẬN TÌNH TRẠNG HÔN NHÂN"),
    ("body", "Ủy ban nhân dân thị trấn Bố Hạ, huyện Yên Thế, tỉnh Bắc Giang xác nhận:"),
    ("body", "Họ và tên: Nông Thị Ngọc Diệp. Giới tính: Nữ. Ngày sinh: 11/12/1994. Dân tộc: Tày. "
             "Quốc tịch: Việt Nam."),
    ("body", "Nơi cư trú: tổ dân phố Đồng Bài, thị trấn Bố Hạ, huyện Yên Thế, tỉnh Bắc Giang."),
    ("body", "Tình trạng hôn nhân: chưa đăng ký kết hôn với ai trong thời gian cư trú tại địa "
             "phương từ năm 2012 đến nay."),
    ("body", "Giấy này được cấp để làm thủ tục đăng ký kết hôn, không dùng vào mục đích khác."),
    ("right", "KT. CHỦ TỊCH"),
    ("right", "PHÓ CHỦ TỊCH"),
    ("right", "Vi Thị Thanh Hương"),
]

TYPED_DECISION: Doc = [
    ("centre", "ỦY BAN HÀNH CHÍNH TỈNH HẬU GIANG"),
    ("centre", "Số: 318/QĐ-UB"),
    ("title", "QUYẾT ĐỊNH"),
    ("centre", "Về việc cấp đất làm nhà ở cho cán bộ"),
    ("body", "Căn cứ đề nghị của Ty Nông nghiệp và biên bản xét duyệt ngày 04 tháng 8 năm 1979 "
             "của Hội đồng xét cấp đất thị xã Vị Thanh;"),
    ("body", "Điều 1. Nay cấp cho đồng chí Huỳnh Văn Tư, cán bộ Ty Thủy lợi, một lô đất diện "
             "tích 120 mét vuông tại khóm 2, phường 1, thị xã Vị Thanh, để làm nhà ở."),
    ("body", "Điều 2. Người được cấp đất phải xây dựng nhà trong thời hạn hai năm, không được "
             "chuyển nhượng, cho thuê hoặc đổi cho người khác."),
    ("body", "Điều 3. Chánh Văn phòng, Trưởng Ty Nông nghiệp và đồng chí có tên tại Điều 1 chịu "
             "trách nhiệm thi hành quyết định này."),
    ("right", "T/M ỦY BAN HÀNH CHÍNH TỈNH"),
    ("right", "Phạm Hữu Lộc"),
]

CARBON_LETTER: Doc = [
    ("centre", "SỞ XÂY DỰNG TỈNH NINH THUẬN"),
    ("centre", "Số: 77/CV-XD"),
    ("centre", "V/v trả lời đơn của bà Chamaléa Thị Hồng"),
    ("body", "Kính gửi: bà Chamaléa Thị Hồng, thôn Ma Nới, xã Ma Nới, huyện Ninh Sơn."),
    ("body", "Sở Xây dựng nhận được đơn đề ngày 15 tháng 2 năm 1996 của bà về việc xin phép sửa "
             "chữa nhà bếp giáp ranh đường liên xã."),
    ("body", "Sau khi kiểm tra hiện trạng, Sở đồng ý để bà sửa chữa trên nền móng cũ, không "
             "được lấn ra hành lang an toàn đường bộ, chiều cao không quá một tầng."),
    ("body", "Đề nghị bà liên hệ Ủy ban nhân dân xã để được hướng dẫn thủ tục tiếp theo."),
    ("right", "GIÁM ĐỐC"),
    ("right", "Đàng Năng Thọ"),
]

FAX_NOTICE: Doc = [
    ("body", "UBND HUYỆN ĐẦM HÀ - VĂN PHÒNG HĐND VÀ UBND"),
    ("title", "THÔNG BÁO"),
    ("centre", "Lịch tiếp công dân tháng 10 năm 2003"),
    ("body", "Chủ tịch Ủy ban nhân dân huyện tiếp công dân vào các ngày thứ năm tuần thứ hai và "
             "tuần thứ tư của tháng, tại trụ sở tiếp dân số 4 đường Quảng Tân."),
    ("body", "Công dân đến phải mang theo giấy tờ tùy thân, đơn thư và các tài liệu có liên quan; "
             "không tiếp trường hợp đã được giải quyết đúng pháp luật."),
    ("body", "Đề nghị các xã, thị trấn niêm yết thông báo này tại nhà văn hóa thôn, khu phố."),
    ("right", "CHÁNH VĂN PHÒNG"),
    ("right", "Lục Văn Quyết"),
]

UPSIDE_REQUEST: Doc = HEADER + [
    ("title", "ĐƠN ĐỀ NGHỊ TRÍCH LỤC BẢN ĐỒ ĐỊA CHÍNH"),
    ("body", "Kính gửi: Văn phòng Đăng ký đất đai chi nhánh huyện Châu Thành."),
    ("body", "Tôi tên là Thạch Thị Sa Rươne, sinh năm 1972, số căn cước 084172009361, thường trú "
             "tại ấp Đa Lộc, xã Đa Lộc, huyện Châu Thành, tỉnh Trà Vinh."),
    ("body", "Đề nghị cơ quan cấp cho tôi một bản trích lục thửa đất số 812, tờ bản đồ số 5, diện "
             "tích 1.035 mét vuông, để làm thủ tục tặng cho quyền sử dụng đất cho con gái."),
    ("body", "Tôi xin cam đoan những thông tin nêu trên là đúng sự thật và chịu trách nhiệm trước "
             "pháp luật."),
    ("right", "Người làm đơn"),
    ("right", "Thạch Thị Sa Rươne"),
]

BLEED_MINUTES: Doc = HEADER + [
    ("title", "BIÊN BẢN HỌP TỔ HÒA GIẢI"),
    ("body", "Vào lúc 14 giờ ngày 06 tháng 7 năm 2017, tại nhà văn hóa thôn Phú Mỹ, xã Hòa Tiến, "
             "huyện Hòa Vang, thành phố Đà Nẵng, tổ hòa giải thôn họp để giải quyết việc tranh "
             "chấp lối đi chung giữa hộ ông Võ Đình Khiêm và hộ bà Ngô Thị Lài."),
    ("body", "Sau khi nghe hai bên trình bày, tổ hòa giải đã phân tích quy định về quyền về lối đi "
             "qua và đề nghị hai bên cùng chừa lối đi rộng 1,5 mét dọc ranh giới phía tây."),
    ("body", "Hai bên đồng ý với phương án trên, cam kết không xây tường rào lấn ra lối đi và "
             "cùng chịu chi phí đổ bê tông."),
    ("body", "Cuộc họp kết thúc lúc 16 giờ 20 phút cùng ngày."),
    ("right", "TỔ TRƯỞNG TỔ HÒA GIẢI"),
    ("right", "Trần Công Nghĩa"),
]

BLEED_BACK: Doc = [
    ("title", "DANH SÁCH THÀNH VIÊN THAM DỰ"),
    ("body", "Ông Lê Văn Thừa, trưởng thôn; bà Phan Thị Mận, chi hội trưởng phụ nữ; ông Đoàn "
             "Ngọc Bích, công an viên; ông Hà Quang Vinh, bí thư chi đoàn; bà Mai Thị Xuân, "
             "người có uy tín trong cộng đồng dân cư; ông Nguyễn Văn Lực, đại diện mặt trận "
             "thôn; hai hộ có tranh chấp và ba hộ liền kề cùng dự họp, đủ thành phần theo luật."),
    ("body", "Thư ký cuộc họp ghi biên bản thành ba bản có giá trị như nhau, mỗi bên giữ một bản "
             "và một bản lưu tại tổ hòa giải để theo dõi việc thực hiện."),
]

SEAL_CERTIFICATE: Doc = HEADER + [
    ("right", "Lạc Dương, ngày 19 tháng 8 năm 2022"),
    ("title", "GIẤY CHỨNG NHẬN ĐĂNG KÝ HỘ KINH DOANH"),
    ("body", "Tên hộ kinh doanh: Homestay Đồi Thông K'Long. Mã số hộ: 42A8003157."),
    ("body", "Địa điểm kinh doanh: thôn Đăng Gia Rít, xã Đạ Sar, huyện Lạc Dương, tỉnh Lâm Đồng."),
    ("body", "Ngành, nghề kinh doanh: dịch vụ lưu trú ngắn ngày; dịch vụ ăn uống phục vụ khách "
             "du lịch; cho thuê xe đạp."),
    ("body", "Vốn kinh doanh: 850.000.000 đồng (tám trăm năm mươi triệu đồng)."),
    ("body", "Chủ hộ kinh doanh: ông Cil Ha Quang, sinh ngày 30/01/1988, dân tộc Cơ Ho, số định "
             "danh cá nhân 068088001274, nơi cư trú tại thôn Đăng Gia Rít, xã Đạ Sar."),
    ("body", "Hộ kinh doanh phải treo giấy này tại địa điểm kinh doanh và báo cáo khi thay đổi "
             "nội dung đăng ký."),
    ("right", "TRƯỞNG PHÒNG TÀI CHÍNH - KẾ HOẠCH"),
    ("right", "Bùi Thế Vinh"),
]

TABLE_INTRO: Doc = HEADER + [
    ("title", "BẢNG KÊ HỒ SƠ ĐỀ NGHỊ HỖ TRỢ NHÀ Ở"),
    ("body", "Kèm theo Tờ trình số 46/TTr-UBND ngày 02 tháng 4 năm 2018 của Ủy ban nhân dân xã "
             "Hương Phong, huyện A Lưới."),
    ("row", "STT | Họ và tên | Năm sinh | Thôn | Mức hỗ trợ"),
    ("row", "1 | Hồ Văn Chắt | 1966 | A Ka | 40 triệu"),
    ("row", "2 | Kăn Thị Mươn | 1959 | Hương Phú | 40 triệu"),
    ("row", "3 | Quỳnh Văn Pao | 1972 | Ba Lạch | 25 triệu"),
    ("row", "4 | Lê Thị Ngà | 1980 | A Ka | 25 triệu"),
    ("row", "5 | Nguyễn Văn Lành | 1955 | Hương Phú | 40 triệu"),
    ("body", "Tổng cộng năm hộ, tổng kinh phí đề nghị hỗ trợ là 170 triệu đồng."),
    ("right", "NGƯỜI LẬP BẢNG"),
    ("right", "Hồ Thị Xuyến"),
]

LANDSCAPE_REGISTER: Doc = [
    ("title", "SỔ THEO DÕI TIẾP NHẬN VÀ TRẢ KẾT QUẢ HỒ SƠ - QUÝ II NĂM 2023"),
    ("row", "Số hồ sơ | Ngày nhận | Người nộp | Thủ tục | Hẹn trả | Đã trả"),
    ("row", "0412 | 03/04 | Đinh Thị Mai | Chứng thực bản sao | 03/04 | 03/04"),
    ("row", "0413 | 03/04 | Lò Văn Hặc | Đăng ký khai sinh | 04/04 | 04/04"),
    ("row", "0414 | 05/04 | Vàng A Sùng | Đăng ký kết hôn | 10/04 | 07/04"),
    ("row", "0415 | 06/04 | Phùng Thị Yến | Xác nhận cư trú | 08/04 | 08/04"),
    ("row", "0416 | 10/04 | Hà Văn Thuận | Cấp bản sao trích lục | 11/04 | 11/04"),
    ("row", "0417 | 12/04 | Mùa Thị Dính | Đăng ký khai tử | 12/04 | 12/04"),
    ("row", "0418 | 17/04 | Sầm Văn Định | Chuyển mục đích đất | 15/05 | 12/05"),
    ("row", "0419 | 19/04 | Tòng Thị Ơn | Đăng ký hộ kinh doanh | 24/04 | 21/04"),
]

SPREAD_LEFT: Doc = [
    ("title", "SỔ ĐĂNG KÝ KHAI SINH 1987"),
    ("body", "Số 41. Họ tên: Trịnh Văn Bảo. Sinh ngày 03 tháng 5 năm 1987 tại trạm xá xã Quảng "
             "Hợp. Cha: Trịnh Văn Mão, nông dân. Mẹ: Lê Thị Gái, nông dân. Người đi khai: cha."),
    ("body", "Số 42. Họ tên: Cao Thị Liên. Sinh ngày 11 tháng 5 năm 1987 tại nhà. Cha: Cao Xuân "
             "Đức, thợ mộc. Mẹ: Nguyễn Thị Bưởi, nông dân. Người đi khai: bà nội."),
    ("body", "Số 43. Họ tên: Mai Đình Tùng. Sinh ngày 20 tháng 5 năm 1987 tại trạm xá xã. Cha: "
             "Mai Đình Kha, giáo viên. Mẹ: Đỗ Thị Hạnh, y tá."),
    ("centre", "- 17 -"),
]

SPREAD_RIGHT: Doc = [
    ("body", "Số 44. Họ tên: Lưu Thị Thắm. Sinh ngày 02 tháng 6 năm 1987 tại nhà hộ sinh huyện. "
             "Cha: Lưu Văn Khải, bộ đội. Mẹ: Phạm Thị Nụ, nông dân. Người đi khai: mẹ."),
    ("body", "Số 45. Họ tên: Vũ Văn Khánh. Sinh ngày 09 tháng 6 năm 1987 tại nhà. Cha: Vũ Văn "
             "Nghiêm, nông dân. Mẹ: Hoàng Thị Lụa, nông dân. Người đi khai: cha."),
    ("body", "Số 46. Họ tên: Đặng Thị Quế. Sinh ngày 15 tháng 6 năm 1987 tại trạm xá xã. Cha: "
             "Đặng Văn Sửu, xã viên hợp tác xã. Mẹ: Trương Thị Hoa, xã viên."),
    ("centre", "- 18 -"),
]

JBIG2_RECEIPT: Doc = [
    ("centre", "TRUNG TÂM PHỤC VỤ HÀNH CHÍNH CÔNG TỈNH KON TUM"),
    ("title", "PHIẾU HẸN TRẢ KẾT QUẢ"),
    ("body", "Mã hồ sơ: 000.00.20.H34-230918-0112. Người nộp: bà Y Blông, làng Kon Klor, phường "
             "Thắng Lợi, thành phố Kon Tum."),
    ("body", "Thủ tục: cấp đổi giấy chứng nhận quyền sử dụng đất do bị rách, hư hỏng."),
    ("body", "Thành phần hồ sơ: đơn đề nghị cấp đổi; bản gốc giấy chứng nhận đã cấp; bản sao "
             "căn cước công dân. Số lượng: một bộ."),
    ("body", "Ngày hẹn trả kết quả: 02 tháng 10 năm 2023, tại quầy số 7."),
    ("right", "NGƯỜI TIẾP NHẬN"),
    ("right", "A Thuận"),
]

PHOTO_RECEIPT: Doc = HEADER + [
    ("title", "GIẤY BIÊN NHẬN HỒ SƠ"),
    ("body", "Bộ phận tiếp nhận và trả kết quả huyện Mường Tè đã nhận của ông Pờ Xé Lù, bản Nậm "
             "Củm, xã Pa Ủ, hồ sơ đề nghị đăng ký lại khai sinh."),
    ("body", "Giấy tờ kèm theo: tờ khai; bản sao sổ hộ khẩu; giấy xác nhận của trưởng bản về việc "
             "sinh ra và lớn lên tại địa phương."),
    ("body", "Hẹn ngày trả kết quả: 25 tháng 9 năm 2024. Khi đến nhận, ông mang theo giấy biên "
             "nhận này và giấy tờ tùy thân."),
    ("right", "CÁN BỘ TIẾP NHẬN"),
    ("right", "Chang Thị Duyên"),
]
