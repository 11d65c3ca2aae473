"""cli.py: the usage string is the manual, every option is converted and checked in one
place, and every mistake a user can make is one line on stderr, exit 1, nothing written."""
import ast
import re
import signal

import pytest

import cli
from microgpt_lab import UserError, grid, settings, stopping
from conftest import ROOT, main_output, one_line_error, run_cli


def test_help_documents_every_option_and_every_command():
    code, out, _ = run_cli('--help')
    assert code == 0 and out.strip() == cli.__doc__.strip()
    for command in cli.COMMANDS:
        assert f"cli.py {command}" in out
    options = set().union(*cli.SECTIONS.values())
    assert {'--data', '--no-fetch', '--seed', '--steps', '--n-embd', '--lr', '--tie-lm-head',
            '--checkpoint', '--prompt', '--seeds', '--jobs', '--torch', '--data-format', '--length',
            '--top-k', '--beta1', '--beta2', '--weight-decay', '--grad-clip', '--warmup-steps',
            '--lr-schedule', '--min-lr', '--init-std'} <= options
    # every setting a run records has its option (eps is the reference's, fixed)
    assert {settings.option(name) for name in settings.SETTINGS} - {''} <= options
    assert '[default: 1000]' in out and '[default: 0.5]' in out and 'names.txt' in out


def config(*argv):
    return cli.parse_config(cli.parse_args(list(argv)))


def test_options_become_typed_settings():
    cfg = config('train', '--steps', '7', '--lr', '0.02', '--mode', 'tensor', '--val-docs', 'auto',
                 '--no-input-rmsnorm', '--out', 'r')
    assert cfg['steps'] == 7 and cfg['lr'] == 0.02 and cfg['val_docs'] is None
    assert cfg['input_rmsnorm'] is False and cfg['tie_lm_head'] is False and cfg['out'] == 'r'
    assert cfg['data'] == str(ROOT / 'names.txt') and cfg['seed'] == 42
    scalar = config('train')
    assert (scalar['batch_size'], scalar['dtype']) == (1, 'float64')  # scalar mode's own
    assert config('train', '--batch-size', '1', '--dtype', 'float64')['batch_size'] == 1


def test_an_option_beside_a_recipe_wins_and_the_recipes_settings_that_need_it_step_back():
    cfg = config('train', '--mode', 'tensor', '--recipe', 'nanochat', '--position', 'learned')
    assert (cfg['position'], cfg['rope_base'], cfg['qk_scale'], cfg['optimizer']) == \
        ('learned', 10000.0, 1.2, 'muon')  # nanochat's rope base needs its rope
    with pytest.raises(UserError, match="--rope-base is rope's: it needs --position rope"):
        config('train', '--mode', 'tensor', '--recipe', 'nanochat', '--position', 'learned',
               '--rope-base', '500')  # both given: the user's own conflict


def test_recipe_none_is_the_documented_default():
    assert config('train', '--recipe', 'none') == config('train')
    assert config('train', '--recipe', 'none')['recipe'] is None


def test_an_option_scalar_mode_cannot_run_is_an_error_never_dropped():
    # scalar mode (the default) used to run batch 1 in float64 and say nothing
    with pytest.raises(UserError, match='--batch-size 64 needs --mode tensor'):
        config('train', '--batch-size', '64')
    with pytest.raises(UserError, match='--dtype float32 needs --mode tensor'):
        config('train', '--dtype', 'float32')
    with pytest.raises(UserError, match='--batch-size 16 needs --mode tensor'):  # in any cell
        config('ablate', '--mode', 'tensor', '--batch-size', '16', '--vary', 'mode=tensor,scalar',
               '--val-docs', '50')


def test_no_line_of_an_options_description_begins_with_a_dash():
    # docopt would read such a line as another option, and its neighbour's default is lost
    assert not [line for line in cli.__doc__.splitlines() if re.match(r' {4,}-', line)]


def test_option_values_may_begin_with_a_dash():
    assert config('train', '--out', '-x')['out'] == '-x'
    assert config('sample', '--checkpoint', 'c.json', '--prompt', '-a')['prompt'] == '-a'


@pytest.mark.parametrize('args, message', [
    (['train', '--steps', '-5'], '--steps must be >= 1'),
    (['train', '--steps', str(10 ** 400)], '--steps must be below 2**63'),
    (['train', '--n-embd', '10'], 'divisible by --n-head'),
    (['train', '--rope-base', '500'], "--rope-base is rope's: it needs --position rope"),
    (['train', '--softcap', '-1'], '--softcap must be >= 0'),
    (['train', '--qk-scale', '0'], '--qk-scale must be > 0'),
    (['train', '--n-kv-head', '3'], '--n-kv-head (3) must divide --n-head (4)'),
    (['train', '--recipe', 'llama'], '--recipe must be microgpt or gpt2 or nanochat'),
    (['train', '--mode', 'tensor', '--optimizer', 'muon', '--beta1', '0.9'],
     "--beta1 is adamw's: it needs --optimizer adamw; with --optimizer muon it changes nothing"),
    (['train', '--mode', 'tensor', '--recipe', 'nanochat', '--beta2', '0.9'],
     "with --recipe nanochat's --optimizer muon it changes nothing"),
    (['train', '--mode', 'tensor', '--muon-lr', '0.03'], "--muon-lr is muon's: it needs --optimizer muon"),
    (['train', '--init', 'nanochat', '--init-std', '0.02'], "--init-std is microgpt's: it needs --init microgpt"),
    (['train', '--recipe', 'auto'], "--recipe must be microgpt or gpt2 or nanochat or none, got 'auto'"),
    (['train', '--init', 'xavier'], '--init must be microgpt or gpt2 or nanochat'),
    (['train', '--norm-eps', '0'], '--norm-eps must be > 0'),
    (['ablate', '--design', 'spiral'], '--design must be product or alone or path'),
    (['train', '--temperature', '0'], '--temperature must be >= 0.001'),
    (['train', '--temperature', '1e-310'], '--temperature must be >= 0.001'),
    (['train', '--lr', 'nan'], '--lr must be a finite number'),
    (['train', '--val-fraction', '1'], '--val-fraction must be >= 0 and <= 0.99'),
    (['train', '--mode', 'gpu'], '--mode must be scalar or tensor'),
    (['train', '--lr', 'fast'], '--lr must be a number'),
    (['train', '--bogus'], 'unknown option --bogus'),
    (['train', '--steps', '5', '--steps', '6'], '--steps is given twice'),
    (['train', '--num', '5'], '--num is not an option of train'),
    (['sample', '--checkpoint', 'c.json', '--steps', '5'], '--steps is not an option of sample'),
    (['sample', '--checkpoint', 'c.json', '--batched'], '--batched needs --mode tensor'),
    (['sample', '--checkpoint', 'c.json', '--seed', ''], "--seed must be an integer, got ''"),
    (['ablate', '--from', 'r'], '--from is not an option of ablate'),
    (['ablate', '--tie-lm-head'], '--tie-lm-head is not an option of ablate'),
    (['train', '--from', 'r', '--steps', '5'], '--steps is not an option of train with --from'),
    (['train', '--steps', '5', '--resume', 'r'], '--steps is not an option of train with --resume'),
    (['train', '--from', 'r', '--resume', 'r'], '--resume is not an option of train with --from'),
    (['fly'], 'must be a command'),
    (['sample', '--checkpoint', 'c.json', '--num'], '--num requires argument'),
    (['train', '--from', 'nowhere'], 'nowhere/config.json not found'),
    (['train', '--resume', 'nowhere'], 'nowhere/config.json not found'),
    (['ablate', '--resume', 'nowhere'], 'nowhere/ablation.json not found'),
    (['sample'], 'sample needs --checkpoint'),
    (['attention', '--checkpoint', 'c.json'], 'attention needs --text'),
    (['plot'], 'plot needs the folders'),
    (['sample', '--checkpoint', 'nope.json'], 'nope.json not found'),
    (['train', '--data', 'nope.txt'], 'nope.txt not found'),
    (['train', '--data', 'input.txt', '--no-fetch'], 'input.txt not found (and --no-fetch is set)'),
    (['train', '--data', '.'], 'is a directory'),
    (['train', '--data', '/dev/zero'], 'is not a regular file'),
    (['train', '--n-embd', '65536', '--n-layer', '64', '--n-head', '1'], 'GiB of memory'),
    (['train', '--out', 'docs.txt'], 'is a file, not a folder'),
    (['bench', '--threads', '0'], '--threads must be >= 1'),
    (['train', '--threads', '999'], "--threads 999: this machine's BLAS runs at most"),  # it would
    (['ablate', '--threads', '999'], "--threads 999: this machine's BLAS runs at most"),  # run 64
])
def test_user_errors_are_one_line_and_exit_1(small, args, message):
    # (in this process: a real one's exit status and stderr, test_ctrl_c_after_the_command_...)
    if args[0] == 'train' and '--out' not in args:
        args = args + ['--out', 'record']
    code, out, err = main_output(cli.main, *args)
    assert code == 1 and message in err and one_line_error(err), err
    assert not (small / 'record').exists()


def test_a_run_started_from_another_folder_finds_the_shipped_data(tmp_path):
    code, out, err = run_cli('train', '--mode', 'tensor', '--steps', '3', '--samples', '1',
                             '--out', 'run', cwd=tmp_path)
    assert code == 0, err
    assert 'num docs: 32033 (28830 train, 3203 validation)' in out
    assert re.search(r'^sample  1: \w+$', out, re.M)


def test_the_package_installs_the_top_level_modules_and_the_lab_package_only():
    import configparser
    setup = configparser.ConfigParser()
    setup.read(ROOT / 'setup.cfg')
    listed = {m.strip() for m in setup['options']['py_modules'].split(',')}
    assert listed == {p.stem for p in ROOT.glob('*.py')} == {'microgpt', 'tensorgpt', 'data', 'bpe', 'cli'}
    assert setup['options']['packages'].split() == ['microgpt_lab']
    lab = {p.stem for p in (ROOT / 'microgpt_lab').glob('*.py')} - {'__init__'}
    tested = {p.stem[len('test_'):] for p in (ROOT / 'tests').glob('test_*.py')}
    assert lab | listed | {'docs'} == tested  # one test file per module, and the documents'


def run_with_a_ctrl_c(when, *argv):
    """cli.py run as a script, sent a SIGINT `when`: 'loading' (as numpy is imported) or
    'exiting' (at interpreter exit, after main has returned)."""
    import subprocess
    import sys
    script = f"""
import atexit, builtins, os, runpy, signal, sys
sys.path.insert(0, {str(ROOT)!r})
sys.argv = ['cli.py', *{list(argv)!r}]
ctrl_c = lambda: os.kill(os.getpid(), signal.SIGINT)
if {when!r} == 'loading':
    real = builtins.__import__
    builtins.__import__ = lambda name, *a, **k: (name == 'numpy' and ctrl_c()) or real(name, *a, **k)
else:
    atexit.register(ctrl_c)
runpy.run_path({str(ROOT / 'cli.py')!r}, run_name='__main__')
"""
    p = subprocess.run([sys.executable, '-c', script], capture_output=True, text=True, timeout=120)
    return p.returncode, p.stderr


def test_ctrl_c_while_the_modules_load_stops_at_once_without_a_traceback(tmp_path):
    code, err = run_with_a_ctrl_c('loading', 'train', '--out', str(tmp_path / 'run'))
    assert code == -2 and err == '' and not (tmp_path / 'run').exists()


def test_ctrl_c_after_the_command_has_finished_changes_nothing(tmp_path):
    code, err = run_with_a_ctrl_c('exiting', 'plot', str(tmp_path))
    assert code == 1 and one_line_error(err) and 'neither a run record' in err, err


def test_a_signal_that_a_library_wraps_in_its_own_error_still_ends_as_the_signal(monkeypatch):
    # numba, loading a kernel when SIGTERM came, raises its own error from ours
    def wrapped(cfg, args):
        try:
            raise stopping.Signalled(signal.SIGTERM)
        except stopping.Signalled as e:
            raise RuntimeError('error during unpickling') from e
    monkeypatch.setitem(cli.COMMANDS, 'plot', wrapped)
    code, out, err = main_output(cli.main, 'plot', 'x')
    assert code == 143 and err.strip() == 'SIGTERM'


def test_a_switch_takes_on_or_off():
    assert config('train', '--final-norm', 'on')['final_norm'] is True
    assert config('train', '--final-norm', 'off')['final_norm'] is False
    assert config('train')['final_norm'] is False
    with pytest.raises(UserError, match="--final-norm must be on or off, got 'yes'"):
        config('train', '--final-norm', 'yes')
    assert grid.axis('final-norm=on,off') == ('final_norm', [True, False])


# ---------------------------------------------------------------------------
# The layout: commands above libraries, no import circle (an import inside a function
# counts), and modules short enough to read in one sitting.
MODULES = {path.stem: path for path in ROOT.glob('*.py')} | {
    f"microgpt_lab.{path.stem}".removesuffix('.__init__'): path
    for path in (ROOT / 'microgpt_lab').glob('*.py')}  # 'microgpt_lab': the package's own


def imports(path):
    """The project's modules that the file at path imports, anywhere in it."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding='utf-8'))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path.name}: a relative import"
            found.add(node.module)  # and each name that is a module of it
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return found & set(MODULES)


def circle(graph):
    """An import circle in graph {module: modules it imports}, as [a, b, ..., a]; or None."""
    done, path = set(), []

    def visit(module):
        if module in path:
            return path[path.index(module):] + [module]
        if module in done:
            return None
        path.append(module)
        found = next(filter(None, map(visit, sorted(graph[module]))), None)
        path.pop()
        done.add(module)
        return found
    return next(filter(None, map(visit, sorted(graph))), None)


def test_the_imports_make_no_circle():
    graph = {module: imports(path) - {module} for module, path in MODULES.items()}
    assert circle(graph) is None, ' -> '.join(circle(graph))


def test_an_import_is_found_wherever_it_is_and_a_circle_wherever_it_closes(tmp_path):
    (tmp_path / 'm.py').write_text('import data\n\ndef f():\n    from microgpt_lab.grid import cells\n'
                                   '    from microgpt_lab import plots, UserError\n')
    assert imports(tmp_path / 'm.py') == {'data', 'microgpt_lab', 'microgpt_lab.grid', 'microgpt_lab.plots'}
    assert circle({'a': {'b'}, 'b': {'c'}, 'c': {'a'}}) == ['a', 'b', 'c', 'a']
    assert circle({'a': {'b', 'c'}, 'b': {'c'}, 'c': set()}) is None


def test_the_plot_command_is_above_the_drawing():
    assert imports(MODULES['microgpt_lab.plots']) <= {'microgpt_lab'}  # UserError, nothing else of ours


def test_no_lab_module_is_over_450_lines_and_cli_over_300():
    lines = {module: len(path.read_text(encoding='utf-8').splitlines()) for module, path in MODULES.items()}
    assert {m: n for m, n in lines.items() if m.startswith('microgpt_lab') and n > 450} == {}
    assert lines['cli'] <= 300, lines['cli']
