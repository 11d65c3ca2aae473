"""microgpt-lab: train, sample, ablate and benchmark a GPT written from scratch, and look at
what it learnt: in scalar mode (microgpt.py, pure Python) or tensor mode (NumPy and numba).

Usage:
  cli.py train [options]
  cli.py sample --checkpoint PATH [options]
  cli.py ablate [options] [--vary SPEC]...
  cli.py bench [options] [--vary SPEC]...
  cli.py plot DIR... [options]
  cli.py tokenizer [options]
  cli.py attention --checkpoint PATH --text TEXT [options]
  cli.py -h | --help

Commands:
  train      Train a model: a line per step (loss, speed, time left), a summary, samples (a
             passage, for a text), and a run record in --out: config.json, metrics.json,
             losses.csv, samples.txt, checkpoint.json, losses.png (BPE: tokenizer.json).
  sample     Print samples (passages, for a text) from a checkpoint, in either mode.
  ablate     Train a grid's cells alike (seeds, data, settings): the variants (lm_head tied or
             not x input rmsnorm on/off) x each --vary's values; summary: JSON, CSV, table, plots.
  bench      Time scalar mode, tensor mode (and PyTorch) side by side, taking turns;
             with --vary, each value alone too (a choice's cost; sizes, threads: scale).
  plot       Draw the loss curves of run records and ablations over each other, in a PNG.
  attention  Show how a checkpoint's model attends over TEXT, every layer and head: text
             heatmaps in the terminal, and a grid of heatmaps in a PNG.
  tokenizer  Train byte-level BPE on the training part of --data, as train splits it; tokenizer.json.

Data options:
  --data PATH         A UTF-8 text file; default: the shipped names.txt (it and tinyshakespeare.txt
                      are beside cli.py, or installed in share/microgpt-lab). A missing input.txt
                      (the reference's way) is first downloaded: makemore's names.txt, checksummed.
  --data-format FMT   lines: one document a line, framed by BOS, shuffled. text: one stream of
                      characters; a step trains on windows at random offsets [default: lines]
  --no-fetch          Never download: a missing input.txt is an error.
  --val-fraction F    Share held out for validation: the last documents, or the end of
                      the text, all of its windows evaluated [default: 0.1]
  --tokenizer T       char (an id a character), bpe (byte-level, trained on the training
                      part) or a tokenizer.json that `tokenizer` wrote [default: char]
  --vocab-size N      BPE's ids, the 256 bytes (and BOS, for documents) among them: bpe needs it.
  --split-pattern P   BPE's chunks: gpt4 or gpt2 (tiktoken's patterns), none [default: gpt4]

Model options:
  --n-embd N          Embedding width [default: 16]
  --n-head N          Attention heads; must divide --n-embd [default: 4]
  --n-layer N         Transformer blocks [default: 1]
  --block-size N      Longest context, in tokens [default: 16]
  --tie-lm-head       Logits from wte, no lm_head (not with --optimizer muon, --init nanochat).
  --no-input-rmsnorm  Skip the rmsnorm of the token + position embedding.
  --activation ACT    The MLP's nonlinearity: relu (the reference's), relu2 (relu
                      squared, nanochat's) or gelu (GPT-2's tanh form) [default: relu]
  --final-norm X      on: a norm before lm_head, as GPT-2's ln_f [default: off]
  --norm NORM         rmsnorm (the reference's, no weights) or layernorm (GPT-2's, with a
                      learned gain and bias per norm, from 1 and 0) [default: rmsnorm]
  --norm-eps E        Added to the mean square (or variance) in every norm [default: 1e-05]
  --position P        learned (wpe, the reference's), rope (rotary q and k, no wpe;
                      heads of even size) or none (causal attention alone) [default: learned]
  --qk-norm X         on: an rmsnorm of each head's q and k, as nanochat's [default: off]
  --qk-scale S        q and k times S, after --qk-norm (nanochat's: 1.2) [default: 1]
  --rope-base B       rope's angles: position * B^(-2d/head size) [default: 10000]
  --softcap C         Logits C tanh(logits / C): within ±C (nanochat's: 15); 0: off [default: 0]
  --bias X            on: a bias in each linear map of the blocks, as GPT-2's [default: off]
  --n-kv-head K       Heads of k and v, each serving --n-head / K heads of q (grouped-query
                      attention; no KV-cache memory saved); auto: --n-head [default: auto]
  --value-embeddings X  on: nanochat's; every other block (the last among them) adds to v
                      an embedding of the token, gated by 3 sigmoid(a map of its first 12
                      channels, or all if fewer) [default: off]
  --residual-scalars X  on: nanochat's; block i reads a_i x + b_i x0 (x0: the embeddings as
                      the first block reads them), a and b learned [default: off]
  --dropout P         Tensor mode: drop this share of the attention weights and of each
                      block's two outputs in training (nanoGPT's, bar the embeddings') [default: 0]
  --init SCHEME       The initial weights: microgpt (gauss(0, --init-std)), gpt2 (nanoGPT's:
                      0.02, the residual projections / sqrt(2 n_layer), biases 0) or nanochat
                      (its init_weights: uniform, the residual projections 0) [default: microgpt]
  --init-std S        Standard deviation of --init microgpt's weights [default: 0.08]
  --recipe NAME       microgpt, gpt2 or nanochat: the model and optimizer of their authors'
                      code (docs/choices.md); an option given beside it still counts (default: none).

Training options:
  --mode MODE         scalar or tensor; auto: scalar, except that a text's passages
                      are sampled in tensor mode [default: auto]
  --seed S            Seed of the one generator of shuffle, weights, batches and samples;
                      default 42, but sample continues the checkpoint's generator.
  --steps N           Training steps [default: 1000]
  --lr LR             AdamW's peak learning rate; with --optimizer muon, only the peak of
                      the schedule that every group's own follows [default: 0.01]
  --optimizer OPT     adamw, or muon: nanochat's Muon for the blocks' matrices and AdamW for
                      the rest in its groups, each on --lr's schedule [default: adamw]
  --muon-lr LR        Muon's peak learning rate (nanochat's) [default: 0.02]
  --muon-schedule S   constant (momentum 0.95, --weight-decay as given), or nanochat (its
                      base_train.py's: momentum 0.85 up to 0.97, down to 0.90; --weight-decay
                      scaled to the model and batch, to 0 on a cosine) [default: constant]
  --lr-schedule S     linear or cosine: the decay after the warm-up, from --lr to --min-lr
                      at --steps [default: linear]
  --min-lr LR         Learning rate at the end of the decay [default: 0]
  --warmup-steps N    Steps of linear warm-up to --lr, the first at --lr / N [default: 0]
  --beta1 B           AdamW's decay of its running mean of gradients [default: 0.85]
  --beta2 B           AdamW's decay of its running mean of squared gradients [default: 0.99]
  --weight-decay WD   Each step every weight matrix also shrinks by lr * WD: AdamW's, or
                      with --optimizer muon Muon's (cautious) [default: 0]
  --grad-clip G       Cap the gradients' global norm at G; 0: no cap [default: 0]
  --batch-size B      Documents (or windows) a step in tensor mode (scalar: 1) [default: 32]
  --dtype DTYPE       float32 or float64, in tensor mode [default: float32]
  --eval-every N      Validation loss every N steps too; 0: at the end only [default: 0]
  --val-docs N        Held-out documents to evaluate; auto: all, 200 in scalar mode [default: auto]
  --last-n N          The summary's mean loss is over the last N steps [default: 100]
  --log-every N       Print a step line every N steps; auto: every step in scalar mode,
                      100 lines a run in tensor mode [default: auto]
  --threads N         Threads of BLAS and numba (and bench's PyTorch), at most BLAS's most;
                      recorded, since BLAS's count changes how products round; auto: the
                      cores (ablate: 1 a run, whatever --jobs is) [default: auto]
  --out DIR           New folder for the record, the ablation or the bench [default: auto]

Generation options:
  --samples N         Documents to sample after training [default: 20]
  --length N          Tokens of a text's passage (characters, with --tokenizer char); the
                      model sees the last block size of them [default: 500]
  --temperature T     Sampling temperature, 0.001 to 1000; lower is safer [default: 0.5]
  --top-k K           Draw only among the K most likely next tokens (default: all).

Scalar mode keeps to documents and the reference's optimizer and schedule: the text
format, cosine, --min-lr, --warmup-steps, --weight-decay, --grad-clip need tensor mode.

Run options (train):
  --stop-after N      Stop after step N with a checkpoint to --resume (the schedule spans --steps).
  --resume DIR        train: continue the stopped or interrupted run recorded in DIR, in a
                      new record of all its steps (+ --out). ablate: finish the ablation
                      in DIR, its stopped runs continued (+ --jobs or --cluster).
  --from DIR          Re-run the run recorded in DIR, its data checked by sha256 (+ --out).

Sample options:
  --checkpoint PATH   A checkpoint.json written by train.
  --num N             Samples; auto: 20 documents, or 1 passage of a text [default: auto]
  --prompt TEXT       Continue TEXT (a passage: a newline if none) [default: ]
  --batched           Tensor mode: draw all documents at once, much faster, other draws.

Ablation options:
  --seeds K           Run every cell with seeds S, S+1, ..., S+K-1 (K <= 10000) [default: 1]
  --variants NAMES    Some of untied-norm,tied-norm,untied-nonorm,tied-nonorm: the first
                      axis, tie-lm-head+input-rmsnorm=off+on,on+on,... [default: all]
  --vary SPEC         NAME=V1,V2,...: cross the variants with these values of the option --NAME
                      of train (tie-lm-head, input-rmsnorm: on or off, no variants); repeatable;
                      NAME+NAME=V+V,... varies settings together. Axes' first values: the reference.
  --design D          product: every combination of the axes' values; alone: the reference
                      cell, then each other value of each axis alone against it; path: one
                      change at a time from the reference, each cell keeping those before
                      it, axis by axis: a staircase [default: product]
  --jobs N            Runs at once, up to 1024; results do not change, as every run
                      runs its own --threads; auto: the cores / threads [default: auto]
  --cluster ADDRESS   Run them on a Dask cluster instead, the same results: its scheduler's
                      tcp://HOST:PORT, workers with --nthreads 1 (cluster extra: docs/cluster.md).

Bench options:
  --bench-steps N     Timed steps a run, after --warmup (text: no scalar mode) [default: 100]
  --warmup N          Untimed steps at the start of each run [default: 10]
  --repeats R         Timed runs of each configuration, alternating [default: 3]
  --no-scalar         Leave scalar mode out (for models too big for it).
  --torch PYTHON      Also time ../shared/bench/torch_ref.py, run by this Python (with PyTorch).
  --reference PATH    Also time the reference script saved at PATH (not shipped), run
                      unmodified, between its printed step lines; reference config only.

Picture options:
  --png PATH          The picture, a .png file; auto: plot.png, attention.png [default: auto]
  --text TEXT         attention: a document (framed by BOS) or passage, within the block.

Exit status: 0 done; 1 an error (one line on stderr, no half-written file); 2 training diverged (the
record up to then is kept); 130 Ctrl-C, 143 SIGTERM, 129 SIGHUP: the step under way finishes, the record
keeps every finished step, --resume continues it. Output that cannot be written never stops a run.
"""

import signal
if __name__ == '__main__':  # Ctrl-C while the modules load: stop at once, no traceback
    signal.signal(signal.SIGINT, signal.SIG_DFL)
import re  # noqa: E402 (the imports below take a moment)
import sys

from docopt import DocoptExit, docopt

from microgpt_lab import (UserError, ablation, attention_maps, bench, grid, output, overlay,
                          sampling, settings, stopping, tokens, training)


# ---------------------------------------------------------------------------
# Which options each command takes: those under the usage's '... options' headings that it
# lists below; an option that takes a value has one in its line ('--steps N').
SECTIONS = {heading.lower(): set(re.findall(r'^  (--[\w-]+)', lines, re.M))  # a heading, its lines
            for heading, lines in re.findall(r'^(\w+) options.*\n((?:.+\n)*)', __doc__, re.M)}
TAKES_VALUE = {line.split()[0] for line in __doc__.splitlines() if re.match(r'  --[\w-]+ [A-Z]', line)}
RUN = set().union(*(SECTIONS[s] for s in ('data', 'model', 'training', 'generation')))
TAKES = dict(train=RUN | SECTIONS['run'], ablate=(RUN | SECTIONS['ablation'])
             - {'--tie-lm-head', '--no-input-rmsnorm'},  # (--vary varies them)
             sample=SECTIONS['sample'] | SECTIONS['generation'] - {'--samples'} | {'--mode', '--seed'},
             bench=SECTIONS['data'] | SECTIONS['model'] | SECTIONS['bench'] | {
                 '--seed', '--lr', '--batch-size', '--dtype', '--threads', '--out', '--vary',
                 '--optimizer', '--muon-lr', '--muon-schedule'},
             plot={'--png'}, attention={'--checkpoint', '--text', '--png'},
             tokenizer=SECTIONS['data'] - {'--tokenizer'} | {'--seed', '--out'})


def options_given(argv):
    """The options in argv, as given, less the values of those that take one (--prompt -a)."""
    given, i = [], 0
    while i < len(argv):
        if argv[i].startswith('-'):
            given.append(argv[i].split('=')[0])
            i += argv[i] in TAKES_VALUE  # its value is the next argument
        i += 1
    return given


def parse_args(argv):
    """docopt's dict of the arguments, each option given checked: known, once, the command's."""
    given, command = options_given(argv), argv[0] if argv and argv[0] in TAKES else None
    recorded = [a for a in given if a in dict(train=('--resume', '--from'), ablate=('--resume',))
                .get(command, ())][:1]  # a recorded run's settings: nothing else may change them
    takes = set(recorded) | dict(train={'--out'}, ablate={'--jobs', '--cluster'})[command] \
        if recorded else TAKES.get(command, set())
    hint = f"(see: {output.program()} --help)"
    for a in given:
        if a not in set().union(*SECTIONS.values()) | {'-h', '--help'}:
            raise UserError(f"unknown option {a} {hint}")
        if given.count(a) > 1 and a != '--vary':
            raise UserError(f"{a} is given twice")
        if command and a not in takes | {'-h', '--help'}:
            raise UserError(f"{a} is not an option of {command}"
                            f"{' with ' + recorded[0] if recorded else ''} {hint}")
    try:
        return dict(docopt(__doc__, argv), given=set(given))  # given: typed, not defaults
    except DocoptExit as e:
        needs = [o for o in dict(sample=['--checkpoint'], attention=['--checkpoint', '--text'],
                                 plot=['the folders to draw: DIR...']).get(command, []) if o not in given]
        why = (str(e).splitlines() or [''])[0]  # docopt's own words: "--steps requires argument"
        why = f"the first argument must be a command: {', '.join(COMMANDS)}" if command is None \
            else f"{command} needs {needs[0]}" if needs else why if why.startswith('--') \
            else f"these arguments fit no usage line of {command}"
        raise UserError(f"{why} {hint}") from None


# ---------------------------------------------------------------------------
# Conversion: every option's string typed and checked by settings.py's one table.
def value(args, name):
    """Setting (or command option) `name` from docopt's dict: a flag's truth (a --no- flag's
    opposite), or the string converted and checked; the default if not given (mode: None)."""
    s, opt = settings.SETTINGS.get(name) or settings.COMMAND_OPTIONS[name], settings.option(name)
    if not opt or (args[opt] is None and not s.optional) or (name == 'mode' and args[opt] == 'auto'):
        return None if name == 'mode' else s.default  # (a mode of auto: the command's)
    if s.kind is bool and opt not in TAKES_VALUE:
        return not args[opt] if opt.startswith('--no-') else args[opt]
    return settings.convert(name, args[opt], opt)


def parse_config(args):
    """The command's settings and options, typed and checked, from docopt's strings."""
    png = lambda auto: auto if args['--png'] == 'auto' else args['--png']
    own = lambda *names: {name: value(args, name) for name in names}
    if args['plot']:
        return dict(dirs=args['DIR'], png=png('plot.png'))
    if args['attention']:
        return dict(checkpoint=args['--checkpoint'], text=args['--text'], png=png('attention.png'))
    if args['sample']:  # mode None: the checkpoint's data says (see sampling.py); seed None: its own
        return dict(own('temperature', 'top_k', 'length', 'num', 'mode'), checkpoint=args['--checkpoint'],
                    seed=None if args['--seed'] is None else value(args, 'seed'),
                    prompt=args['--prompt'], batched=args['--batched'])
    cfg = own(*settings.SETTINGS)
    cfg.update(mode='tensor' if args['bench'] or args['tokenizer'] else cfg['mode'] or 'scalar',
               out=None if args['--out'] in ('auto', None) else args['--out'])  # (bench: every mode)
    vary = [grid.axis(spec) for spec in args['--vary']]
    given = {name for name in settings.SETTINGS if settings.option(name) in args['given']}
    cfg, set_by = settings.as_given(cfg, given, grid.modes(vary))  # set_by: how an error names them
    if args['ablate']:  # given: what a recipe varied in a cell leaves alone
        cfg.update(own('seeds', 'jobs', 'design'), vary=vary, given=sorted(given),
                   variants=None if args['--variants'] == 'all' else args['--variants'].split(','))
    if args['bench']:
        cfg.update(own('bench_steps', 'warmup', 'repeats'), vary=vary, set_by=set_by,
                   scalar=not args['--no-scalar'], torch=args['--torch'], reference=args['--reference'])
    return cfg


# ---------------------------------------------------------------------------
# The commands: each hands its settings to the module that does the work.
COMMANDS = dict(
    train=lambda cfg, a: training.train_command(cfg, a['--from'] or a['--resume'], bool(a['--resume'])),
    sample=lambda cfg, a: sampling.sample_command(cfg),
    ablate=lambda cfg, a: ablation.ablate_command(cfg, a['--resume'], a['--cluster']),
    bench=lambda cfg, a: bench.bench_command(cfg),
    plot=lambda cfg, a: overlay.plot_command(cfg),
    attention=lambda cfg, a: attention_maps.attention_command(cfg),
    tokenizer=lambda cfg, a: tokens.tokenizer_command(cfg))


def main(argv=None):
    """Run the command in argv (default: sys.argv), as output.run runs every command: its exit status."""
    def work():
        args = parse_args(sys.argv[1:] if argv is None else argv)
        command = next(c for c in COMMANDS if args[c])
        return command, COMMANDS[command](parse_config(args), args) or 0
    return output.run(work)


if __name__ == '__main__':
    sys.exit(stopping.as_process(main))
