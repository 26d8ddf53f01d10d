"""Reports: self-contained HTML pages of a run's figures and tables."""
