"""Renderers: reports in, text out (JSON, CSV, Markdown, HTML, JUnit, GitHub) or rich renderables.

One module per report (`scan`, `diff`, `series`, `check`, `fold`) with every format of that
report and its view (`ScanView`, ...: one method per format, `common.View`); what they share in
`common`, what the HTML pages share in `html`, the texts of a scan and a series in `scan_text`
and `series_text`, the stability trinity in `trinity`, the series figures in `plot`. Pure:
`cli/output.py` decides where the output goes. Nothing outside the CLI imports this package.
"""
