"""What happens to an input column before the model, in one place.

``kinds``: which columns are categorical, and clear errors for columns no model can read.
``levels``: categorical levels, counted and coded. ``summary``: :class:`ColumnSummary`,
mergeable statistics of blocks of rows. ``mapper``: :class:`ColumnMapper`, what a fit
learned -- the host rows, the device's standardisation and the encoding spec. ``gates``: the
gated copies of numeric columns a fit's target asks for (an interaction test, its sums
mergeable too).

A plain fit is the summary of one block, finalized; a Dask fit merges the summaries of
its partitions. Numpy only: a fitted mapper pickles with the estimator.
"""

from .kinds import ColumnKinds, column_kinds, is_dataframe
from .levels import CategoryCodes, level_counts
from .mapper import ColumnMapper, ColumnOptions, coded_rows, split_columns
from .summary import BIN_SUBSAMPLE, ColumnSummary, merge_all, subsample_rows

__all__ = ["BIN_SUBSAMPLE", "CategoryCodes", "ColumnKinds", "ColumnMapper", "ColumnOptions", "ColumnSummary",
           "coded_rows", "column_kinds", "is_dataframe", "level_counts", "merge_all", "split_columns",
           "subsample_rows"]
