"""Studies: several checkpoints evaluated on shifted tasks, one cached cell at a time, into one report
(studies/study.py is the seam; studies/registry.py names them)."""
