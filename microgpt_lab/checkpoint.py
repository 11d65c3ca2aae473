"""
checkpoint.py: the checkpoint format, written and read by both modes.

A checkpoint is JSON: the model's config, its tokenizer (a character vocabulary; or a BPE
tokenizer's merges, as its tokenizer.json) and the format of the data it learnt (documents,
whose vocabulary has BOS, or a text), every weight by its reference name
(`wte`, `wpe`, `lm_head`, `layer0.attn_wq`, ...) as little-endian float64 bytes in base64
(exact on reload, and no pickle), Adam's moments by the same names and its step count, the
training step, the random generator's state and dropout's (two integers), so that a run
continues exactly where it stopped; and every setting of the run that made it, with its
data's sha256, which `--resume` checks the run's config.json against. Reading one back checks
every part: a wrong file is a one-line UserError.
"""
import base64
import binascii
import json
import math
import random

import numpy as np

import data
import microgpt
from microgpt_lab import UserError, models, records, settings

FORMAT, VERSION = 'microgpt-lab checkpoint', 1
MODEL_KEYS = ('vocab_size', *settings.MODEL)  # the model's config: its vocabulary and settings


def encode_array(a):
    a = np.asarray(a, dtype='<f8')
    return dict(shape=list(a.shape), float64=base64.b64encode(a.tobytes()).decode())


def decode_array(d):
    a = np.frombuffer(base64.b64decode(d['float64'], validate=True), dtype='<f8')
    return a.reshape(d['shape']).astype(np.float64)


# ---------------------------------------------------------------------------
# Writing
def checkpoint_text(model, tok, step, rng, adam, data_format='lines', run=None):
    """The checkpoint of a model after `step` training steps, as JSON text. tok: its
    tokenizer; run: the settings of the run that trained it (every setting, and its data's
    sha256)."""
    return ''.join(checkpoint_pieces(model, tok, step, rng, adam, data_format, run))


def checkpoint_pieces(model, tok, step, rng, adam, data_format='lines', run=None):
    """checkpoint_text's JSON in pieces, each array encoded when its turn comes: in memory,
    one array's text at a time, not the whole (the weights and Adam's two moments, float64
    in base64: 32 bytes a weight, 340 MB at 10.7M weights, and as much again to join it)."""
    weights = models.weights(model)
    shapes = [np.shape(w) for w in weights.values()]
    stream = getattr(model, 'dropout_stream', None)  # tensor mode's dropout draws
    config = models.config_of(model)
    head = dict(format=FORMAT, version=VERSION,
                config={k: config[k] for k in MODEL_KEYS},
                vocab=''.join(getattr(tok, 'chars', '')),             # characters; BPE: its record
                **({'tokenizer': tok.record()} if isinstance(tok, data.BPETokenizer) else {}),
                data_format=data_format, step=step, rng_state=rng.getstate(),
                **({} if run is None else dict(settings=run)))
    arrays = lambda names, arrays: (f"{', ' * (i > 0)}{json.dumps(n)}: {json.dumps(encode_array(a))}"
                                    for i, (n, a) in enumerate(zip(names, arrays)))
    yield json.dumps(head)[:-1] + ', "weights": {'            # json.dumps's own layout
    yield from arrays(weights, weights.values())
    yield f'}}, "adam": {{"t": {json.dumps(adam.t)}'
    for key, moment in (('m', adam.m), ('v', adam.v)):
        values = models.flat(moment)
        parts = np.split(values, np.cumsum([math.prod(s) for s in shapes])[:-1])
        yield f', "{key}": {{'
        yield from arrays(weights, (p.reshape(s) for p, s in zip(parts, shapes)))
        yield '}'
        del values, parts  # before the next moment's flat copy is made
    yield '}'
    if stream:
        yield f', "dropout_stream": {json.dumps([int(stream.seed), int(stream.count)])}'
    yield '}\n'


# ---------------------------------------------------------------------------
# Reading
def generator(state):
    """A random.Random in the recorded state (a JSON list, as getstate() gave it)."""
    rng = random.Random()
    try:
        version, internal, gauss_next = state
        rng.setstate((version, tuple(internal), gauss_next))
    except (TypeError, ValueError, OverflowError):
        raise ValueError("not the state of Python's random generator") from None
    return rng


def load(path, need_adam=False, need_rng=False):
    """The checkpoint in path as a dict: config, vocab, step, weights {name: float64 array},
    adam (dict(t, m, v) of arrays, or None), rng (a random.Random, or None). A UserError
    says what is wrong with the file, or what it lacks that is needed (need_adam: to
    continue training; need_rng: to continue the run's random draws)."""
    def bad(why):
        return UserError(f"{path} is not a valid checkpoint: {why}")
    ckpt = records.read_json(path, 'a checkpoint', in_folder=False)
    if ckpt.get('format') != FORMAT:
        raise bad("it does not say it is one")
    if ckpt.get('version') != VERSION:
        raise bad(f"version {ckpt.get('version')!r}; this program reads {VERSION}")
    config, chars, step = ckpt.get('config'), ckpt.get('vocab'), ckpt.get('step')
    if not isinstance(config, dict):
        raise bad("it has no config")
    config = dict({name: s.default for name, s in settings.SETTINGS.items()
                   if s.part == 'model' and s.later}, **config)  # older checkpoints: defaults
    if any(k not in config for k in MODEL_KEYS):
        raise bad(f"its config lacks one of {', '.join(MODEL_KEYS)}")
    for k in MODEL_KEYS:
        s = settings.SETTINGS.get(k, settings.Setting(int, low=1))  # vocab_size: a count
        if settings.problem(s, config[k]) or (s.kind is int and (config[k] or 0) > 2 ** 31):
            raise bad(f"config {k} = {config[k]!r}")
    why = microgpt.problem(config)  # the model's constraints: the model's own check
    if why:
        raise bad(f"config {why}")
    data_format = ckpt.get('data_format', 'lines')  # checkpoints before text data: lines
    if data_format not in ('lines', 'text'):
        raise bad(f"data_format {data_format!r}")
    if 'tokenizer' in ckpt:                        # BPE
        try:
            tok = data.read_tokenizer('tokenizer', ckpt['tokenizer'], data.CORE_FIELDS)
        except data.DataError as e:
            raise bad(f"its {e}") from None
        if tok.vocab_size != config['vocab_size'] or (tok.bos is not None) != (data_format == 'lines'):
            raise bad(f"its tokenizer makes {tok.vocab_size} ids {'with' if tok.bos else 'without'} BOS, "
                      f"not the vocab_size {config['vocab_size']} of {data_format}")
    else:
        if not isinstance(chars, str) or len(set(chars)) != len(chars) \
                or len(chars) + (data_format == 'lines') != config['vocab_size']:
            raise bad("its vocabulary does not match vocab_size")
        if data_format == 'lines' and '\n' in chars:  # a document is a line: it holds no newline
            raise bad("its vocabulary holds a newline, which documents (lines) cannot")
        tok = data.Tokenizer(chars, bos=data_format == 'lines')
    if type(step) is not int or step < 0:
        raise bad(f"step = {step!r}")
    expected = models.weight_shapes(config)

    def arrays(group, what):
        if not isinstance(group, dict) or set(group) != set(expected):
            raise bad(f"the {what} names should be exactly {', '.join(expected)}")
        out = {}
        for name, shape in expected.items():
            try:
                out[name] = decode_array(group[name])
            except (TypeError, KeyError, ValueError, binascii.Error) as e:
                raise bad(f"{what} {name} is malformed ({e})") from None
            if out[name].shape != shape:
                raise bad(f"{what} {name} has shape {list(out[name].shape)}, "
                          f"the config says {list(shape)}")
            if not np.isfinite(out[name]).all():
                raise bad(f"{what} {name} holds NaN or infinite values")
        return out

    weights = arrays(ckpt.get('weights'), 'weight')
    adam = ckpt.get('adam')
    if adam is not None:
        if not isinstance(adam, dict) or type(adam.get('t')) is not int or adam['t'] < 0:
            raise bad("its Adam state is malformed")
        adam = dict(t=adam['t'], m=arrays(adam.get('m'), 'Adam m'), v=arrays(adam.get('v'), 'Adam v'))
        if any((v < 0).any() for v in adam['v'].values()):  # a mean of squares
            raise bad("Adam v holds negative values")
    elif need_adam:
        raise bad("it has no Adam state, which continuing the training needs")
    rng = None
    if ckpt.get('rng_state') is not None:
        try:
            rng = generator(ckpt['rng_state'])
        except ValueError as e:
            raise bad(f"rng_state is {e}") from None
    elif need_rng:
        raise bad("it has no rng_state, the random generator's state (give a --seed to sample)")
    run = ckpt.get('settings')  # the run's; older checkpoints: none
    if run is not None:
        if not isinstance(run, dict):
            raise bad("its settings are not a JSON object")
        run = dict(settings.read(run, f"{path}: settings", ('data_sha256',)),
                   data_sha256=records.field(run, 'data_sha256', f"{path}: settings", str))
        for k in settings.MODEL:  # the model is built from config: it must be the run's
            if config[k] != run[k]:
                raise bad(f"config {k} is {json.dumps(config[k])}, but its settings say "
                          f"{json.dumps(run[k])}")
    stream = ckpt.get('dropout_stream')  # [seed, draws so far]; older checkpoints: none
    if stream is not None and not (isinstance(stream, list) and len(stream) == 2 and all(
            type(x) is int and 0 <= x < 2 ** 64 for x in stream)):
        raise bad(f"dropout_stream = {stream!r}")
    if stream is None and need_adam and config['dropout']:
        raise bad("it has no dropout_stream, which continuing a run with dropout needs")
    return dict(config=config, vocab=chars, tok=tok, data_format=data_format, step=step, weights=weights,
                adam=adam, rng=rng, dropout_stream=stream, settings=run)
