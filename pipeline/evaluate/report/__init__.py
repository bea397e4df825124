"""The review page of a finished run: `report/index.html`, static, with thumbnails and sortable pages."""

from pipeline.evaluate.report.build import ReportResult, write_report

__all__ = ["ReportResult", "write_report"]
