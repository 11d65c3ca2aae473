"""
sampling.py: what a model writes: documents in either mode, passages of a text.

At the end of a training run: its samples, and how many of them it learnt by heart
(training documents), found (held-out ones) or made up. From a checkpoint (see
checkpoint.py), which holds the weights and the generator's state: with no --seed,
`sample` continues the training run's random draws and prints the samples that `train`
printed; the same checkpoint gives the same documents in scalar and tensor mode. A passage
continues past the model's context by keeping its last block_size tokens.
"""
import random

import numpy as np

import data
from microgpt_lab import UserError, checkpoint, models, output, stopping


# ---------------------------------------------------------------------------
# A training run's samples
def draw_samples(cfg, model, d, rng, should_stop):
    """What a finished run writes: --samples documents, or for a text one passage of
    --length characters, begun at a newline (or at the text's first character). Raises
    Stopped when should_stop() becomes true meanwhile, or the model's probabilities are
    not numbers (it diverged on its last update)."""
    temperature, top_k, tok = cfg['temperature'], cfg['top_k'], d.tok
    samples = []
    try:
        if cfg['data_format'] == 'text' and cfg['length']:
            start = newline(tok) or [int(d.train[0])]
            ids = list(start)
            for chunk in passage(model, rng, start, cfg['length'], temperature, top_k):
                ids += chunk
                if should_stop():
                    raise stopping.Stopped('interrupted')
            samples.append(tok.decode(ids))
        for _ in range(cfg['samples'] if cfg['data_format'] == 'lines' else 0):
            samples.append(document(tok, models.sample(model, rng, tok.bos, temperature, top_k=top_k)))
            if should_stop():
                break
    except ValueError:  # random.choices: the probabilities are not finite
        print("the model gives NaN probabilities: it diverged on its last update")
        raise stopping.Stopped('diverged') from None
    if should_stop():
        raise stopping.Stopped('interrupted')
    return samples


def document(tok, ids):
    """A sampled document's text. A byte-level model can draw a line break, which no
    document (a line) holds: it shows as U+FFFD, and samples.txt keeps one a line."""
    return tok.decode(ids).translate({10: 0xFFFD, 13: 0xFFFD})


def newline(tok):
    """The ids of a newline, where a passage begins; None if the vocabulary has none."""
    try:
        return tok.encode('\n')
    except data.DataError:
        return None


def passage(model, rng, start, length, temperature, top_k, chunk=100):
    """A text's passage of `length` ids after the ids `start`, drawn `chunk` ids at a time
    (the same draws as one call: the model sees the last block_size ids either way), so
    that a long one can be stopped, or shown as it grows."""
    ids = list(start)
    for i in range(0, length, chunk):
        new = models.lib('tensor').generate(model, rng, ids[-model.config.block_size:],
                                            min(chunk, length - i), temperature, top_k)
        ids += new
        yield new


def show_samples(cfg, d, samples, metrics):
    """Print the samples, and for documents the shares of them that are training documents,
    held-out ones, or new (added to the metrics)."""
    temperature = cfg['temperature']
    if cfg['data_format'] == 'text':
        for text in samples:
            print(f"--- passage (temperature {temperature}, {cfg['length']} "
                  f"{'characters' if cfg['tokenizer'] == 'char' else 'tokens'}) ---")
            print(text, flush=True)
    elif samples:
        print(f"--- samples (temperature {temperature}) ---")
        for i, sample in enumerate(samples):
            print(f"sample {i + 1:2d}: {sample}")
        metrics['samples'] = sample_shares(samples, *d.docs)
        print("samples: {train:.0%} training documents, {val:.0%} held-out validation "
              "documents, {new:.0%} new".format(**metrics['samples']))
    if metrics['status'] == 'interrupted':
        print(f"interrupted after step {metrics['steps']}: the record keeps every finished step")


def sample_shares(samples, train_docs, val_docs):
    """How many samples are training documents, held-out validation documents, or new."""
    train, val = set(train_docs), set(val_docs)
    n = len(samples) or 1
    return dict(train=sum(s in train for s in samples) / n,
                val=sum(s in val and s not in train for s in samples) / n,
                new=sum(s not in train and s not in val for s in samples) / n)


# ---------------------------------------------------------------------------
# A checkpoint's samples
def sample_command(cfg):
    """`cli.py sample`: print cfg['num'] samples from cfg['checkpoint'], each the prompt
    and its continuation: documents, or passages of cfg['length'] characters of a text."""
    if cfg['batched'] and cfg['mode'] != 'tensor':
        raise UserError("--batched needs --mode tensor")
    ckpt = checkpoint.load(cfg['checkpoint'], need_rng=cfg['seed'] is None)
    config, text = ckpt['config'], ckpt['data_format'] == 'text'
    mode = cfg['mode'] or ('tensor' if text else 'scalar')
    if text and (mode == 'scalar' or cfg['batched']):  # before a model is built for nothing
        raise UserError("a text's passages are drawn in tensor mode, one at a time: "
                        "--mode scalar and --batched do not apply")
    model, tok = models.from_checkpoint(ckpt, mode)
    try:
        prompt = tok.encode(cfg['prompt'])
    except data.DataError as e:
        raise UserError(f"--prompt: {e} of this checkpoint") from None
    if not text and ('\n' in cfg['prompt'] or '\r' in cfg['prompt']):
        raise UserError("--prompt: a document is one line, with no line break")
    if not text and len(prompt) >= config['block_size']:
        raise UserError(f"--prompt is {len(prompt)} tokens; the model's context holds "
                        f"{config['block_size']} tokens, so at most {config['block_size'] - 1}")
    if text and not prompt and not newline(tok):
        raise UserError("this text has no newline to begin a passage at: give a --prompt")
    rng = ckpt['rng'] if cfg['seed'] is None else random.Random(cfg['seed'])
    num = cfg['num'] if cfg['num'] is not None else 1 if text else 20
    temperature, top_k = cfg['temperature'], cfg['top_k']
    try:
        with np.errstate(all='ignore'):
            if text:
                start = prompt or newline(tok)
                for i in range(num):  # each passage shown as it grows, a character once whole
                    decode = tok.decoder()
                    print(f"--- passage {i + 1} ---\n{decode(start)}", end='', flush=True)
                    for chunk in passage(model, rng, start, cfg['length'], temperature, top_k):
                        print(decode(chunk), end='', flush=True)
                        if output.output_lost():
                            return
                    print(flush=True)
                return
            samples = models.lib('tensor').sample_batch(model, rng, tok.bos, num, temperature,
                                                        prompt, top_k) \
                if cfg['batched'] else (models.sample(model, rng, tok.bos, temperature, prompt, top_k)
                                        for _ in range(num))
            for i, ids in enumerate(samples):
                print(f"sample {i + 1:2d}: {cfg['prompt']}{document(tok, ids)}", flush=True)
                if output.output_lost():  # the reader has gone (`| head`): stop drawing
                    return
    except ValueError:  # random.choices: the probabilities are not finite
        raise UserError(f"the model in {cfg['checkpoint']} gives NaN probabilities: its "
                        "training diverged") from None
