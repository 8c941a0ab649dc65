"""Analysis of stored results: summaries, the regression gate (``compare``, ``ab``), change
points over nightly history, the fronts of swept settings (``pareto``) and projections
(``estimate``). Reads the store, never measures."""
