"""Typed records passed between stages and written to the JSON report."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

from .text import recorded_values
from .wire import carried


@dataclass(frozen=True)
class Word:
    """One recognised word in page pixel coordinates (top-left origin) of the upright image."""

    text: str
    left: int
    top: int
    right: int
    bottom: int
    confidence: float  # 0..100
    baseline: float | None = None  # y of the baseline in pixels, when known


@carried  # a page worker hands it back to the process converting the file
@dataclass
class PageReport:
    number: int  # 1-based, in output order
    width_px: int
    height_px: int
    dpi: float
    dpi_source: str  # "file", "paper-size", "default"
    colour_mode: str  # "colour", "grey", "bilevel"
    orientation: int  # degrees clockwise the page was turned to be upright: 0/90/180/270
    skew_angle: float  # degrees the scan's lines rose counter-clockwise (+ = rising to the right); undone
    text_source: str  # "ocr", "pdf-text" (born-digital text kept), "none"
    ocr_confidence: float  # mean word confidence 0..100 (100 for born-digital text)
    word_count: int
    image_encoding: str  # "jpeg-passthrough", "jpeg", "ccitt-g4", "flate"
    image_bytes: int
    text: str = ""
    warnings: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    # the paper found on a dark background and cut out (pagedetect.py): {"action": "crop" or
    # "perspective", "box": [x0, y0, x1, y1] in the scan, "edge_angle": degrees levelled, "size": [w, h]}
    paper: dict[str, Any] = field(default_factory=dict)
    # "" standard, else comma-separated: "colour-marks-removed", "rulings-removed" (before OCR),
    # "faint-ink-dropped" (re-read without show-through, more confident)
    ocr_preparation: str = ""
    # page 1's top band as grey, one cell per pt (signmark.top_band_grey): where the signature mark
    # can go, handed from the page worker to the signer; never written to a report
    top_band: Any = field(default=None, repr=False, compare=False)


@dataclass
class DocumentReport:
    input_path: str
    input_sha256: str
    input_type: str  # "pdf", "tiff", "jpeg", "png", ...
    output_path: str = ""
    output_sha256: str = ""
    output_bytes: int = 0
    language: str = "vie+eng"
    pages: list[PageReport] = field(default_factory=list)
    pdfa: dict[str, Any] = field(default_factory=dict)  # {"flavour": "2b", "validator": "veraPDF 1.28.2", "compliant": true}
    timings: dict[str, float] = field(default_factory=dict)
    tools: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    created: str = ""
    signature: dict[str, Any] = field(default_factory=dict)  # signing.SignatureRecord.as_dict(); {} = unsigned

    @property
    def page_count(self) -> int:
        return len(self.pages)

    @property
    def mean_confidence(self) -> float:
        scored = [p.ocr_confidence for p in self.pages if p.word_count]
        return sum(scored) / len(scored) if scored else 0.0

    @property
    def text(self) -> str:
        """All pages' text, separated by form feeds (the sidecar format)."""
        return "\f".join(p.text for p in self.pages)

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(dataclasses.replace(
            self, pages=[dataclasses.replace(p, top_band=None) for p in self.pages]))
        for page in data["pages"]:
            del page["top_band"]
        data["page_count"] = self.page_count
        data["mean_confidence"] = round(self.mean_confidence, 2)
        return recorded_values(data)  # file names, and errors naming them, may not be UTF-8

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False, indent=2)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "DocumentReport":
        known = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in known}
        kwargs["pages"] = [PageReport(**p) for p in data.get("pages", [])]
        return cls(**kwargs)
