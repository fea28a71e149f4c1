"""Figures and reports: a run's PNGs (`cnnlab plot`), and one self-contained document for a run or
a comparison of several runs, studies and searches (`cnnlab report`).

    rep = report(["runs/lenet5"])                       # runs/lenet5/report.html
    rep = report(["runs/a", "runs/b", "runs/study-x"])  # ./comparison.html: a sortable table, curves
    rep = report(["runs/lenet5"], fmt="md")             # runs/lenet5/report.md, PNGs in runs/lenet5/plots/
    result = plot_run("runs/lenet5")                    # figures in runs/lenet5/plots/; result.figures, .notes

Inside, each module imports only those above it in this list:

    document.py   Document, Section, Table, Cell, pct ...   what a report contains, whatever its format
    figures.py    loss_figure ... compare_figures, save_png  matplotlib Figures; same figure, same PNG bytes
    html.py       render_html, html_block       a Document as one HTML page, assets/report.css and .js inlined
    markdown.py   render_markdown               a Document as Markdown, its PNGs beside it
    snapshot.py   read_run, RunFiles            what a run directory holds, read once; status from RunDir.status
    plot.py       plot_run, run_figures         a run's figures (the test split's evaluation:
                                                cnnlab.workflows.measure.mistakes)
    run.py        run_document                  the document of one run, section by section
    compare.py    comparison_document, compare_row, search_section   the document of several runs
    write.py      report, Report, expand_paths  which document, which format, written where

The HTML needs nothing else to be read: images are inline `data:` PNGs, the style and the small
table-sorting script are written into it, and it asks for nothing over a network. Whatever a run
directory lacks (no metrics yet, a crashed run, no convolution layer, no test data at hand)
becomes a note in the place where it would have been, and the rest of the report is written.
"""

from cnnlab.workflows.report.compare import COMPARE_COLUMNS, compare_row, comparison_document, search_section
from cnnlab.workflows.report.document import Cell, Document, Image, KeyValues, Note, Pre, Section, Table
from cnnlab.workflows.report.figures import (CURVE_SIZE, DPI, FILTER_BACKGROUND, accuracy_figure, compare_figures,
                                             confusion_figure, filters_figure, loss_figure, lr_figure,
                                             mistakes_figure, moving_mean, new_figure, png_bytes, profile_figure,
                                             save_png)
from cnnlab.workflows.report.html import html_block, render_html
from cnnlab.workflows.report.markdown import render_markdown
from cnnlab.workflows.report.plot import RunPlots, evaluate_test, plot_run, run_figures
from cnnlab.workflows.report.run import BENCH_COLUMNS, cost_of, run_document
from cnnlab.workflows.report.snapshot import RunFiles, read_run
from cnnlab.workflows.report.write import COMPARISON_STEM, FORMATS, Report, default_output, expand_paths, report

__all__ = ["BENCH_COLUMNS", "COMPARE_COLUMNS", "COMPARISON_STEM", "CURVE_SIZE", "Cell", "DPI", "Document",
           "FILTER_BACKGROUND", "FORMATS", "Image", "KeyValues", "Note", "Pre", "Report", "RunFiles", "RunPlots",
           "Section", "Table", "accuracy_figure", "compare_figures", "compare_row", "comparison_document",
           "confusion_figure", "cost_of", "default_output", "evaluate_test", "expand_paths", "filters_figure",
           "html_block", "loss_figure", "lr_figure", "mistakes_figure", "moving_mean", "new_figure", "plot_run",
           "png_bytes", "profile_figure", "read_run", "render_html", "render_markdown", "report", "run_document",
           "run_figures", "save_png", "search_section"]
