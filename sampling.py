"""
sampling.py: samples from a checkpoint, in either mode.

A checkpoint (see checkpoint.py) holds the weights and the generator's state, so with no
--seed, `sample` continues the training run's random draws and prints the samples that
`train` printed; the same checkpoint gives the same samples in scalar and tensor mode.
"""
import random

import numpy as np

import checkpoint
import data
import training
from records import UserError


def sample_command(cfg):
    """`cli.py sample`: print cfg['num'] samples from cfg['checkpoint'], each the prompt
    and its continuation."""
    ckpt = checkpoint.load(cfg['checkpoint'], need_rng=cfg['seed'] is None)
    config, tok = ckpt['config'], data.Tokenizer(ckpt['vocab'])
    try:
        prompt = tok.encode(cfg['prompt'])
    except data.DataError as e:
        raise UserError(f"--prompt: {e} of this checkpoint") from None
    if len(prompt) >= config['block_size']:
        raise UserError(f"--prompt is {len(prompt)} characters; the model's context holds "
                        f"{config['block_size']} tokens, so at most {config['block_size'] - 1}")
    rng = ckpt['rng'] if cfg['seed'] is None else random.Random(cfg['seed'])
    model = training.build_model(dict(config, mode=cfg['mode'], dtype='float64'),
                                 config['vocab_size'], random.Random(0))
    model.load_weights(ckpt['weights'])
    if cfg['batched']:
        samples = lambda: model.sample_batch(rng, tok.bos, cfg['num'], cfg['temperature'], prompt)
    else:
        samples = lambda: (model.sample(rng, tok.bos, cfg['temperature'], prompt)
                           for _ in range(cfg['num']))
    try:
        with np.errstate(all='ignore'):
            for i, ids in enumerate(samples()):
                print(f"sample {i + 1:2d}: {cfg['prompt']}{tok.decode(ids)}", flush=True)
    except ValueError:  # random.choices: the probabilities are not finite
        raise UserError(f"the model in {cfg['checkpoint']} gives NaN probabilities: its "
                        "training diverged") from None
