"""
microgpt_lab: the lab around the two models (microgpt.py, tensorgpt.py), which cli.py drives.

- settings: every setting of a run, once: its type, default, allowed values, modes
- models: the two models behind one interface: built, restored, trained, sampled
- training: one run, start to finish, and its record; re-running and resuming it
- sampling, attention_maps: what a checkpoint's model writes, and where it looks
- ablation: a grid of runs over seeds, and paired confidence intervals (cluster: on Dask)
- bench, efficiency: the speed of each mode (and PyTorch), side by side; the FLOPs
- checkpoint, records, provenance, plots: the files a command writes and reads back, where
  they came from, and pictures
- stopping: signals, and the flags that stop the runs of an ablation
- output: what a command prints, kept alive whatever its reader does; errors in one line
"""


class UserError(Exception):
    """Anything a user can get wrong, told in one line (`error: ...`, see output.tell)."""
