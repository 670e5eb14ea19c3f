"""Render pdf_sources/*.txt as PDFs into documents/ (fpdf2: a real text layer, one font).

Lines starting with `# ` become headings (the first one the title); blank lines separate
paragraphs. Run `python bench/retrieval_corpus/make_pdfs.py` after editing a source: the PDFs
are committed, so the benchmark needs no generator.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from fpdf import FPDF

HERE = Path(__file__).parent


def render(source: Path, target: Path) -> None:
    """Write `source` (headings and paragraphs) as a PDF at `target`."""
    blocks = source.read_text(encoding="utf-8").split("\n\n")
    title = blocks[0].removeprefix("# ").strip()
    pdf = FPDF(format=(148, 210))  # A5
    pdf.set_title(title)
    pdf.set_author("Switchboard retrieval benchmark")
    pdf.set_creation_date(datetime(2026, 1, 1, tzinfo=UTC))  # the same bytes on every run
    pdf.set_auto_page_break(auto=True, margin=15)
    pdf.add_page()
    for block in blocks:
        text = " ".join(block.split())
        if block.startswith("# "):
            pdf.set_font("Helvetica", style="B", size=13)
            pdf.multi_cell(0, 7, text.removeprefix("# "), new_x="LMARGIN", new_y="NEXT")
        else:
            pdf.set_font("Helvetica", size=10)
            pdf.multi_cell(0, 5, text, new_x="LMARGIN", new_y="NEXT")
        pdf.ln(2)
    pdf.output(str(target))


def main() -> None:
    """Render every source."""
    for source in sorted((HERE / "pdf_sources").glob("*.txt")):
        target = HERE / "documents" / (source.stem + ".pdf")
        render(source, target)
        print(f"{source.name} -> {target.relative_to(HERE)}")


if __name__ == "__main__":
    main()
