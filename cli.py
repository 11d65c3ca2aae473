"""microgpt-lab: train, sample, ablate and benchmark a GPT written from scratch, in scalar
mode (microgpt.py, pure Python) or tensor mode (tensorgpt.py, NumPy and numba).

Usage:
  cli.py train [options]
  cli.py sample --checkpoint PATH [options]
  cli.py ablate [options]
  cli.py bench [options]
  cli.py -h | --help

Commands:
  train   Train a model: print a line per step (loss, steps/s, time left), a summary and
          samples (a passage, for a text), and write a run record to --out:
          config.json, metrics.json, losses.csv, samples.txt and checkpoint.json.
  sample  Print samples (passages, for a text) from a checkpoint written by train, in
          either mode.
  ablate  Train the four variants, tied/untied lm_head x input rmsnorm on/off, with the
          same seeds, data and settings (every train option applies), and write a
          summary (JSON, CSV, a markdown table, a plot of the loss curves).
  bench   Time scalar and tensor mode side by side on the same data, seed and steps:
          a warm-up first, then --repeats timed runs each; medians and ranges.

Data options:
  --data PATH         A UTF-8 text file. Default: names.txt beside cli.py, makemore's
                      32,033 names, shipped with the project, as is tinyshakespeare.txt.
                      A missing file named input.txt (the reference script's workflow)
                      is first downloaded: makemore's names.txt at a pinned commit, its
                      sha256 checked.
  --data-format FMT   lines: one document a line (blank lines skipped), framed by BOS,
                      the documents shuffled. text: the whole file is one stream of
                      characters, newlines included, no BOS; each step trains on windows
                      of block size + 1 characters at random offsets, as many as the
                      batch size (nanoGPT's shakespeare_char) [default: lines]
  --no-fetch          Never download: a missing input.txt is an error.
  --val-fraction F    Share held out for validation: the last of the shuffled documents,
                      or the end of the text, all of whose --block-size windows are
                      evaluated [default: 0.1]

Model options:
  --n-embd N          Embedding width [default: 16]
  --n-head N          Attention heads; must divide --n-embd [default: 4]
  --n-layer N         Transformer blocks [default: 1]
  --block-size N      Longest context, in tokens [default: 16]
  --tie-lm-head       Compute the logits with wte (no separate lm_head matrix).
  --no-input-rmsnorm  Skip the rmsnorm of the token + position embedding.
  --init-std S        Standard deviation of the initial weights [default: 0.08]

Training options:
  --mode MODE         scalar or tensor; auto: scalar, except that a text's passages
                      are sampled in tensor mode [default: auto]
  --seed S            Seed of the one random generator that shuffles the documents, draws
                      the weights and then the samples. train, ablate, bench: 42. sample:
                      none continues the training run's generator, so that its first
                      samples are the ones train printed.
  --steps N           Training steps [default: 1000]
  --lr LR             Adam's peak learning rate [default: 0.01]
  --lr-schedule S     linear or cosine: the decay, after the warm-up, from --lr at the
                      first step to --min-lr at --steps [default: linear]
  --min-lr LR         Learning rate at the end of the decay [default: 0]
  --warmup-steps N    Steps of linear warm-up to --lr, the first at --lr / N [default: 0]
  --beta1 B           Adam's decay of its running mean of gradients [default: 0.85]
  --beta2 B           Adam's decay of its running mean of squared gradients [default: 0.99]
  --weight-decay WD   Decoupled weight decay (AdamW): each step every weight matrix also
                      shrinks by lr * WD of itself [default: 0]
  --grad-clip G       Scale the gradients down to a global norm of at most G (0: never)
                      [default: 0]
  --batch-size B      Documents (or text windows) per step in tensor mode (scalar mode
                      trains on one document a step) [default: 32]
  --dtype DTYPE       float32 or float64, in tensor mode [default: float32]
  --eval-every N      Also report the validation loss every N steps (0: only at the
                      end) [default: 0]
  --val-docs N        Validation documents to evaluate, the first N held out; auto: all
                      in tensor mode, 200 in scalar mode [default: auto]
  --last-n N          The summary's mean loss is over the last N steps [default: 100]
  --log-every N       Print a step line every N steps (the first and last always print);
                      auto: every step in scalar mode, 100 lines a run in tensor
                      mode [default: auto]
  --out DIR           Folder for the run record (ablate: the ablation, bench: the
                      results); it must not hold one already [default: auto]

Generation options:
  --samples N         Documents to sample after training [default: 20]
  --length N          Characters of the passage a text run ends with, or that sample
                      prints for a text; the model sees the last --block-size of them
                      [default: 500]
  --temperature T     Sampling temperature, from 0.001 to 1000; lower is more
                      conservative [default: 0.5]
  --top-k K           Draw only among the K most likely next tokens (default: all).

Scalar mode trains on documents with the reference's optimizer and schedule: the text
format, --lr-schedule cosine, --min-lr, --warmup-steps, --weight-decay and --grad-clip
need --mode tensor.

Run options (train):
  --stop-after N      Stop after step N, keeping a checkpoint to --resume from; the
                      learning rate schedule still spans --steps.
  --resume DIR        train: continue the stopped or interrupted run recorded in DIR
                      (weights, Adam state, step, generator), writing a new record with
                      all its steps. ablate: finish the ablation in DIR, skipping the
                      runs already done. No other option but --out (train) or --jobs
                      (ablate) may be given.
  --from DIR          Re-run the run recorded in DIR/config.json, with the same settings
                      and data (checked by sha256). No other option but --out.

Sample options:
  --checkpoint PATH   A checkpoint.json written by train.
  --num N             Samples to print; auto: 20 documents, or 1 passage of a text
                      [default: auto]
  --prompt TEXT       Begin every sample with TEXT and continue it; a passage with no
                      prompt begins at a newline [default: ]
  --batched           Tensor mode: draw all samples at once, one forward pass a position
                      for all. Much faster for many samples, but the random draws come in
                      another order, so the samples differ from one-at-a-time sampling.

Ablation options:
  --seeds K           Run every variant with seeds S, S+1, ..., S+K-1 [default: 1]
  --jobs N            Runs in parallel processes; results do not depend on it; auto:
                      the number of cores [default: auto]

Bench options:
  --bench-steps N     Timed steps of each run, after --warmup untimed ones (for text
                      data, tensor mode and PyTorch only) [default: 100]
  --warmup N          Untimed steps at the start of each run [default: 10]
  --repeats R         Timed runs of each configuration, alternating [default: 3]
  --threads T         Threads for numba (and PyTorch) [default: 2]
  --no-scalar         Leave scalar mode out (for models too big for it).
  --torch PYTHON      Also run ../shared/bench/torch_ref.py with this Python (one with
                      PyTorch), alternating with ours, and report the ratios.
  --reference PATH    Also time the reference script itself, Karpathy's microgpt.py saved
                      at PATH (it is not shipped), run unmodified with --data as its
                      input.txt and timed between its printed step lines. Needs the
                      reference config and seed, --warmup >= 1 and 1000 steps at most.

Exit status: 0 on success; 1 on an error (one line on stderr, no traceback, no
half-written file); 2 when training diverges (the record up to that step is kept);
130 when interrupted with Ctrl-C, 143 with SIGTERM: the step under way finishes, the
record keeps every finished step, and --resume continues it.
"""
import os
import re
import sys

from docopt import DocoptExit, docopt

import ablation
import bench
import data
import records
import sampling
import training
from records import UserError
from training import Rule

COMMANDS = ('train', 'sample', 'ablate', 'bench')


# ---------------------------------------------------------------------------
# Which options each command takes: read off the usage above, by its headings.
def option_sections(doc=__doc__):
    """{'data': {'--data', ...}, 'model': ..., ...}: the options under each '... options' heading."""
    sections, current = {}, None
    for line in doc.splitlines():
        heading = re.match(r'(\w+) options', line)
        if heading:
            current = sections.setdefault(heading.group(1).lower(), set())
        elif current is not None and re.match(r'  --', line):
            current.add(line.split()[0])
    return sections


def options_given(argv):
    """The options in argv, each once as given, skipping the values of those that take one
    (so that `--prompt -a` gives --prompt, not -a)."""
    takes_value = {line.split()[0] for line in __doc__.splitlines()
                   if re.match(r'  --[\w-]+ [A-Z]', line)}
    given, i = [], 0
    while i < len(argv):
        a = argv[i]
        if a.startswith('-'):
            given.append(a.split('=')[0])
            i += a in takes_value  # its value is the next argument
        i += 1
    return given


def allowed_options(command, given):
    s = option_sections()
    recorded = [a for a in given if a in ('--resume', '--from')]
    if command == 'train' and recorded:  # a recorded run's settings: nothing may change them
        return {recorded[0], '--out'}
    if command == 'ablate' and '--resume' in given:
        return {'--resume', '--jobs'}
    return {
        'train': s['data'] | s['model'] | s['training'] | s['generation']
        | {'--stop-after', '--from', '--resume'},
        'ablate': (s['data'] | s['model'] | s['training'] | s['generation'] | s['ablation'])
        - {'--tie-lm-head', '--no-input-rmsnorm'},
        'sample': s['sample'] | s['generation'] - {'--samples'} | {'--mode', '--seed'},
        'bench': s['data'] | s['model'] | s['bench'] | {'--seed', '--lr', '--batch-size',
                                                        '--dtype', '--out'},
    }[command]


def parse_args(argv):
    """docopt's dict of the arguments, after checking that every option given is known,
    given once, and one of the command's."""
    known = set().union(*option_sections().values()) | {'-h', '--help'}
    given = options_given(argv)
    unknown = [a for a in given if a not in known]
    twice = [a for a in given if given.count(a) > 1]
    if unknown:
        raise UserError(f"unknown option {unknown[0]} (see: {records.program()} --help)")
    if twice:
        raise UserError(f"{twice[0]} is given twice")
    if argv and argv[0] in COMMANDS:
        allowed = allowed_options(argv[0], given)
        wrong = [a for a in given if a not in allowed | {'-h', '--help'}]
        if wrong:
            recorded = [a for a in given if a in ('--resume', '--from')]
            raise UserError(f"{wrong[0]} is not an option of {argv[0]}"
                            f"{' with ' + recorded[0] if recorded else ''}"
                            f" (see: {records.program()} --help)")
    try:
        return docopt(__doc__, argv)
    except DocoptExit as e:
        first = str(e).splitlines()[0] if str(e) else ''
        if not argv or argv[0] not in COMMANDS:
            why = "the first argument must be a command: train, sample, ablate or bench"
        elif argv[0] == 'sample' and '--checkpoint' not in given:
            why = "sample needs --checkpoint PATH"
        elif first.startswith('--'):
            why = first  # docopt's own words, e.g. "--steps requires argument"
        else:
            why = f"these arguments fit no usage line of {argv[0]}"
        raise UserError(f"{why} (see: {records.program()} --help)") from None


# ---------------------------------------------------------------------------
# Conversion and checks: every option's string becomes a typed setting, checked by the
# rules in training.SETTINGS (those a run records) or the command's own below.
OPTION_OF = {'fetch': '--no-fetch', 'input_rmsnorm': '--no-input-rmsnorm'}  # the others: --n-embd
COMMAND_RULES = dict(num=Rule(int, 0, optional=True), seeds=Rule(int, 1),
                     jobs=Rule(int, 1, optional=True),
                     bench_steps=Rule(int, 1), warmup=Rule(int, 0), repeats=Rule(int, 1),
                     threads=Rule(int, 1))


def option(name):
    return OPTION_OF.get(name, '--' + name.replace('_', '-'))


def value(args, name):
    """Option `name`'s value, converted to its rule's type and checked."""
    rule = training.SETTINGS.get(name) or COMMAND_RULES[name]
    raw, opt = args[option(name)], option(name)
    if rule.optional and raw in (None, 'auto'):
        return None
    if rule.kind in (int, float):
        try:
            raw = rule.kind(raw)
        except ValueError:
            raise UserError(f"{opt} must be {'an integer' if rule.kind is int else 'a number'}, "
                            f"got {raw!r}") from None
    why = training.problem(rule, raw)
    if why:
        raise UserError(f"{opt} {why}")
    return raw


def parse_config(args):
    """The command's settings, typed and checked, from docopt's strings."""
    mode = args['--mode']
    cfg = dict(mode=None if mode == 'auto' else value(args, 'mode'),
               temperature=value(args, 'temperature'),
               top_k=value(args, 'top_k'), length=value(args, 'length'),
               seed=None if args['--seed'] is None else value(args, 'seed'))
    if args['sample']:  # mode None: the checkpoint's data says (see sampling.py)
        if args['--batched'] and cfg['mode'] != 'tensor':
            raise UserError("--batched needs --mode tensor")
        return dict(cfg, checkpoint=args['--checkpoint'], num=value(args, 'num'),
                    prompt=args['--prompt'], batched=args['--batched'])
    cfg.update({name: value(args, name) for name in (
        'data_format', 'val_fraction', 'dtype', 'n_embd', 'n_head', 'n_layer', 'block_size',
        'init_std', 'steps', 'lr', 'lr_schedule', 'min_lr', 'warmup_steps', 'beta1', 'beta2',
        'weight_decay', 'grad_clip', 'batch_size', 'eval_every', 'val_docs', 'last_n',
        'log_every', 'samples', 'stop_after')})
    cfg.update(eps=1e-8, data=args['--data'] or data.NAMES, fetch=not args['--no-fetch'],
               tie_lm_head=args['--tie-lm-head'], input_rmsnorm=not args['--no-input-rmsnorm'],
               out=None if args['--out'] in ('auto', None) else args['--out'])
    if cfg['seed'] is None:
        cfg['seed'] = 42
    if cfg['mode'] is None:
        cfg['mode'] = 'scalar'
    if args['bench']:
        cfg['mode'] = 'tensor'  # bench times every mode, with tensor mode's settings
    if cfg['mode'] == 'scalar':
        cfg['batch_size'], cfg['dtype'] = 1, 'float64'  # one document a step, Python floats
    training.check_settings(cfg, option)
    if args['ablate']:
        cfg.update(seeds=value(args, 'seeds'), jobs=value(args, 'jobs'))
    if args['bench']:
        if args['--torch'] == '':
            raise UserError("--torch needs a Python with PyTorch, got ''")
        cfg.update({name: value(args, name) for name in ('bench_steps', 'warmup', 'repeats',
                                                         'threads')},
                   scalar=not args['--no-scalar'], torch=args['--torch'] or None,
                   reference=args['--reference'])
    return cfg


# ---------------------------------------------------------------------------
# The commands: each hands its settings to the module that does the work.
def cmd_train(cfg, args):
    return training.train_command(cfg, source=args['--from'] or args['--resume'],
                                  resume=bool(args['--resume']))


def cmd_sample(cfg, args):
    return sampling.sample_command(cfg)


def cmd_ablate(cfg, args):
    return ablation.ablate_command(cfg, resume=args['--resume'])


def cmd_bench(cfg, args):
    return bench.bench_command(cfg)


class QuietPipe:
    """stdout that outlives its reader (`cli.py train | head`): once the pipe closes, the
    rest of the output is dropped, and the work goes on to write its record."""
    def __init__(self, stream):
        self.stream = stream

    def write(self, text):
        try:
            return self.stream.write(text)
        except BrokenPipeError:
            self.closed_reader()
            return len(text)

    def flush(self):
        try:
            self.stream.flush()
        except BrokenPipeError:
            self.closed_reader()

    def closed_reader(self):
        os.dup2(os.open(os.devnull, os.O_WRONLY), self.stream.fileno())

    def __getattr__(self, name):
        return getattr(self.stream, name)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    stdout, sys.stdout = sys.stdout, QuietPipe(sys.stdout)
    try:
        args = parse_args(argv)
        cfg = parse_config(args)
        command = next(c for c in COMMANDS if args[c])
        return globals()[f"cmd_{command}"](cfg, args) or 0
    except (UserError, data.DataError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except OSError as e:  # a file or folder the system refuses (permissions, a full disk)
        print(f"error: {e.filename + ': ' if e.filename else ''}{e.strerror or e}", file=sys.stderr)
        return 1
    except MemoryError:
        print("error: out of memory: try a smaller model (--n-embd, --n-layer), --batch-size "
              "or --block-size", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    finally:
        sys.stdout = stdout


if __name__ == '__main__':
    sys.exit(main())
