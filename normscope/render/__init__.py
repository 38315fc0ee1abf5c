"""Renderers: reports in, text out (JSON, CSV, Markdown, JUnit, GitHub) or rich renderables.

One module per report (`scan`, `diff`, `series`, `check`, `fold`), what they share in `common`,
the series texts in `series_text`, the series figures in `plot`, the pages in `html`. Pure:
`cli/output.py` decides where the output goes. Nothing outside the CLI imports this package.
"""
