"""Execution: the supervisor and its worker processes, the in-process case runner, workloads
(a case's step function) and distributed ranks. Writes through ``carbonbench.results``."""
