"""
microgpt_lab: the lab around the two models (microgpt.py, tensorgpt.py), which cli.py drives.

- settings: every setting of a run, once: its type, default, allowed values, modes
- models: the two models behind one interface: built, restored, trained, sampled
- training: one run, start to finish, and its record; re-running and resuming it
- sampling, attention_maps: what a checkpoint's model writes, and where it looks
- ablation: a grid's runs over seeds, run in parallel and resumed (cluster: on Dask); grid:
  its axes, cells and their one name, and its plan; summary: the table and its pictures;
  stats: paired confidence intervals
- bench, scale, efficiency: the speed of each mode (and PyTorch), side by side; as a size or
  the threads grow; the FLOPs and the share of the matmul peak
- checkpoint, records, provenance, plots: the files a command writes and reads back, where
  they came from, and pictures (overlay: the plot command)
- stopping: signals, and the flags that stop the runs of an ablation
- output: what a command prints, kept alive whatever its reader does; errors in one line
"""


class UserError(Exception):
    """Anything a user can get wrong, told in one line (`error: ...`, see output.tell)."""
