"""
sampling.py: samples from a checkpoint: documents in either mode, passages of a text.

A checkpoint (see checkpoint.py) holds the weights and the generator's state, so with no
--seed, `sample` continues the training run's random draws and prints the samples that
`train` printed; the same checkpoint gives the same documents in scalar and tensor mode.
A passage continues past the model's context by keeping its last block_size characters.
"""
import random

import numpy as np

import data
from microgpt_lab import checkpoint, records, training
from microgpt_lab.records import UserError


def sample_command(cfg):
    """`cli.py sample`: print cfg['num'] samples from cfg['checkpoint'], each the prompt
    and its continuation: documents, or passages of cfg['length'] characters of a text."""
    ckpt = checkpoint.load(cfg['checkpoint'], need_rng=cfg['seed'] is None)
    config, text = ckpt['config'], ckpt['data_format'] == 'text'
    mode = cfg['mode'] or ('tensor' if text else 'scalar')
    if text and (mode == 'scalar' or cfg['batched']):  # before a model is built for nothing
        raise UserError("a text's passages are drawn in tensor mode, one at a time: "
                        "--mode scalar and --batched do not apply")
    model, tok = training.from_checkpoint(ckpt, mode)
    try:
        prompt = tok.encode(cfg['prompt'])
    except data.DataError as e:
        raise UserError(f"--prompt: {e} of this checkpoint") from None
    if not text and len(prompt) >= config['block_size']:
        raise UserError(f"--prompt is {len(prompt)} characters; the model's context holds "
                        f"{config['block_size']} tokens, so at most {config['block_size'] - 1}")
    if text and not prompt and '\n' not in tok.ids:
        raise UserError("this text has no newline to begin a passage at: give a --prompt")
    rng = ckpt['rng'] if cfg['seed'] is None else random.Random(cfg['seed'])
    num = cfg['num'] if cfg['num'] is not None else 1 if text else 20
    temperature, top_k = cfg['temperature'], cfg['top_k']
    try:
        with np.errstate(all='ignore'):
            if text:
                start = prompt or [tok.ids['\n']]
                for i in range(num):  # each passage shown as it grows
                    print(f"--- passage {i + 1} ---\n{tok.decode(start)}", end='', flush=True)
                    for chunk in training.passage(model, rng, start, cfg['length'], temperature,
                                                  top_k):
                        print(tok.decode(chunk), end='', flush=True)
                        if records.output_lost():
                            return
                    print(flush=True)
                return
            samples = model.sample_batch(rng, tok.bos, num, temperature, prompt, top_k) \
                if cfg['batched'] else (model.sample(rng, tok.bos, temperature, prompt, top_k)
                                        for _ in range(num))
            for i, ids in enumerate(samples):
                print(f"sample {i + 1:2d}: {cfg['prompt']}{tok.decode(ids)}", flush=True)
                if records.output_lost():  # the reader has gone (`| head`): stop drawing
                    return
    except ValueError:  # random.choices: the probabilities are not finite
        raise UserError(f"the model in {cfg['checkpoint']} gives NaN probabilities: its "
                        "training diverged") from None
