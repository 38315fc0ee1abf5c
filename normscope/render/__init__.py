"""Renderers: reports in, text out (JSON, CSV, Markdown, JUnit, GitHub) or rich renderables.

One module per report (`scan`, `diff`, `series`, `check`), what they share in `common`, the
series texts in `series_text`, the series figures in `plot`. Pure: `cli.py` decides where the
output goes. Nothing outside the CLI imports this package.
"""
