"""The recipes' runs re-made by issue 34 (each recipe with its authors' optimizer) against the
runs they replaced (the ablation as committed at c3709b9, nanoGPT's AdamW settings for all),
paired by seed: the new val loss minus the old, its mean and 95% interval.
Run from the repository root: python results/issue34-recipes-paired.py"""
import json
import subprocess

from microgpt_lab import stats

RUNS = 'results/ablation-recipes-as-named/runs/recipe={}-seed{}/metrics.json'


def val_loss(path, commit=None):
    text = subprocess.run(['git', 'show', f'{commit}:{path}'], capture_output=True, text=True,
                          check=True).stdout if commit else open(path).read()
    return json.loads(text)['val_loss']


for recipe in ('microgpt', 'gpt2', 'nanochat'):
    diffs = [val_loss(RUNS.format(recipe, s)) - val_loss(RUNS.format(recipe, s), 'c3709b9')
             for s in range(42, 47)]
    d = stats.paired_interval(diffs)
    print(f"{recipe:9} new - old: {d['mean']:+.4f} [{d['low']:+.4f}, {d['high']:+.4f}] (n={d['n']})")
