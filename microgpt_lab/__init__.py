"""
microgpt_lab: the lab around the two models (microgpt.py, tensorgpt.py), which cli.py drives.

- settings: every setting of a run, once: its type, default, allowed values, modes
- training: one run, start to finish, and its record; re-running and resuming it
- sampling, attention_maps: what a checkpoint's model writes, and where it looks
- ablation: a grid of runs over seeds, and paired confidence intervals
- bench: the speed of each mode (and PyTorch), side by side
- checkpoint, records, plots: the files a command writes and reads back, and pictures
"""
