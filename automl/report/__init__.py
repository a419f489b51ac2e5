"""The run report: one self-contained HTML page per run folder (`automl report RUN_DIR`)."""

from automl.report.page import write_report

__all__ = ["write_report"]
