"""The only bridge from a run file to the report view model (filled in by the reports work)."""
